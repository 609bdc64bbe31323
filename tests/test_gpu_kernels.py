"""Every GPU kernel (kernels/gpu.py) equals the NumPy reference (kernels/reference.py).

Runs on ``cupy`` where a GPU answers and on ``cupy-sim`` (Numba's CUDA simulator, a Python
thread per CUDA thread) everywhere else: small odd shapes, every activation, every valid
(output, loss) pair, float64 to 1e-12 and float32 to 1e-5 relative. Row and column kernels also
run with other launch geometries (the simulator's one thread per row, 4-thread rows, and the
GPU's warp per row and 32 x 8 tiles): the result must not depend on them.
"""

import math

import numpy as np
import pytest

from fastbp.backends.cuda_ops import Geometry
from fastbp.backends.graphs import StepClock
from fastbp.kernels import codes, gpu
from fastbp.kernels import reference as ref
from fastbp.losses import LOSSES

pytestmark = pytest.mark.gpu

TOL = {np.float64: 1e-12, np.float32: 1e-5}
DTYPES = [np.float64, np.float32]
SHAPES = [(3, 5), (7, 4)]
ELEMENTWISE = [codes.IDENTITY, codes.SIGMOID, codes.TANH, codes.RELU, codes.LEAKY_RELU,
               codes.ELU]
ALPHA = 0.1  # the leaky-ReLU slope and the ELU scale
VALID_PAIRS = [(codes.ACTIVATION_CODES[out], spec.code)
               for spec in LOSSES.values() for out in spec.outputs]
GEOMETRIES = {
    "rows-of-4": Geometry(threads=4, blocks=3, row_threads=4, tile=(4, 2)),
    "gpu-shaped": Geometry(threads=32, blocks=2, row_threads=32, tile=(32, 8)),
}


def assert_close(actual, expected, dtype):
    """Equal to ``TOL[dtype]`` relative to the largest expected magnitude (at least 1)."""
    tol = TOL[dtype]
    expected = np.asarray(expected)
    np.testing.assert_allclose(actual, expected, rtol=tol,
                               atol=tol * max(1.0, float(np.abs(expected).max(initial=0))))


def normal(shape, dtype, seed=0, scale=2.0):
    return (scale * np.random.default_rng(seed).standard_normal(shape)).astype(dtype)


def targets(loss, shape, dtype, seed=1):
    """One-hot rows for the classifiers, 0/1 for binary cross-entropy, reals for mse."""
    rng = np.random.default_rng(seed)
    if loss in (codes.CROSS_ENTROPY, codes.HINGE):
        return np.eye(shape[1], dtype=dtype)[rng.integers(0, shape[1], shape[0])]
    if loss == codes.BINARY_CROSS_ENTROPY:
        return rng.integers(0, 2, shape).astype(dtype)
    return rng.standard_normal(shape).astype(dtype)


@pytest.fixture(params=["default", *GEOMETRIES])
def any_geometry(request, gpu_backend):
    """A fresh GPU backend with each launch geometry in turn."""
    backend = type(gpu_backend)()
    if request.param != "default":
        backend.kernels.geometry = GEOMETRIES[request.param]
    return backend


class Device:
    """Copy host arrays to the backend and back (the simulator's asarray does not copy)."""

    def __init__(self, backend):
        self.backend = backend

    def __call__(self, *arrays):
        return [self.backend.asarray(x.copy()) for x in arrays]

    def host(self, x):
        return self.backend.to_numpy(x)


