"""The rest of the course: PReLU and maxout layers, L-BFGS, whitening, diagnostics, figures."""

import argparse
import math
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fastbp
from fastbp import data, diagnostics
from fastbp.files import atomic_savez
from fastbp.init import init_weights
from fastbp.lbfgs import lbfgs_minimize
from fastbp.plots import plot_history
from fastbp.preprocess import Whitener

from backends import usable_backends

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def small_problem(n=6, d=3, n_classes=2, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)), rng.integers(0, n_classes, size=n)


# -- PReLU and maxout ---------------------------------------------------------------------------

@pytest.mark.parametrize("backend", usable_backends())
@pytest.mark.parametrize("activation", ["prelu", "maxout", ["maxout", "prelu"]])
def test_gradient_check_prelu_and_maxout_on_every_backend(backend, activation):
    sizes = [3, 4, 2] if isinstance(activation, str) else [3, 4, 3, 2]
    net = fastbp.MLP(sizes, activation=activation, backend=backend, dtype="float64", seed=3,
                     init="xavier", maxout_pieces=3)
    X, y = small_problem()
    result = fastbp.gradient_check(net, X, y, weight_decay=0.1)
    assert result.max_rel_error < 1e-5, str(result)


class Ops:
    """Random float64 inputs for the backend ops, a dropout mask, and device copies."""

    def __init__(self, backend):
        self.be = fastbp.get_backend(backend)
        self.rng = np.random.default_rng(0)
        self.mask = (self.rng.random((5, 4)) > 0.3) / 0.7
        self.delta_next, self.W_next = self.normal(5, 2), self.normal(4, 2)
        self.upstream = (self.delta_next @ self.W_next.T) * self.mask  # dJ/da

    def normal(self, *shape):
        return self.rng.normal(size=shape)

    def dev(self, x):
        return self.be.asarray(x, "float64")

    def empty(self, *shape, dtype="float64"):
        return self.be.empty(shape, dtype)


@pytest.mark.parametrize("backend", usable_backends())
def test_prelu_ops_match_their_formulas(backend):
    ops = Ops(backend)
    be, dev = ops.be, ops.dev
    a_prev, W, b, alpha = ops.normal(5, 3), ops.normal(3, 4), ops.normal(4), ops.normal(4)
    z, a, delta, dalpha = ops.empty(5, 4), ops.empty(5, 4), ops.empty(5, 4), ops.empty(4)
    be.prelu_forward(dev(a_prev), dev(W), dev(b), dev(alpha), z, a)
    be.prelu_backward(dev(ops.delta_next), dev(ops.W_next), z, dev(alpha), delta, dalpha,
                      dev(ops.mask))
    z_ref = a_prev @ W + b
    np.testing.assert_allclose(be.to_numpy(a), np.where(z_ref > 0, z_ref, alpha * z_ref))
    np.testing.assert_allclose(be.to_numpy(delta),
                               ops.upstream * np.where(z_ref > 0, 1.0, alpha))
    np.testing.assert_allclose(be.to_numpy(dalpha),
                               (ops.upstream * np.minimum(z_ref, 0)).sum(axis=0))


@pytest.mark.parametrize("backend", usable_backends())
def test_maxout_ops_route_the_gradient_to_the_winning_piece(backend):
    ops, pieces = Ops(backend), 3
    be, dev = ops.be, ops.dev
    a_prev, W, b = ops.normal(5, 3), ops.normal(3, pieces * 4), ops.normal(pieces * 4)
    z, a, index = ops.empty(5, 12), ops.empty(5, 4), ops.empty(5, 4, dtype="int64")
    delta, grad_a = ops.empty(5, 12), ops.empty(5, 4)
    be.maxout_forward(dev(a_prev), dev(W), dev(b), pieces, z, a, index)
    be.maxout_backward(dev(ops.delta_next), dev(ops.W_next), index, pieces, grad_a, delta,
                       dev(ops.mask))
    by_piece = (a_prev @ W + b).reshape(5, pieces, 4)
    winner = by_piece.argmax(axis=1)
    np.testing.assert_allclose(be.to_numpy(a), by_piece.max(axis=1))
    routed = np.stack([ops.upstream * (winner == p) for p in range(pieces)], axis=1)
    np.testing.assert_allclose(be.to_numpy(delta), routed.reshape(5, 12))


def test_maxout_weights_are_piece_major_columns():
    net = fastbp.MLP([3, 4, 2], activation="maxout", backend="numpy", dtype="float64", seed=0)
    (W1, b1), (W2, b2) = net.get_weights()
    assert W1.shape == (3, 8) and b1.shape == (8,)
    X = np.random.default_rng(1).normal(size=(6, 3))
    hidden = np.maximum(X @ W1[:, :4] + b1[:4], X @ W1[:, 4:] + b1[4:])
    np.testing.assert_allclose(net.activations(X)[0], hidden)
    assert net.n_params == 3 * 8 + 8 + 4 * 2 + 2


