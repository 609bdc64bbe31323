"""Classes 6, 7, 9, 10 and 11: numerical failure is loud, names are checked at construction,
one model serves one thread, compiled kernels are cached outside the installed code, and the
public helpers (evaluate, gradient_check) keep their promises."""

import os
import threading

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import fastbp
from backends import usable_backends

CPU_BACKENDS = [b for b in usable_backends(include_simulator=False) if b in ("numpy", "numba")]

RNG = np.random.default_rng(0)
X = RNG.normal(size=(40, 5))
Y = np.arange(40) % 3


# -- class 6: numerical failure is loud -----------------------------------------------------

@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("batch_size", [None, 7, 40])
def test_a_diverging_last_update_raises(batch_size):
    """lr=1e38: the loss of every batch before the last update is finite; the last update
    leaves weights whose outputs overflow float32."""
    net = fastbp.MLP([5, 8, 3], backend="numpy", seed=0)
    before = net.get_flat_params()
    with pytest.raises(FloatingPointError, match="diverged in epoch 1"):
        net.fit(X, Y, epochs=1, batch_size=batch_size, lr=1e38, verbose=0)
    np.testing.assert_array_equal(net.get_flat_params(), before)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_a_diverging_last_update_raises_with_validation_too():
    net = fastbp.MLP([5, 8, 3], backend="numpy", seed=0)
    with pytest.raises(FloatingPointError, match="validation loss"):
        net.fit(X, Y, epochs=1, batch_size=None, lr=1e38, validation_split=0.2, verbose=0)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_non_finite_outputs_raise_in_predict_and_friends():
    net = fastbp.MLP([5, 8, 3], backend="numpy", seed=0)
    weights = net.get_weights()
    weights[0][0][:] = 1e38
    net.set_weights(weights)
    for call in (net.predict, net.predict_proba, net.forward,
                 lambda X: net.score(X, Y), lambda X: net.evaluate(X, Y)):
        with pytest.raises(FloatingPointError, match="overflow float32"):
            call(X * 1e3)


# -- class 7: names are checked even where unused -------------------------------------------

@settings(max_examples=40, deadline=None)
@given(st.text(max_size=8).filter(lambda t: t not in fastbp.activations.HIDDEN_NAMES))
def test_a_bad_activation_name_is_refused_without_hidden_layers(name):
    with pytest.raises((ValueError, TypeError), match="activation"):
        fastbp.MLP([5, 3], activation=name, backend="numpy")


@pytest.mark.parametrize("kwargs,argument", [
    (dict(activation=["relux"]), "activation"), (dict(activation=3), "activation"),
    (dict(output="softmaxx"), "output"), (dict(loss="mse2"), "loss"),
    (dict(init="hee"), "init"), (dict(preprocess="whiten"), "preprocess"),
    (dict(dtype="float16"), "dtype"), (dict(backend="gpu"), "backend"),
    (dict(sizes=[5, 10 ** 12, 3]), "sizes"),
])
def test_every_name_and_size_is_checked_at_construction(kwargs, argument):
    kwargs = {"sizes": [5, 3], "backend": "numpy", **kwargs}
    with pytest.raises((ValueError, TypeError), match=argument):
        fastbp.MLP(**kwargs)


# -- class 9: one model, two threads ----------------------------------------------------------

def test_predict_from_another_thread_during_fit_is_a_clear_error():
    net = fastbp.MLP([5, 8, 3], backend="numpy", seed=0)
    inside, release, caught = threading.Event(), threading.Event(), []

    def callback(epoch, logs):
        inside.set()
        release.wait(30)

    trainer = threading.Thread(target=lambda: net.fit(X, Y, epochs=2, verbose=0,
                                                      callbacks=[callback]))
    trainer.start()
    inside.wait(30)
    try:
        for call in (net.predict, net.get_weights, lambda X: net.fit(X, Y, verbose=0)):
            try:
                call(X) if call is not net.get_weights else call()
            except RuntimeError as exc:
                caught.append(str(exc))
    finally:
        release.set()
        trainer.join(30)
    assert len(caught) == 3 and all("another thread runs MLP.fit" in m for m in caught)
    net.predict(X)  # free again


