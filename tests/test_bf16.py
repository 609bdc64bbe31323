"""precision="bf16" on the CPU backends: the rounding, the fused bf16 copies, real training.

bf16 keeps 8 significant bits: rounding to nearest changes a float32 by at most 2^-9 of its
value. A GEMM on rounded inputs is then off by about 2^-9 * sqrt(k) * typical |a_ik b_kj|
(random-sign errors over k terms), so the curves of a bf16 and a float32 run from the same seed
differ by the noise of such a perturbation, not by a bias: the tolerances below say how much.
"""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import fastbp
from fastbp.data import load, train_test_split
from fastbp.kernels import codes, cpu, reference
from tests.backends import usable_backends

CPU_BACKENDS = [name for name in ("numpy", "numba") if name in usable_backends(False)]


def bf16_or_skip(backend):
    be = fastbp.get_backend(backend)
    if "bf16" not in be.precisions:
        pytest.skip(be.unavailable_precisions["bf16"])
    return be


def to_bf16(x):
    return reference.to_bf16(x, np.empty(x.shape, np.uint16))


floats32 = hnp.arrays(np.float32, hnp.array_shapes(min_dims=2, max_dims=2, max_side=40),
                      elements=st.floats(width=32, allow_nan=False))


@settings(max_examples=60, deadline=None)
@given(floats32)
def test_compiled_rounding_is_the_reference_rounding(x):
    for flat in (False, True):
        values = x.reshape(-1) if flat else x
        got = cpu.to_bf16(values, np.empty(values.shape, np.uint16))
        assert np.array_equal(got, to_bf16(values))


@settings(max_examples=60, deadline=None)
@given(floats32)
def test_rounding_moves_a_value_by_at_most_half_a_bf16_step(x):
    x = x[np.abs(x) < 3.38e38]  # the largest values round up to inf
    error = np.abs(reference.from_bf16(to_bf16(x)).astype(np.float64) - x)
    # relative 2^-8 for normal numbers, half the subnormal spacing 2^-133 below them
    assert (error <= 2.0 ** -8 * np.abs(x.astype(np.float64)) + 2.0 ** -134).all()


def test_ties_round_to_even():
    # 1 + 2^-8 lies halfway between bf16 1 and 1 + 2^-7: even is 1;
    # 1 + 3 * 2^-8 lies halfway between 1 + 2^-7 and 1 + 2^-6: even is 1 + 2^-6
    x = np.array([[1 + 2.0 ** -8, 1 + 3 * 2.0 ** -8, -2.0, np.inf]], np.float32)
    assert reference.from_bf16(to_bf16(x)).tolist() == [[1.0, 1 + 2.0 ** -6, -2.0, np.inf]]


@pytest.mark.parametrize("act", [codes.RELU, codes.TANH, codes.SOFTMAX])
def test_the_activation_pass_writes_the_bf16_copy_of_a(act):
    rng = np.random.default_rng(1)
    z = rng.standard_normal((5, 7)).astype(np.float32)
    b = rng.standard_normal(7).astype(np.float32)
    for kernels in (reference, cpu):
        a, a16 = np.empty_like(z), np.empty(z.shape, np.uint16)
        kernels.bias_act_forward(z.copy(), b, act, 0.0, a, a16)
        assert np.array_equal(a16, to_bf16(a))


@pytest.mark.parametrize("act,loss", [(codes.SOFTMAX, codes.CROSS_ENTROPY),
                                      (codes.SIGMOID, codes.MSE),
                                      (codes.IDENTITY, codes.HINGE)])
def test_the_output_delta_pass_writes_the_bf16_copy_of_delta(act, loss):
    rng = np.random.default_rng(3)
    z = rng.standard_normal((6, 4)).astype(np.float32)
    a = reference.activate(z, act, 0.0, np.empty_like(z))
    y = np.eye(4, dtype=np.float32)[rng.integers(0, 4, 6)]
    for kernels in (reference, cpu):
        delta, delta16 = np.empty_like(z), np.empty(z.shape, np.uint16)
        total = kernels.output_delta_loss(z, a, y, loss, act, 0.0, 0.5, delta, delta16)
        assert np.array_equal(delta16, to_bf16(delta))
        assert total == pytest.approx(reference.loss_sum(z, a, y, loss), rel=1e-6)