# -- forward and backward passes --------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("act", sorted(codes.ACTIVATION_CODES.values()))
def test_bias_act_forward(gpu_backend, dtype, shape, act):
    z, b = normal(shape, dtype), normal(shape[1], dtype, seed=3)
    dev = Device(gpu_backend)
    z_dev, b_dev, a_dev = dev(z, b, np.zeros_like(z))
    gpu_backend.kernels.bias_act_forward(z_dev, b_dev, act, ALPHA, a_dev)
    a = ref.bias_act_forward(z, b, act, ALPHA, np.empty_like(z))
    assert_close(dev.host(z_dev), z, dtype)
    assert_close(dev.host(a_dev), a, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_forward_in_every_geometry(any_geometry, dtype):
    z, b = normal((7, 9), dtype), normal(9, dtype, seed=3)
    dev = Device(any_geometry)
    z_dev, b_dev, a_dev = dev(z, b, np.zeros_like(z))
    any_geometry.kernels.bias_act_forward(z_dev, b_dev, codes.SOFTMAX, 0.0, a_dev)
    assert_close(dev.host(a_dev), ref.bias_act_forward(z, b, codes.SOFTMAX, 0.0,
                                                       np.empty_like(z)), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("act", ELEMENTWISE)
@pytest.mark.parametrize("with_mask", [False, True])
def test_act_backward(gpu_backend, dtype, shape, act, with_mask):
    z, delta = normal(shape, dtype), normal(shape, dtype, seed=2)
    a = ref.activate(z, act, ALPHA, np.empty_like(z))
    mask = (normal(shape, dtype, seed=4) > 0).astype(dtype) / dtype(0.75) if with_mask else None
    dev = Device(gpu_backend)
    delta_dev, z_dev, a_dev = dev(delta, z, a)
    mask_dev = dev(mask)[0] if with_mask else None
    gpu_backend.kernels.act_backward(delta_dev, z_dev, a_dev, act, ALPHA, mask_dev)
    assert_close(dev.host(delta_dev), ref.act_backward(delta, z, a, act, ALPHA, mask), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("act,loss", VALID_PAIRS)
def test_output_delta_and_loss(gpu_backend, dtype, shape, act, loss):
    check_output_delta_and_loss(gpu_backend, dtype, shape, act, loss)


@pytest.mark.parametrize("act,loss", VALID_PAIRS)
def test_output_delta_and_loss_in_every_geometry(any_geometry, act, loss):
    check_output_delta_and_loss(any_geometry, np.float64, (5, 9), act, loss)


def check_output_delta_and_loss(backend, dtype, shape, act, loss):
    """``delta = scale dL/dz`` and the loss sum ADDED to ``loss_acc`` (which starts at 0.5)."""
    z = normal(shape, dtype)
    a = ref.activate(z, act, ALPHA, np.empty_like(z))
    y = targets(loss, shape, dtype)
    scale = 1.0 / shape[0]
    dev = Device(backend)
    z_dev, a_dev, y_dev, delta_dev = dev(z, a, y, np.zeros_like(z))
    acc_dev = dev(np.array([0.5], dtype))[0]
    backend.kernels.output_delta_loss(z_dev, a_dev, y_dev, loss, act, ALPHA, scale, delta_dev,
                                      acc_dev)
    assert_close(dev.host(delta_dev),
                 ref.output_delta(z, a, y, loss, act, ALPHA, scale, np.empty_like(z)), dtype)
    assert_close(dev.host(acc_dev), [0.5 + ref.loss_sum(z, a, y, loss)], dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("act,loss", VALID_PAIRS)
def test_loss_sum(any_geometry, dtype, act, loss):
    z = normal((7, 4), dtype)
    a = ref.activate(z, act, ALPHA, np.empty_like(z))
    y = targets(loss, z.shape, dtype)
    dev = Device(any_geometry)
    z_dev, a_dev, y_dev, acc_dev = dev(z, a, y, np.zeros(1, dtype))
    any_geometry.kernels.loss_sum(z_dev, a_dev, y_dev, loss, acc_dev)
    assert_close(dev.host(acc_dev), [ref.loss_sum(z, a, y, loss)], dtype)


def test_an_output_pair_without_a_delta_is_refused(gpu_backend):
    z = gpu_backend.asarray(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="no output delta"):
        gpu_backend.kernels.output_delta_loss(z, z, z, codes.CROSS_ENTROPY, codes.SIGMOID, 0.0,
                                              1.0, z, gpu_backend.zeros((1,), np.float64))


# -- gradients and updates ----------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [*SHAPES, (5, 9), (1, 3), (70, 3)])
def test_bias_grad_column_sums(any_geometry, dtype, shape):
    """(70, 3) is summed in row chunks, then the chunks' partial sums (two passes)."""
    delta = normal(shape, dtype)
    dev = Device(any_geometry)
    delta_dev, db_dev = dev(delta, np.zeros(shape[1], dtype))
    any_geometry.kernels.bias_grad(delta_dev, db_dev)
    assert_close(dev.host(db_dev), ref.bias_grad(delta, np.empty(shape[1], dtype)), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_add_weight_decay(gpu_backend, dtype, shape):
    dW, W = normal(shape, dtype), normal(shape, dtype, seed=5)
    dev = Device(gpu_backend)
    dW_dev, W_dev = dev(dW, W)
    gpu_backend.kernels.add_weight_decay(dW_dev, W_dev, 0.3)
    assert_close(dev.host(dW_dev), ref.add_weight_decay(dW, W, 0.3), dtype)


def flat_state(dtype, n=37):
    """``p, g, v, w``: a parameter vector, its gradient, and two state vectors (``w > 0``)."""
    return (normal(n, dtype, seed=6), normal(n, dtype, seed=7), normal(n, dtype, seed=8),
            np.abs(normal(n, dtype, seed=9)))


UPDATES = {
    "sgd": (lambda k, p, g, v, w: k.sgd_update(p, g, 0.1), lambda p, g, v, w: (p,)),
    "momentum": (lambda k, p, g, v, w: k.momentum_update(p, g, v, 0.1, 0.9),
                 lambda p, g, v, w: (p, v)),
    "adam": (lambda k, p, g, v, w: k.adam_update(p, g, v, w, 0.01, 0.9, 0.999, 1e-8, 3),
             lambda p, g, v, w: (p, v, w)),
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", UPDATES)
def test_optimizer_updates(gpu_backend, dtype, name):
    run, results = UPDATES[name]
    host = flat_state(dtype)
    dev = Device(gpu_backend)
    device = dev(*host)
    run(gpu_backend.kernels, *device)
    run(ref, *host)
    for actual, expected in zip(results(*device), results(*host)):
        assert_close(dev.host(actual), expected, dtype)


def clock_at(backend, counter, host):
    """A step clock whose device counter reads ``counter`` and host mirror ``host``."""
    clock = StepClock(backend.asarray(np.array([counter], np.int64)))
    clock.host = host
    return clock


@pytest.mark.parametrize("dtype", DTYPES)
def test_adam_counts_on_with_the_clock(gpu_backend, dtype):
    """A graph captured at t = 3 with the clock at 10, replayed 2 steps later: t = 5."""
    backend = type(gpu_backend)()
    backend.kernels.clock = clock_at(backend, counter=12, host=10)
    p, g, m, v = flat_state(dtype)
    dev = Device(backend)
    p_dev, g_dev, m_dev, v_dev = dev(p, g, m, v)
    backend.kernels.adam_update(p_dev, g_dev, m_dev, v_dev, 0.01, 0.9, 0.999, 1e-8, 3)
    ref.adam_update(p, g, m, v, 0.01, 0.9, 0.999, 1e-8, 5)
    assert_close(dev.host(p_dev), p, dtype)


# -- batches and dropout ------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(7, 4), (7,)])
def test_take_rows(gpu_backend, dtype, shape):
    x = normal(shape, dtype)
    index = np.array([6, 0, 0, 3, 5])
    dev = Device(gpu_backend)
    x_dev, out_dev = dev(x, np.zeros((5, *shape[1:]), dtype))
    gpu_backend.kernels.take_rows(x_dev, gpu_backend.asindex(index), out_dev)
    np.testing.assert_array_equal(dev.host(out_dev), x[index])


M32 = np.uint64(0xFFFFFFFF)
PHILOX_KNOWN_ANSWERS = [  # Random123 tests/kat_vectors, philox4x32 10: counter, key, output[0]
    ((0, 0, 0, 0), (0, 0), 0x6627E8D5),
    ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, 0x408F276D),
    ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0), 0xD16CFE09),
]


def philox_first_words(i, step, key0, key1):
    """NumPy Philox4x32-10, first output word, for counters ``(i, step)`` (uint64 arrays)."""
    s32 = np.uint64(32)
    c0, c1, c2, c3 = i & M32, i >> s32, step & M32, step >> s32
    k0, k1 = np.uint64(key0), np.uint64(key1)
    for _ in range(10):
        p0, p1 = np.uint64(0xD2511F53) * c0, np.uint64(0xCD9E8D57) * c2
        c0, c1, c2, c3 = (p1 >> s32) ^ c1 ^ k0, p1 & M32, (p0 >> s32) ^ c3 ^ k1, p0 & M32
        k0, k1 = (k0 + np.uint64(0x9E3779B9)) & M32, (k1 + np.uint64(0xBB67AE85)) & M32
    return c0


def words(counter):
    """``(i, step)`` as uint64 from four 32-bit counter words."""
    c0, c1, c2, c3 = (np.uint64(c) for c in counter)
    return (c1 << np.uint64(32)) | c0, (c3 << np.uint64(32)) | c2


@pytest.mark.parametrize("counter,key,expected", PHILOX_KNOWN_ANSWERS)
def test_philox_known_answers(counter, key, expected):
    i, step = words(counter)
    key = tuple(np.uint64(k) for k in key)
    assert int(gpu.philox_word.py_func(i, step, *key)) == expected
    assert int(philox_first_words(np.array([i]), np.array([step]), *key)[0]) == expected


def expected_mask(shape, dtype, seed, step, p):
    """The mask that ``dropout_mask`` must produce, from the NumPy Philox."""
    i = np.arange(math.prod(shape), dtype=np.uint64)
    w = philox_first_words(i, np.full_like(i, step), seed & 0xFFFFFFFF, seed >> 32)
    keep = w >= np.uint64(math.ceil(p * 2.0**32))
    return np.where(keep, dtype(1.0 / (1.0 - p)), dtype(0)).reshape(shape)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("step", [0, 5])
def test_dropout_mask_is_the_philox_stream(any_geometry, dtype, step):
    seed, p = 0x0123456789ABCDEF, 0.3
    any_geometry.kernels.clock = clock_at(any_geometry, counter=step, host=0)
    out = any_geometry.zeros((7, 5), dtype)
    any_geometry.kernels.dropout_mask(seed, p, out)
    np.testing.assert_array_equal(any_geometry.to_numpy(out),
                                  expected_mask((7, 5), dtype, seed, step, p))


def test_dropout_keeps_one_minus_p_of_the_units_independently():
    mask = expected_mask((400, 500), np.float64, seed=12345, step=0, p=0.3)
    kept = mask > 0
    assert abs(kept.mean() - 0.7) < 0.005
    assert abs(kept[:, :250].mean() - kept[:, 250:].mean()) < 0.01  # no drift along the index
    assert set(np.unique(mask)) == {0.0, 1 / 0.7}


def test_dropout_probability_outside_0_1_is_refused(gpu_backend):
    with pytest.raises(ValueError, match="dropout probability"):
        gpu_backend.kernels.dropout_mask(1, 1.0, gpu_backend.zeros((2, 2), np.float32))


@pytest.mark.parametrize("dtype", DTYPES)
def test_take_rows_out_of_range_gives_nan_rows_not_a_stray_read(gpu_backend, dtype):
    x = normal((4, 3), dtype)
    out = gpu_backend.zeros((3, 3), dtype)
    index = np.array([1, 4, -1])
    gpu_backend.kernels.take_rows(gpu_backend.asarray(x), gpu_backend.asindex(index), out)
    got = gpu_backend.to_numpy(out)
    np.testing.assert_array_equal(got[0], x[1])
    assert np.isnan(got[1:]).all()


def test_take_rows_checks_a_host_index(gpu_backend):
    x = gpu_backend.asarray(np.zeros((4, 2)))
    with pytest.raises(IndexError, match=r"\[0, 4\), got values from 0 to 4"):
        gpu_backend.take_rows(x, np.array([0, 4]), gpu_backend.zeros((2, 2), np.float64))


def bf16_reference(x):
    """Round-to-nearest-even float32 -> bfloat16 bits in NumPy (NaN -> a quiet NaN)."""
    u = x.astype(np.float32).view(np.uint32).astype(np.uint64)
    rounded = ((u + ((u >> 16) & 1) + 0x7FFF) >> 16).astype(np.uint16)
    nan = np.isnan(x)
    rounded[nan] = ((u[nan] >> 16) | 0x40).astype(np.uint16)
    return rounded


@pytest.mark.parametrize("transposed", [False, True])
def test_to_bf16_rounds_to_nearest_even(gpu_backend, transposed):
    values = np.array([1.0, 1 + 2**-8, 1 + 3 * 2**-9, -2.5, 3.4e38, np.inf, -np.inf, np.nan,
                       1e-40, 0.0, -0.0, 65504.0], np.float32)
    x = np.concatenate([values, normal(12, np.float32)]).reshape(4, 6)
    x_dev = gpu_backend.asarray(x.T.copy()).T if transposed else gpu_backend.asarray(x)
    got = gpu_backend.to_numpy(gpu_backend.kernels.to_bf16(x_dev, 0))
    np.testing.assert_array_equal(got, bf16_reference(x))


@pytest.mark.parametrize("dtype", DTYPES)
def test_gaussian_noise_is_standard_normal_and_follows_the_seed(gpu_backend, dtype):
    x = np.full((50, 40), 3.0, dtype)

    def noisy(seed):
        out = gpu_backend.zeros(x.shape, dtype)
        gpu_backend.kernels.gaussian_noise(seed, gpu_backend.asarray(x), 0.5, out)
        return (gpu_backend.to_numpy(out) - 3.0) / 0.5

    e = noisy(11)
    np.testing.assert_array_equal(e, noisy(11))
    assert not np.array_equal(e, noisy(12))
    assert abs(e.mean()) < 0.1 and abs(e.std() - 1) < 0.05
    assert abs((np.abs(e) < 1).mean() - 0.6827) < 0.03  # the normal's one-sigma mass


@pytest.mark.parametrize("message, quiet", [
    ("\x1b[1mGrid size 1 will likely result in GPU under-utilization due to low occupancy."
     "\x1b[0m", True),  # as numba-cuda 0.30 words it on a terminal (seen on an H200)
    ("Grid size 76 will likely result in GPU under-utilization due to low occupancy.", True),
    ("Host array used in CUDA kernel will incur copy overhead to/from device.", False),
])
def test_only_the_small_grid_warning_is_silenced(message, quiet):
    """Small grids are deliberate (a 10-class output layer is one block): numba-cuda's warning at
    each of them would bury a user's training log, and any other warning must still show."""
    import warnings

    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        gpu.quiet_small_grid_warnings()
        warnings.warn(message, RuntimeWarning)
    assert [str(w.message) for w in seen] == ([] if quiet else [message])