def test_prelu_weights_are_triples_and_alpha_starts_at_prelu_init():
    net = fastbp.MLP([3, 4, 2], activation="prelu", prelu_init=0.1, backend="numpy", seed=0)
    (W1, b1, alpha1), (W2, b2) = net.get_weights()
    np.testing.assert_allclose(alpha1, np.full(4, 0.1), rtol=1e-6)
    with pytest.raises(ValueError, match=r"weights\[0\] must be a \(W, b, alpha\) tuple"):
        net.set_weights([(W1, b1), (W2, b2)])
    with pytest.raises(ValueError, match=r"alpha_1 must have shape \(4,\)"):
        net.set_weights([(W1, b1, alpha1[:3]), (W2, b2)])
    with pytest.raises(ValueError, match=r"\(W, b\) or \(W, b, alpha\)"):
        net.set_weights([(W1, b1, alpha1)])
    assert [name for name, _ in net.param_layout[0]] == ["W", "b", "alpha"]


@pytest.mark.parametrize("backend", usable_backends(include_simulator=False))
def test_prelu_slopes_are_learned_and_maxout_trains_with_dropout(backend):
    ds = data.load("iris")
    net = fastbp.MLP([4, 16, 8, 3], activation=["prelu", "maxout"], backend=backend, seed=0,
                     standardize=True)
    net.fit(ds.X, ds.y, epochs=30, batch_size=16, lr=0.01, optimizer="adam", dropout=0.1,
            verbose=0)
    alpha = net.get_weights()[0][2]
    assert np.abs(alpha - 0.25).max() > 1e-3
    assert net.score(ds.X, ds.y) > 0.9


@pytest.mark.parametrize("backend", usable_backends())
def test_prelu_maxout_training_matches_the_numpy_reference(backend):
    ds = data.load("iris")
    nets = [fastbp.MLP([4, 6, 5, 3], activation=["prelu", "maxout"], backend=name, seed=0,
                       standardize=True) for name in ("numpy", backend)]
    for net in nets:
        net.fit(ds.X[:40], ds.y[:40], epochs=2, batch_size=20, lr=0.01, optimizer="adam",
                verbose=0)
    np.testing.assert_allclose(nets[1].get_flat_params(), nets[0].get_flat_params(),
                               atol=1e-5)


