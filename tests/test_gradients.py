"""Backpropagation against central differences, and the output-delta identities."""

import numpy as np
import pytest

import fastbp
from fastbp.kernels import codes, reference

from backends import usable_backends

HIDDEN = ["identity", "sigmoid", "tanh", "relu", "leaky_relu", "elu"]


def small_problem(loss, n_out=3, n=6, d=4, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    task = fastbp.losses.LOSSES[loss].task
    if task == "classification":
        y = rng.integers(0, n_out, size=n)
    elif task == "binary":
        y = rng.integers(0, 2, size=(n, n_out)).astype(float)
    else:
        y = rng.normal(size=(n, n_out))
    return X, y


def all_pairs():
    from fastbp.losses import LOSSES

    return [(out, loss) for loss, spec in LOSSES.items() for out in spec.outputs]


@pytest.mark.parametrize("hidden", HIDDEN)
@pytest.mark.parametrize("output,loss", all_pairs())
@pytest.mark.parametrize("weight_decay", [0.0, 0.3])
def test_gradient_check_every_activation_and_pair(hidden, output, loss, weight_decay):
    net = fastbp.MLP([4, 5, 3], activation=hidden, output=output, loss=loss, init="xavier",
                     backend="numpy", dtype="float64", seed=1, leaky_slope=0.1)
    # shift biases away from the relu kinks so central differences see a smooth J
    weights = [(W, b + 0.05) for W, b in net.get_weights()]
    net.set_weights(weights)
    X, y = small_problem(loss)
    result = fastbp.gradient_check(net, X, y, weight_decay=weight_decay)
    assert result.max_rel_error < 1e-5, str(result)


@pytest.mark.parametrize("backend", usable_backends())
def test_gradient_check_deep_net_on_every_backend(backend):
    net = fastbp.MLP([3, 4, 4, 2], activation=["tanh", "sigmoid"], backend=backend,
                     dtype="float64", seed=2, init="xavier")
    X, y = small_problem("cross_entropy", n_out=2, d=3, n=5)
    result = fastbp.gradient_check(net, X, y, weight_decay=0.1)
    assert result.max_rel_error < 1e-5, str(result)


def test_gradient_check_reports_a_wrong_gradient(monkeypatch):
    """The check must be able to fail: corrupt one backprop gradient and it is found."""
    net = fastbp.MLP([3, 4, 2], activation="tanh", backend="numpy", dtype="float64", seed=0)
    X, y = small_problem("cross_entropy", n_out=2, d=3)
    real = fastbp.MLP.gradients

    def corrupted(self, *args, **kwargs):
        grads = real(self, *args, **kwargs)
        grads[1][0][2, 1] += 1e-3
        return grads

    monkeypatch.setattr(fastbp.MLP, "gradients", corrupted)
    result = fastbp.gradient_check(net, X, y)
    assert result.max_rel_error > 1e-4
    assert (result.layer, result.param, result.index) == (2, "W", (2, 1))


@pytest.mark.parametrize("act,loss", sorted(codes.MATCHED_PAIRS))
def test_matched_pairs_output_delta_is_a_minus_y_over_n(act, loss):
    rng = np.random.default_rng(0)
    z = rng.normal(size=(5, 3))
    a = reference.activate(z, act, 0.0, np.empty_like(z))
    y = np.eye(3)[rng.integers(0, 3, 5)]
    delta = reference.output_delta(z, a, y, loss, act, 0.0, 1 / 5, np.empty_like(z))
    np.testing.assert_allclose(delta, (a - y) / 5, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("act,loss", sorted(codes.MATCHED_PAIRS))
def test_matched_pair_delta_equals_general_chain_rule(act, loss):
    """(a - y) equals g'(z) * dL/da computed by finite differences of the loss in z."""
    rng = np.random.default_rng(1)
    z = rng.normal(size=(4, 3))
    y = np.eye(3)[rng.integers(0, 3, 4)]
    a = reference.activate(z, act, 0.0, np.empty_like(z))
    delta = reference.output_delta(z, a, y, loss, act, 0.0, 1.0, np.empty_like(z))
    eps = 1e-6
    numeric = np.empty_like(z)
    for idx in np.ndindex(z.shape):
        zp, zm = z.copy(), z.copy()
        zp[idx] += eps
        zm[idx] -= eps
        lp = reference.loss_sum(zp, reference.activate(zp, act, 0.0, np.empty_like(z)), y, loss)
        lm = reference.loss_sum(zm, reference.activate(zm, act, 0.0, np.empty_like(z)), y, loss)
        numeric[idx] = (lp - lm) / (2 * eps)
    np.testing.assert_allclose(delta, numeric, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("z_value", [1000.0, -1000.0])
@pytest.mark.parametrize("loss,act", [(codes.CROSS_ENTROPY, codes.SOFTMAX),
                                      (codes.BINARY_CROSS_ENTROPY, codes.SIGMOID)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_losses_and_deltas_stay_finite_for_huge_z(z_value, loss, act, dtype):
    z = np.array([[z_value, 0.0, -z_value]], dtype=dtype)
    y = np.array([[0.0, 0.0, 1.0]], dtype=dtype)
    a = reference.activate(z, act, 0.0, np.empty_like(z))
    value = reference.loss_sum(z, a, y, loss)
    delta = reference.output_delta(z, a, y, loss, act, 0.0, 1.0, np.empty_like(z))
    assert np.isfinite(value) and np.isfinite(a).all() and np.isfinite(delta).all()
    if z_value > 0:
        assert value > 100  # confidently wrong: a large, finite loss