def test_the_update_writes_the_bf16_copy_of_the_parameters():
    rng = np.random.default_rng(2)
    p, g = rng.standard_normal(300).astype(np.float32), rng.standard_normal(300).astype(np.float32)
    for kernels in (reference, cpu):
        q, q16 = p.copy(), np.empty(p.shape, np.uint16)
        m, v = np.zeros_like(p), np.zeros_like(p)
        kernels.adam_update(q, g, m, v, 1e-3, 0.9, 0.999, 1e-8, 1, q16)
        assert np.array_equal(q16, to_bf16(q))


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_forward_gemm_multiplies_the_rounded_inputs(backend):
    be = bf16_or_skip(backend)
    rng = np.random.default_rng(3)
    a = rng.standard_normal((16, 40)).astype(np.float32)
    W = rng.standard_normal((40, 24)).astype(np.float32)
    b = np.zeros(24, np.float32)
    z, out = np.empty((16, 24), np.float32), np.empty((16, 24), np.float32)
    exact = reference.from_bf16(to_bf16(a)).astype(np.float64) @ reference.from_bf16(to_bf16(W))
    be.set_precision("bf16")
    try:
        be.linear_forward(a, W, b, codes.IDENTITY, 0.0, z, out)
    finally:
        be.set_precision("highest")
    scale = np.abs(exact).max()
    # the GEMM library may round its product to bf16 (oneDNN): 2^-8 of the largest entry
    np.testing.assert_allclose(z, exact, atol=2.0 ** -8 * scale)
    assert np.abs(z - a @ W).max() > 1e-4 * scale  # it did not run in float32


def digits_run(backend, precision, epochs=20):
    digits = load("digits")
    X_train, X_test, y_train, y_test = train_test_split(digits.X, digits.y, test_size=0.2, seed=0)
    net = fastbp.MLP([64, 256, 10], activation="relu", output="softmax", loss="cross_entropy",
                     init="he", backend=backend, seed=0, standardize=True)
    history = net.fit(X_train, y_train, epochs=epochs, batch_size=32, lr=0.005, optimizer="adam",
                      verbose=0, precision=precision, validation_data=(X_test, y_test))
    return net, history, net.score(X_test, y_test)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_bf16_digits_reaches_97_percent_and_tracks_float32(backend):
    """Same seed, same batches: the bf16 run's training and validation losses stay within 3%
    (+0.002) of the float32 run's at every epoch -- measured here within 0.5%, about the 2^-9
    relative rounding of each GEMM input times the few layers it passes -- and its test accuracy
    within two test images (the rounding flips a borderline prediction, no more)."""
    bf16_or_skip(backend)
    net, bf16, accuracy = digits_run(backend, "bf16")
    _, fp32, fp32_accuracy = digits_run(backend, "highest")
    assert accuracy >= 0.97
    assert abs(accuracy - fp32_accuracy) <= 2 / 360
    np.testing.assert_allclose(bf16.train_loss, fp32.train_loss, rtol=0.03, atol=0.002)
    np.testing.assert_allclose(bf16.val_loss, fp32.val_loss, rtol=0.03, atol=0.002)
    assert net.backend.precision == "highest"  # restored after the fit


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_gradient_check_after_a_bf16_fit_is_unchanged(backend):
    """bf16 never reaches float64: a bf16-trained net's float64 copy passes the gradient check
    with the usual tolerance, and the backend is back to exact GEMMs."""
    bf16_or_skip(backend)
    rng = np.random.default_rng(6)
    X, y = rng.standard_normal((64, 3)), rng.integers(0, 2, 64)
    net = fastbp.MLP([3, 4, 4, 2], activation=["tanh", "sigmoid"], backend=backend, seed=2,
                     init="xavier")
    net.fit(X, y, epochs=2, batch_size=16, lr=0.1, verbose=0, precision="bf16")
    result = fastbp.gradient_check(net.copy(dtype="float64"), X[:5], y[:5], weight_decay=0.1)
    assert result.max_rel_error < 1e-5, str(result)