@pytest.mark.parametrize("kwargs,match", [
    (dict(activation="swish"), r"activation must be one of .*'prelu', 'maxout'"),
    (dict(activation="softmax"), "softmax is an output activation"),
    (dict(output="prelu"), "output"),
    (dict(activation="maxout", maxout_pieces=1), "maxout_pieces"),
    (dict(activation="prelu", prelu_init="a"), "prelu_init"),
    (dict(preprocess="whiten"), "preprocess"),
    (dict(preprocess="pca", standardize=True), "give one"),
])
def test_bad_arguments_name_themselves(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        fastbp.MLP([3, 4, 2], backend="numpy", **kwargs)


# -- flat parameters, save / load ---------------------------------------------------------------

def test_flatten_and_unflatten_params_follow_the_layout():
    net = fastbp.MLP([3, 4, 5, 2], activation=["prelu", "maxout"], backend="numpy",
                     dtype="float64", seed=0)
    theta = fastbp.flatten_params(net)
    expected = np.concatenate([p.ravel() for layer in net.get_weights() for p in layer])
    np.testing.assert_array_equal(theta, expected)
    fastbp.unflatten_params(net, theta * 2)
    np.testing.assert_array_equal(fastbp.flatten_params(net), theta * 2)
    with pytest.raises(ValueError, match="theta must have shape"):
        fastbp.unflatten_params(net, theta[:-1])


def test_save_load_round_trip_with_prelu_maxout_and_whitening(tmp_path):
    ds = data.load("iris")
    net = fastbp.MLP([4, 6, 5, 3], activation=["prelu", "maxout"], maxout_pieces=3,
                     backend="numpy", seed=0, preprocess="zca")
    net.fit_preprocessor(ds.X)
    net.fit(ds.X, ds.y, epochs=2, verbose=0)
    path = tmp_path / "model.npz"
    net.save(path)
    again = fastbp.load(path, backend="numpy")
    assert again.config == net.config
    assert isinstance(again.preprocessor, Whitener) and again.preprocessor.method == "zca"
    np.testing.assert_array_equal(again.forward(ds.X), net.forward(ds.X))
    for mine, theirs in zip(net.get_weights(), again.get_weights()):
        assert len(mine) == len(theirs)
    np.testing.assert_array_equal(net.copy().forward(ds.X), net.forward(ds.X))


def test_version_1_files_still_load(tmp_path):
    old = fastbp.MLP([4, 5, 3], backend="numpy", seed=0)
    config = {k: v for k, v in old.config.items()
              if k not in ("maxout_pieces", "prelu_init", "preprocess")}
    config["standardize"] = True
    (W1, b1), (W2, b2) = old.get_weights()
    arrays = dict(W_1=W1, b_1=b1, W_2=W2, b_2=b2, standardizer_mean=np.ones(4),
                  standardizer_std=np.full(4, 2.0))
    atomic_savez(tmp_path / "v1.npz", arrays, {"format": "fastbp-mlp", "version": 1,
                                               "config": config})
    net = fastbp.load(tmp_path / "v1.npz", backend="numpy")
    assert net.config["preprocess"] == "standardize"
    np.testing.assert_array_equal(net.prepare(np.full((1, 4), 3.0)), np.ones((1, 4)))
    np.testing.assert_array_equal(net.get_weights()[1][0], W2)


# -- L-BFGS ------------------------------------------------------------------------------------

def digits_split():
    ds = data.load("digits")
    return data.train_test_split(ds.X, ds.y, seed=0)


def test_lbfgs_fits_digits_to_97_percent():
    X_train, X_test, y_train, y_test = digits_split()
    net = fastbp.MLP([64, 128, 10], activation="relu", backend="numpy", dtype="float64",
                     seed=0, standardize=True)
    net.fit_preprocessor(X_train)
    X = net.backend.asarray(net.prepare(X_train), net.dtype)
    Y = net.backend.asarray(net.targets(y_train, len(y_train)), net.dtype)
    costs = []
    result = lbfgs_minimize(net, X, Y, weight_decay=1e-4, max_iter=60,
                            callback=lambda it, logs: costs.append(logs["loss"]))
    assert result.fun == pytest.approx(net.loss(X_train, y_train, 1e-4), rel=1e-9)
    assert costs[-1] < costs[0] / 10
    assert net.score(X_test, y_test) >= 0.97


def test_lbfgs_callback_can_stop_it():
    net = fastbp.MLP([3, 4, 2], backend="numpy", dtype="float64", seed=0)
    X, y = small_problem(n=20)
    Xd, Yd = net.backend.asarray(X), net.backend.asarray(net.targets(y, 20))
    result = lbfgs_minimize(net, Xd, Yd, max_iter=50, callback=lambda it, logs: it >= 3)
    assert result.nit == 3


def test_lbfgs_without_scipy_names_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "scipy.optimize", None)
    net = fastbp.MLP([3, 4, 2], backend="numpy", seed=0)
    X, y = small_problem()
    with pytest.raises(ImportError, match="pip install scipy"):
        lbfgs_minimize(net, net.backend.asarray(X), net.backend.asarray(net.targets(y, 6)))


# -- whitening ---------------------------------------------------------------------------------

def correlated_data(n=400, d=6, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)) @ rng.normal(size=(d, d)) + rng.normal(size=d) * 5


@pytest.mark.parametrize("method", ["pca", "zca"])
def test_whitened_training_covariance_is_the_identity(method):
    X = correlated_data()
    white = Whitener(method).fit(X).transform(X)
    assert white.dtype == np.float64
    np.testing.assert_allclose(white.mean(axis=0), 0, atol=1e-10)
    np.testing.assert_allclose(white.T @ white / len(X), np.eye(X.shape[1]), atol=1e-6)


def test_zca_matrix_is_symmetric_and_pca_orders_components_by_variance():
    X = correlated_data()
    zca, pca = Whitener("zca").fit(X), Whitener("pca").fit(X)
    np.testing.assert_allclose(zca.matrix, zca.matrix.T, atol=1e-10)
    variances = np.linalg.eigvalsh(np.cov(X.T, bias=True))[::-1]
    np.testing.assert_allclose(1 / np.linalg.norm(pca.matrix, axis=0) ** 2, variances + 1e-8,
                               rtol=1e-8)


def test_preprocessor_is_fitted_on_training_data_only():
    X_train, X_test = correlated_data(seed=0), correlated_data(seed=1)
    net = fastbp.MLP([6, 4, 2], backend="numpy", preprocess="pca", seed=0)
    net.fit_preprocessor(X_train)
    fitted = net.preprocessor
    net.fit_preprocessor(X_test)  # a fitted preprocessor is kept
    assert net.preprocessor is fitted
    np.testing.assert_allclose(net.prepare(X_test), (X_test - X_train.mean(0)) @ fitted.matrix)
    assert fastbp.MLP([6, 2], backend="numpy", standardize=True).config["preprocess"] == \
        "standardize"


