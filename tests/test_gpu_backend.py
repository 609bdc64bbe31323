"""The GPU backend equals the NumPy backend op by op, trains like it, and is chosen sensibly.

Runs on ``cupy`` where a GPU answers, else on ``cupy-sim`` (see the root conftest).
"""

import os
import subprocess
import sys
import time
import types

import numpy as np
import pytest

import fastbp
from fastbp import backend as registry
from fastbp.data import load
from fastbp.kernels import codes, reference

pytestmark = pytest.mark.gpu

TOL = {np.float64: 1e-12, np.float32: 1e-5}
DTYPES = [np.float64, np.float32]
ELEMENTWISE = [codes.IDENTITY, codes.SIGMOID, codes.TANH, codes.RELU, codes.LEAKY_RELU,
               codes.ELU]


def assert_close(actual, expected, dtype):
    tol = TOL[dtype]
    np.testing.assert_allclose(actual, expected, rtol=tol,
                               atol=tol * max(1.0, float(np.abs(expected).max(initial=0))))


def normal(shape, dtype, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def on_both(gpu_backend, op, *arrays):
    """Run ``op(backend, *device copies of arrays)`` on NumPy and on the GPU backend.

    Returns ``[(host copies of the arrays after the op, op's value), ...]`` for each.
    """
    results = []
    for backend in (fastbp.get_backend("numpy"), gpu_backend):
        device = [backend.asarray(a.copy()) for a in arrays]
        value = op(backend, *device)
        results.append(([backend.to_numpy(d).copy() for d in device], value))
    return results


def assert_same_effect(gpu_backend, dtype, op, *arrays):
    """``op`` leaves the same arrays on both backends; returns both values of ``op``."""
    (expected, value_np), (actual, value_gpu) = on_both(gpu_backend, op, *arrays)
    for got, want in zip(actual, expected):
        assert_close(got, want, dtype)
    return value_np, value_gpu


# -- the core -----------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("act", sorted(codes.ACTIVATION_CODES.values()))
def test_linear_forward(gpu_backend, dtype, act):
    assert_same_effect(
        gpu_backend, dtype,
        lambda be, x, W, b, z, a: be.linear_forward(x, W, b, act, 0.1, z, a),
        normal((7, 4), dtype), normal((4, 5), dtype, 1), normal(5, dtype, 2),
        np.zeros((7, 5), dtype), np.zeros((7, 5), dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("act", ELEMENTWISE)
@pytest.mark.parametrize("with_mask", [False, True])
def test_backprop_delta(gpu_backend, dtype, act, with_mask):
    z = normal((7, 4), dtype, 2)
    mask = (normal((7, 4), dtype, 4) > 0).astype(dtype) * dtype(2)
    assert_same_effect(
        gpu_backend, dtype,
        lambda be, delta_next, W_next, z, a, mask, out: be.backprop_delta(
            delta_next, W_next, z, a, act, 0.1, out, mask if with_mask else None),
        normal((7, 3), dtype), normal((4, 3), dtype, 1), z,
        reference.activate(z, act, 0.1, np.empty_like(z)), mask, np.zeros((7, 4), dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("lam", [0.0, 0.3])
def test_weight_grads(gpu_backend, dtype, lam):
    assert_same_effect(
        gpu_backend, dtype,
        lambda be, a_prev, delta, W, dW, db: be.weight_grads(a_prev, delta, W, lam, dW, db),
        normal((7, 4), dtype), normal((7, 3), dtype, 1), normal((4, 3), dtype, 2),
        np.zeros((4, 3), dtype), np.zeros(3, dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("act,loss",
                         sorted(codes.MATCHED_PAIRS) + [(codes.IDENTITY, codes.HINGE)])
def test_output_delta_loss_accumulates_and_loss_sum(gpu_backend, dtype, act, loss):
    z = normal((5, 4), dtype)
    y = np.eye(4, dtype=dtype)[[0, 3, 1, 1, 2]]

    def op(be, z, a, y, delta, acc):
        be.output_delta_loss(z, a, y, loss, act, 0.0, 0.2, delta, acc)
        be.output_delta_loss(z, a, y, loss, act, 0.0, 0.2, delta, acc)  # adds again
        return be.scalar(be.loss_sum(z, a, y, loss))

    value_np, value_gpu = assert_same_effect(
        gpu_backend, dtype, op, z, reference.activate(z, act, 0.0, np.empty_like(z)), y,
        np.zeros((5, 4), dtype), np.array([1.0], dtype))
    assert_close(value_gpu, value_np, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_optimizer_updates(gpu_backend, dtype):
    def op(be, p, g, v, m, w):
        be.sgd_update(p, g, 0.1)
        be.momentum_update(p, g, v, 0.1, 0.9)
        be.adam_update(p, g, m, w, 0.01, 0.9, 0.999, 1e-8, 1)
        be.adam_update(p, g, m, w, 0.01, 0.9, 0.999, 1e-8, 2)

    assert_same_effect(gpu_backend, dtype, op, *(normal(41, dtype, s) for s in range(3)),
                       np.zeros(41, dtype), np.zeros(41, dtype))


# -- plumbing -----------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
def test_plumbing(gpu_backend, dtype):
    x = normal((6, 3), dtype)

    def op(be, x, out, rows):
        be.matmul(x.T, x, out)  # a transposed operand: cuBLAS reads it as is
        be.take_rows(x, be.asindex([5, 0, 2, 2]), rows)
        be.copy(rows[:3], x[:3])
        return (be.scalar(be.sum_squares(x)), be.all_finite(x),
                be.to_numpy(be.zeros((2, 3), dtype)).tolist(), be.empty((4,), dtype).shape)

    value_np, value_gpu = assert_same_effect(gpu_backend, dtype, op, x,
                                             np.zeros((3, 3), dtype), np.zeros((4, 3), dtype))
    assert_close(value_gpu[0], value_np[0], dtype)
    assert value_gpu[1:] == value_np[1:]
    assert gpu_backend.asarray(x.T).flags.c_contiguous
    assert gpu_backend.asarray([1, 2], np.float32).dtype == np.float32
    assert not gpu_backend.all_finite(gpu_backend.asarray(np.array([1.0, np.nan])))


@pytest.mark.parametrize("dtype", DTYPES)
def test_dropout_masks_follow_the_model_seed(gpu_backend, dtype):
    def mask(seed, shape=(64, 50)):
        out = gpu_backend.zeros(shape, dtype)
        gpu_backend.dropout_mask(np.random.default_rng(seed), 0.25, out)
        return gpu_backend.to_numpy(out)

    first = mask(7)
    np.testing.assert_array_equal(first, mask(7))
    assert not np.array_equal(first, mask(8))
    assert set(np.unique(first)) == {0, dtype(1 / 0.75)}
    assert abs((first > 0).mean() - 0.75) < 0.03


def test_out_of_memory_names_the_shape_and_bytes(gpu_backend):
    with pytest.raises(MemoryError, match=r"shape \(4096, 1099511627776\).*batch size"):
        gpu_backend.empty((4096, 2**40), np.float32)


def test_step_runners_share_one_clock(gpu_backend):
    """Two runners (a full and a last partial batch, say) count the steps of one clock."""
    calls = []
    clock = gpu_backend.step_clock()
    full = gpu_backend.step_runner(lambda: calls.append("full"), clock)
    last = gpu_backend.step_runner(lambda: calls.append("last"), clock)
    for _ in range(3):
        full()
        full()
        last()
    assert clock.host == 9
    assert gpu_backend.to_numpy(clock.counter).tolist() == [9]
    if gpu_backend.name == "cupy-sim":
        assert calls == ["full", "full", "last"] * 3
    else:  # eager, then captured (the Python body runs to record it), then replayed
        assert calls == ["full", "full", "last", "last"]


def test_adam_through_a_step_runner_counts_t_like_the_host(gpu_backend):
    """The step reads the host's ``t`` (1, 2, 3, 4), which a replay has frozen: the clock
    must make up for it."""
    p, g = normal(23, np.float64), normal(23, np.float64, 1)
    m, v = np.zeros(23), np.zeros(23)
    p_dev, g_dev, m_dev, v_dev = (gpu_backend.asarray(x.copy()) for x in (p, g, m, v))
    t = [0]
    run = gpu_backend.step_runner(
        lambda: gpu_backend.adam_update(p_dev, g_dev, m_dev, v_dev, 0.01, 0.9, 0.999, 1e-8, t[0]),
        gpu_backend.step_clock())
    for _ in range(4):
        t[0] += 1
        run()
        reference.adam_update(p, g, m, v, 0.01, 0.9, 0.999, 1e-8, t[0])
    assert_close(gpu_backend.to_numpy(p_dev), p, np.float64)


def test_describe_says_what_runs(gpu_backend):
    info = gpu_backend.describe()
    assert info["kernels"] == "fastbp.kernels.gpu"
    assert ("simulator" in info) == (gpu_backend.name == "cupy-sim")


# -- choosing the backend -----------------------------------------------------------------------

def test_auto_never_picks_the_simulator():
    assert registry.resolve("auto")[0] != "cupy-sim"


def test_without_a_gpu_auto_picks_the_cpu_and_says_why():
    pytest.importorskip("cupy")
    usable, reason = registry.probe("cupy")
    if usable:
        pytest.skip(f"a GPU answers here: {reason}")
    assert "no CUDA GPU answers" in reason
    name, why = registry.resolve("auto")
    assert name in ("numba", "numpy")
    assert reason in why


def test_the_cupy_probe_is_fast_and_never_raises():
    from fastbp.backends.cupy_backend import probe

    start = time.perf_counter()
    usable, reason = probe()
    assert isinstance(usable, bool) and reason
    if not usable:
        assert time.perf_counter() - start < 2.0


def test_without_the_flag_the_simulator_says_how_to_enable_it():
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    code = ("import fastbp\n"
            "try:\n    fastbp.get_backend('cupy-sim')\n"
            "except RuntimeError as exc:\n    print(exc)\n")
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, timeout=120)
    assert "NUMBA_ENABLE_CUDASIM=1" in done.stdout, done.stdout + done.stderr


# -- training through fit -----------------------------------------------------------------------

@pytest.mark.parametrize("activation,optimizer", [("tanh", "momentum"), ("relu", "adam")])
def test_trains_to_the_same_weights_as_numpy(gpu_backend, activation, optimizer):
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(40, 5)), rng.integers(0, 3, 40)
    runs = []
    for backend in ("numpy", gpu_backend):
        net = fastbp.MLP([5, 7, 6, 3], activation=activation, backend=backend,
                         dtype="float64", seed=0)
        history = net.fit(X, y, epochs=4, batch_size=16, lr=0.05, optimizer=optimizer,
                          momentum=0.9, weight_decay=0.01, shuffle=True, verbose=0)
        runs.append((net.get_weights(), history.train_loss))
    (weights_np, loss_np), (weights_gpu, loss_gpu) = runs
    np.testing.assert_allclose(loss_gpu, loss_np, rtol=1e-9)
    for (W_gpu, b_gpu), (W_np, b_np) in zip(weights_gpu, weights_np):
        np.testing.assert_allclose(W_gpu, W_np, rtol=1e-9, atol=1e-9 * np.abs(W_np).max())
        np.testing.assert_allclose(b_gpu, b_np, rtol=1e-9, atol=1e-9 * np.abs(W_np).max())


def test_learns_xor(gpu_backend):
    xor = load("xor")
    net = fastbp.MLP([2, 8, 1], activation="tanh", output="sigmoid",
                     loss="binary_cross_entropy", init="xavier", backend=gpu_backend,
                     dtype="float64", seed=0)
    net.fit(xor.X, xor.y, epochs=60, batch_size=4, lr=0.5, optimizer="momentum", verbose=0)
    assert net.score(xor.X, xor.y) == 1.0


@pytest.mark.parametrize("precision", ["highest", "bf16"])
def test_learns_a_digits_subset(gpu_backend, precision):
    """bf16 GEMM operands, float32 accumulation and master weights, learn as well."""
    pytest.importorskip("sklearn")
    digits = load("digits")
    order = np.random.default_rng(0).permutation(len(digits.y))
    train, test = order[:300], order[300:600]
    net = fastbp.MLP([64, 16, 10], activation="relu", backend=gpu_backend, seed=0,
                     standardize=True)
    net.fit(digits.X[train], digits.y[train], epochs=10, batch_size=50, lr=0.01,
            optimizer="adam", verbose=0, precision=precision)
    assert gpu_backend.precision == "highest"  # restored after the fit
    assert net.params.dtype == np.float32
    assert net.score(digits.X[test], digits.y[test]) > 0.85


# -- precisions, input noise, uploads -------------------------------------------------------------

def test_bf16_gemm_rounds_both_operands_and_accumulates_in_float32(gpu_backend):
    from test_gpu_kernels import bf16_reference

    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((6, 5)).astype(np.float32), rng.standard_normal((4, 5))
    b = b.astype(np.float32)
    widen = lambda x: (bf16_reference(x).astype(np.uint32) << 16).view(np.float32)  # noqa: E731
    out = gpu_backend.empty((6, 4), np.float32)
    gpu_backend.set_precision("bf16")
    try:
        gpu_backend.matmul(gpu_backend.asarray(a), gpu_backend.asarray(b).T, out)
    finally:
        gpu_backend.set_precision("highest")
    expected = widen(a) @ widen(b).T
    np.testing.assert_allclose(gpu_backend.to_numpy(out), expected, rtol=1e-6, atol=1e-6)
    assert np.abs(expected - a @ b.T).max() > 1e-4  # the rounding is visible


def test_input_noise_is_drawn_on_the_device_from_the_model_seed(gpu_backend, monkeypatch):
    draws = []
    device_noise = gpu_backend.kernels.gaussian_noise
    monkeypatch.setattr(gpu_backend.kernels, "gaussian_noise",
                        lambda *args: draws.append(args[0]) or device_noise(*args))
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(24, 3)), rng.integers(0, 2, 24)
    weights = []
    for _ in range(2):
        net = fastbp.MLP([3, 4, 2], backend=gpu_backend, dtype="float64", seed=1)
        net.fit(X, y, epochs=2, batch_size=8, input_noise=0.3, verbose=0)
        weights.append(net.get_flat_params())
    np.testing.assert_array_equal(weights[0], weights[1])
    assert len(draws) == 12 and len(set(draws)) == 6  # a fresh key per batch, same per seed


def test_upload_rows_copies_host_rows_into_the_buffer(gpu_backend):
    host = np.arange(12, dtype=np.float64).reshape(6, 2)
    out = gpu_backend.zeros((3, 2), np.float32)
    for rows in (np.array([5, 0, 2]), slice(1, 4)):
        gpu_backend.upload_rows(host, rows, out)
        np.testing.assert_array_equal(gpu_backend.to_numpy(out), host[rows])


def test_describe_reports_the_effective_gemm(gpu_backend):
    info = gpu_backend.describe()
    assert info["precision"] == "highest"
    assert "CUBLAS_COMPUTE_32F," in info["float32 gemm"]


@pytest.mark.parametrize("runtime_version, extra", [
    (12080, "fastbp[gpu]"), (13000, "fastbp[gpu-cuda13]"), (None, "fastbp[gpu]")])
def test_a_failed_kernel_names_the_extra_for_cupys_cuda(runtime_version, extra):
    """On the H200 (CuPy for CUDA 13) the hint named the CUDA 12 wheels; now it follows CuPy."""
    from fastbp.backends.cupy_backend import _gpu_install_hint

    def version():
        if runtime_version is None:
            raise RuntimeError("no CUDA runtime")
        return runtime_version

    fake = types.SimpleNamespace(cuda=types.SimpleNamespace(
        runtime=types.SimpleNamespace(runtimeGetVersion=version)))
    assert f"pip install '{extra}'" in _gpu_install_hint(fake)