def test_the_same_thread_may_nest_calls():
    net = fastbp.MLP([5, 8, 3], backend="numpy", seed=0)
    history = net.fit(X, Y, epochs=1, verbose=0, callbacks=[lambda e, _: net.predict(X) is None])
    assert len(history) == 1


# -- class 10: compiled kernels are cached outside the installed code -----------------------

def test_numba_caches_kernels_outside_the_package():
    pytest.importorskip("numba")
    from numba.core import config

    from fastbp.kernels import cache

    kernels_dir = os.path.dirname(os.path.abspath(cache.__file__))
    assert config.CACHE_DIR and not os.path.abspath(config.CACHE_DIR).startswith(kernels_dir)
    from fastbp.kernels import cpu, cpu_optimizers, kernel

    kernels = [v for module in (cpu, cpu_optimizers) for v in vars(module).values()
               if isinstance(v, kernel.Kernel)]
    assert kernels
    for loop in kernels:
        for compiled in (loop.parallel, loop.serial):
            assert not os.path.abspath(compiled._cache._cache_path).startswith(kernels_dir)


def test_the_cache_dir_follows_xdg_and_respects_the_users_choice(monkeypatch, tmp_path):
    from fastbp.kernels import cache

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert cache.user_cache_dir() == str(tmp_path / "fastbp" / "numba")
    monkeypatch.setenv("NUMBA_CACHE_DIR", "/somewhere")
    cache.use_user_cache_dir()
    assert os.environ["NUMBA_CACHE_DIR"] == "/somewhere"


# -- class 11: public helpers keep their promises -------------------------------------------

@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_evaluate_takes_labels_in_any_form_and_preprocesses(backend):
    net = fastbp.MLP([5, 8, 3], backend=backend, seed=0, preprocess="standardize",
                     dtype="float64")
    net.fit(X * 3 + 1, Y, epochs=1, verbose=0)
    total, outputs = net.evaluate(X, Y)
    total_onehot, _ = net.evaluate(X, np.eye(3)[Y])
    assert total == pytest.approx(total_onehot)
    assert total / len(X) == pytest.approx(net.loss(X, Y))
    np.testing.assert_allclose(outputs, net.forward(X))


@pytest.mark.parametrize("bad,message", [
    (dict(X=X[:, :4]), "5 features"), (dict(y=Y[:10]), "one row per sample"),
    (dict(y=Y + 5), "class indices"), (dict(X=np.full((40, 5), np.nan)), "finite"),
])
def test_evaluate_checks_its_inputs(bad, message):
    net = fastbp.MLP([5, 8, 3], backend="numpy", seed=0)
    args = {"X": X, "y": Y, **bad}
    with pytest.raises(ValueError, match=message):
        net.evaluate(args["X"], args["y"])


def test_gradient_check_passes_zero_gradients_on_the_absolute_tolerance():
    net = fastbp.MLP([5, 8, 3], backend="numpy", dtype="float64", seed=0)
    weights = net.get_weights()
    weights[0][0][0, :] = 0.0
    net.set_weights(weights)
    Xz = X[:5].copy()
    Xz[:, 0] = 0.0  # input 0 is always 0: W_1[0, :] has zero gradient, numerically ~1e-10
    result = fastbp.gradient_check(net, Xz, Y[:5])
    assert result.passed and bool(result) and "passed" in str(result)
    assert result.max_rel_error <= 1e-5


def test_gradient_check_fails_a_wrong_gradient(monkeypatch):
    net = fastbp.MLP([5, 4, 3], backend="numpy", dtype="float64", seed=0)
    real = fastbp.MLP.gradients

    def wrong(self, *args, **kwargs):
        grads = real(self, *args, **kwargs)
        grads[0][1][2] += 1e-6
        return grads

    monkeypatch.setattr(fastbp.MLP, "gradients", wrong)
    result = fastbp.gradient_check(net, X[:5], Y[:5])
    assert not result.passed and "FAILED" in str(result)
    assert (result.layer, result.param, result.index) == (1, "b", (2,))


@pytest.mark.parametrize("kwargs", [dict(eps=0), dict(rtol=-1), dict(atol="x")])
def test_gradient_check_validates_its_tolerances(kwargs):
    net = fastbp.MLP([5, 3], backend="numpy", dtype="float64")
    with pytest.raises((ValueError, TypeError)):
        fastbp.gradient_check(net, X[:2], Y[:2], **kwargs)