def test_fit_fits_the_configured_whitener():
    X, y = correlated_data(n=60), np.arange(60) % 2
    net = fastbp.MLP([6, 4, 2], backend="numpy", preprocess="zca", seed=0)
    net.fit(X, y, epochs=1, verbose=0)
    assert isinstance(net.preprocessor, Whitener)


# -- diagnostics ---------------------------------------------------------------------------------

def stds(**setup):
    result = diagnostics.init_experiment(backend="numpy", **setup)
    assert [s.layer for s in result.stats] == list(range(1, 11))
    return np.array([s.std for s in result.stats])


def test_small_normal_weights_collapse_the_activations():
    std = stds(activation="tanh", init="normal", init_scale=0.01)
    np.testing.assert_allclose(std[:3], [0.21, 0.048, 0.011], rtol=0.05)
    assert std[-1] < 1e-6 and np.all(np.diff(std) < 0)


def test_unit_normal_weights_saturate_tanh():
    std = stds(activation="tanh", init="normal", init_scale=1.0)
    np.testing.assert_allclose(std, 0.98, atol=0.01)


def test_xavier_decays_slowly_with_tanh():
    std = stds(activation="tanh", init="xavier")
    np.testing.assert_allclose(std[[0, 1, 2, -1]], [0.63, 0.49, 0.41, 0.23], atol=0.01)
    assert np.all(np.diff(std) < 0)


def test_he_keeps_relu_stable():
    std = stds(activation="relu", init="he")
    assert np.all((std > 0.75) & (std < 0.95))
    assert 0.8 < std[-1] / std[0] < 1.25


def test_activation_stats_are_per_layer_mean_and_std():
    net = fastbp.MLP([3, 5, 4, 2], activation=["tanh", "maxout"], backend="numpy", seed=0)
    X = np.random.default_rng(0).normal(size=(20, 3))
    stats = diagnostics.activation_stats(net, X)
    for s, a in zip(stats, net.activations(X)):
        assert (s.mean, s.std) == pytest.approx((a.mean(), a.std()))
    assert [s.layer for s in stats] == [1, 2, 3]


def test_diagnose_command_prints_the_table_and_writes_the_figure(tmp_path, capsys):
    parser = diagnostics.configure_parser(argparse.ArgumentParser())
    path = tmp_path / "init.png"
    diagnostics.run(parser.parse_args(["--layers", "3", "--width", "20", "--samples", "50",
                                       "--activation", "relu", "--init", "he", "--backend",
                                       "numpy", "--plot", str(path)]))
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("3 relu layers of 20, init he")
    assert [line.split()[0] for line in lines[2:5]] == ["1", "2", "3"]
    assert path.read_bytes().startswith(PNG_MAGIC)


# -- training curves ---------------------------------------------------------------------------

def test_plot_history_writes_the_curves(tmp_path):
    history = fastbp.History(epoch=[1, 2, 3, 4], train_loss=[1.0, 0.6, 0.4, 0.3],
                             val_loss=[1.1, 0.8, 0.85, 0.9], val_score=[0.5] * 4,
                             seconds=[0.1] * 4, best_epoch=2, stopped_early=True)
    path = tmp_path / "curves.png"
    plot_history(history, path)
    assert path.read_bytes().startswith(PNG_MAGIC)
    with pytest.raises(ValueError, match="empty"):
        plot_history(fastbp.History(), tmp_path / "none.png")


@settings(max_examples=25, deadline=None)
@given(n_in=st.integers(50, 400), n_out=st.integers(50, 400), gain=st.floats(0.1, 3.0))
def test_glorot_uniform_fills_its_bound_with_xaviers_variance(n_in, n_out, gain):
    """``U[-b, b]``, ``b = gain sqrt(6 / (n_in + n_out))``: every weight inside the bound, the
    extremes near it, the variance ``b^2 / 3 = gain^2 2 / (n_in + n_out)`` (xavier's)."""
    W = init_weights(np.random.default_rng(0), n_in, n_out, "glorot_uniform", gain)
    bound = gain * math.sqrt(6 / (n_in + n_out))
    assert W.shape == (n_in, n_out)
    assert np.abs(W).max() <= bound and np.abs(W).max() > 0.99 * bound
    np.testing.assert_allclose(W.var(), gain**2 * 2 / (n_in + n_out), rtol=0.1)
    assert abs(W.mean()) < 0.05 * bound
