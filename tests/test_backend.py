"""The registry, "auto", and the NumPy reference backend's buffers."""

import numpy as np
import pytest

import fastbp
from fastbp import backend as registry
from fastbp.kernels import codes


def test_numpy_is_always_available():
    assert "numpy" in fastbp.available_backends()
    assert fastbp.get_backend("numpy").name == "numpy"


def test_auto_says_why():
    be = fastbp.get_backend("auto")
    assert be.name in ("cupy", "numba", "numpy")
    assert be.reason.startswith(f"auto picked {be.name}")


def test_auto_falls_back_to_numpy_when_others_are_unusable(monkeypatch):
    monkeypatch.setitem(registry._PROBES, "cupy", (False, "no CUDA device"))
    monkeypatch.setitem(registry._PROBES, "numba", (False, "numba is not installed"))
    name, why = registry.resolve("auto")
    assert name == "numpy"
    assert "no CUDA device" in why and "numba is not installed" in why


def test_auto_never_picks_the_simulator(monkeypatch):
    monkeypatch.setitem(registry._PROBES, "cupy", (False, "no CUDA device"))
    monkeypatch.setitem(registry._PROBES, "numba", (False, "numba is not installed"))
    monkeypatch.setitem(registry._PROBES, "cupy-sim", (True, "simulator on"))
    assert registry.resolve("auto")[0] == "numpy"


def test_unknown_and_unusable_backends_are_clear_errors(monkeypatch):
    with pytest.raises(ValueError, match="backend must be"):
        fastbp.get_backend("tpu")
    monkeypatch.setitem(registry._PROBES, "numba", (False, "numba is not installed"))
    with pytest.raises(RuntimeError, match="numba is not installed"):
        fastbp.get_backend("numba")


def test_a_crashing_probe_is_reported_not_raised(monkeypatch):
    def boom():
        raise OSError("driver exploded")

    registry.register(registry.BackendEntry("broken", "nowhere", "Nothing", boom, auto=False))
    try:
        usable, reason = registry.probe("broken")
        assert not usable and "driver exploded" in reason
    finally:
        registry._REGISTRY.pop("broken")
        registry._PROBES.pop("broken")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_numpy_backend_writes_into_the_given_buffers(dtype):
    be = fastbp.get_backend("numpy")
    rng = np.random.default_rng(0)
    a_prev, W, b = (rng.normal(size=s).astype(dtype) for s in [(5, 4), (4, 3), (3,)])
    z, a = np.empty((5, 3), dtype), np.empty((5, 3), dtype)
    out = be.linear_forward(a_prev, W, b, codes.TANH, 0.0, z, a)
    assert out is a
    np.testing.assert_allclose(z, a_prev @ W + b, rtol=1e-6)
    np.testing.assert_allclose(a, np.tanh(a_prev @ W + b), rtol=1e-5)
    delta_next = rng.normal(size=(5, 2)).astype(dtype)
    W_next = rng.normal(size=(3, 2)).astype(dtype)
    delta = np.empty((5, 3), dtype)
    assert be.backprop_delta(delta_next, W_next, z, a, codes.TANH, 0.0, delta) is delta
    np.testing.assert_allclose(delta, (delta_next @ W_next.T) * (1 - a * a), rtol=1e-5)
    dW, db = np.empty((4, 3), dtype), np.empty(3, dtype)
    be.weight_grads(a_prev, delta, W, 0.5, dW, db)
    np.testing.assert_allclose(dW, a_prev.T @ delta + 0.5 * W, rtol=1e-5)
    np.testing.assert_allclose(db, delta.sum(0), rtol=1e-5)
    assert all(x.dtype == dtype for x in (z, a, delta, dW, db))


def test_training_steps_reuse_their_buffers():
    """After the first step, a step allocates no new layer buffers."""
    net = fastbp.MLP([4, 8, 3], seed=0, backend="numpy")
    X = np.random.default_rng(0).normal(size=(64, 4))
    y = np.arange(64) % 3
    net.fit(X, y, epochs=1, batch_size=16, verbose=0)
    buffers = [{k: id(ws.z) for k, ws in layer._workspaces.items()} for layer in net.layers]
    net.fit(X, y, epochs=2, batch_size=16, verbose=0)
    assert buffers == [{k: id(ws.z) for k, ws in layer._workspaces.items()}
                       for layer in net.layers]


@pytest.mark.parametrize("name,update", [
    ("sgd", lambda p, g, s: p - 0.1 * g),
    ("momentum", lambda p, g, s: p + (0.9 * s["v"] - 0.1 * g)),
])
def test_optimizer_updates_match_their_formulas(name, update):
    be = fastbp.get_backend("numpy")
    p, g, v = (np.random.default_rng(i).normal(size=7) for i in range(3))
    expected = update(p, g, {"v": v})
    if name == "sgd":
        be.sgd_update(p, g, 0.1)
    else:
        be.momentum_update(p, g, v, 0.1, 0.9)
    np.testing.assert_allclose(p, expected)


def test_adam_first_step_moves_each_parameter_by_lr():
    be = fastbp.get_backend("numpy")
    p, g = np.zeros(5), np.array([1.0, -2.0, 3.0, -4.0, 5.0])
    m, v = np.zeros(5), np.zeros(5)
    be.adam_update(p, g, m, v, 0.01, 0.9, 0.999, 1e-12, 1)
    np.testing.assert_allclose(p, -0.01 * np.sign(g))