def test_numba_and_numpy_train_the_same_bf16_weights():
    if CPU_BACKENDS != ["numpy", "numba"]:
        pytest.skip("needs both CPU backends")
    bf16_or_skip("numba")
    rng = np.random.default_rng(4)
    X, y = rng.standard_normal((256, 20)), rng.integers(0, 4, 256)
    weights = []
    for backend in CPU_BACKENDS:
        net = fastbp.MLP([20, 32, 16, 4], activation=["relu", "tanh"], backend=backend, seed=5)
        net.fit(X, y, epochs=3, batch_size=64, lr=0.05, optimizer="momentum", dropout=0.1,
                weight_decay=1e-3, verbose=0, precision="bf16")
        weights.append(net.get_flat_params())
    np.testing.assert_allclose(weights[1], weights[0], rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("shuffle", [False, True])
def test_a_bf16_step_allocates_no_bf16_buffers_after_the_first_epoch(shuffle):
    be = bf16_or_skip(CPU_BACKENDS[-1])
    copies = be.bf16_copies

    def buffers():
        tables = (copies.written, copies.converted, copies.mirrors)
        held = [buffer for table in tables for _, buffer in table.values()]
        return {id(b) for b in held + [b for spare in copies.spare.values() for b in spare]}

    seen = []
    rng = np.random.default_rng(7)
    X, y = rng.standard_normal((200, 12)), rng.integers(0, 3, 200)
    net = fastbp.MLP([12, 16, 3], backend=be, seed=0)
    net.fit(X, y, epochs=4, batch_size=64, shuffle=shuffle, verbose=0, precision="bf16",
            callbacks=[lambda epoch, logs: seen.append(buffers())])
    assert seen[1] == seen[2] == seen[3]


def test_a_second_bf16_fit_reuses_the_buffers_and_trains_as_on_fresh_ones(monkeypatch):
    """Between fits the copies are forgotten but their buffers kept: the next fit allocates
    none, and stale contents never leak into it (the same weights as with new buffers)."""
    from fastbp.backends.mixed import Bf16Copies

    be = bf16_or_skip(CPU_BACKENDS[-1])
    rng = np.random.default_rng(8)
    X, y = rng.standard_normal((200, 12)), rng.integers(0, 3, 200)
    options = dict(epochs=2, batch_size=64, verbose=0, precision="bf16", shuffle=False)
    net = fastbp.MLP([12, 16, 3], backend=be, seed=0)
    net.fit(X, y, **options)
    twin = net.copy()

    def buffers(copies):
        return {id(b) for spare in copies.spare.values() for b in spare}

    after_first = buffers(be.bf16_copies)
    net.fit(X[::-1].copy(), y[::-1].copy(), **options)  # other data through the same buffers
    net.fit(X, y, **options)
    assert buffers(be.bf16_copies) == after_first
    monkeypatch.setattr(be, "bf16_copies", Bf16Copies())
    twin.fit(X[::-1].copy(), y[::-1].copy(), **options)
    twin.fit(X, y, **options)
    np.testing.assert_array_equal(net.get_flat_params(), twin.get_flat_params())


def test_spare_bf16_buffers_are_kept_only_for_the_shapes_the_last_fit_used():
    from fastbp.backends.mixed import Bf16Copies

    copies = Bf16Copies()
    x = np.ones((4, 3), np.float32)
    copies.output_for(x)
    copies.clear()  # fit 1 used (4, 3): kept
    copies.clear()  # nothing handed out since (a fit clears at its start and end): kept
    assert list(copies.spare) == [(4, 3)]
    copies.output_for(np.ones((5, 3), np.float32))
    copies.clear()  # fit 2 used (5, 3) only: the (4, 3) buffer goes
    assert list(copies.spare) == [(5, 3)]
