"""Every bad input is a ValueError/TypeError naming the argument, and changes nothing."""

import numpy as np
import pytest

import fastbp


@pytest.fixture
def net():
    return fastbp.MLP([3, 4, 2], seed=0, backend="numpy")


X = np.random.default_rng(0).normal(size=(10, 3))
y = np.array([0, 1] * 5)


@pytest.mark.parametrize("kwargs,match", [
    (dict(sizes=[3]), "sizes"),
    (dict(sizes=[3, 0, 2]), r"sizes\[1\]"),
    (dict(sizes=[3, 2.5, 2]), r"sizes\[1\]"),
    (dict(sizes="3,2"), "sizes"),
    (dict(activation="softmax"), "activation"),
    (dict(activation="swish"), "activation"),
    (dict(activation=["relu", "tanh"]), "one name per hidden layer"),
    (dict(output="relu6"), "output"),
    (dict(loss="l1"), "loss"),
    (dict(output="softmax", loss="binary_cross_entropy"), "cannot be paired"),
    (dict(output="tanh", loss="cross_entropy"), "cannot be paired"),
    (dict(output="sigmoid", loss="hinge"), "cannot be paired"),
    (dict(init="orthogonal"), "init"),
    (dict(init="he", init_scale=0.1), "init_scale"),
    (dict(init="normal", init_scale=-1), "init_scale"),
    (dict(backend="tpu"), "backend"),
    (dict(dtype="float16"), "dtype"),
    (dict(seed=-1), "seed"),
    (dict(seed=1.5), "seed"),
    (dict(leaky_slope=2.0), "leaky_slope"),
    (dict(elu_alpha=0.0), "elu_alpha"),
    (dict(sizes=[3, 4, 1]), "softmax' over 1 unit is always 1"),
    (dict(dtype=None), "dtype must be 'float32' or 'float64', got None"),
    (dict(standardize="yes"), "standardize must be True or False"),
    (dict(standardize=True, preprocess=None), "give one"),
    (dict(classes="ab"), r"classes must be a list like \['cat', 'dog'\], got 'ab'"),
    (dict(feature_names="abc"), "feature_names must be a list"),
    (dict(feature_names=5), "feature_names must be a list"),
    (dict(sizes={3: 1, 2: 1}), "sizes must be a list"),
    (dict(sizes=[3, 1], loss="mse"), "softmax' over 1 unit"),
])
def test_bad_constructor_arguments(kwargs, match):
    args = dict(sizes=[3, 4, 2], backend="numpy")
    args.update(kwargs)
    with pytest.raises((ValueError, TypeError), match=match):
        fastbp.MLP(**args)


BAD_FIT = [
    (dict(X=np.full((10, 3), np.nan)), "X must be finite"),
    (dict(X=X[:, :2]), "3 features"),
    (dict(X=X[0]), "2-D"),
    (dict(X=np.empty((0, 3)), y=np.empty(0)), "empty"),
    (dict(X=np.array([["a", "b", "c"]] * 10)), "numeric"),
    (dict(y=y[:9]), "one row per sample"),
    (dict(y=np.array([0, 1, 2] * 3 + [0])), r"class indices in \[0, 1\]"),
    (dict(y=np.array([0.5, 1] * 5)), "integer class indices"),
    (dict(y=np.array([0, np.inf] * 5)), "y must be finite"),
    (dict(y=np.ones((10, 2))), "one-hot"),
    (dict(epochs=0), "epochs"),
    (dict(epochs=2.5), "epochs"),
    (dict(batch_size=0), "batch_size"),
    (dict(lr=0), "lr"),
    (dict(lr=float("nan")), "lr"),
    (dict(lr="fast"), "lr"),
    (dict(optimizer="rmsprop"), "optimizer"),
    (dict(momentum=1.0), "momentum"),
    (dict(weight_decay=-1e-3), "weight_decay"),
    (dict(dropout=1.0), "dropout"),
    (dict(validation_split=1.0), "validation_split"),
    (dict(validation_split=0.01), "validation_split"),
    (dict(early_stopping=2), "early_stopping needs validation"),
    (dict(validation_data=(X, y), validation_split=0.2), "not both"),
    (dict(validation_data=(X[:, :2], y)), "X_val"),
    (dict(validation_data=X), "validation_data"),
    (dict(verbose=5), "verbose"),
    (dict(callbacks=[1]), "callbacks"),
    (dict(callbacks=3), "callbacks must be a list"),
    (dict(shuffle="no"), "shuffle must be True or False"),
    (dict(epoch=3), r"fit\(\) got an unexpected keyword argument 'epoch' \(did you mean "
                    r"'epochs'\?\)"),
    (dict(sample_weights=np.ones(10)), "did you mean 'sample_weight'"),
    (dict(y=y[:, None] + 1), r"class indices in \[0, 1\]"),
]


@pytest.mark.parametrize("kwargs,match", BAD_FIT)
def test_bad_fit_inputs_leave_the_model_unchanged(net, kwargs, match):
    before = net.get_weights()
    args = dict(X=X, y=y, epochs=1, verbose=0)
    args.update(kwargs)
    with pytest.raises((ValueError, TypeError), match=match):
        net.fit(args.pop("X"), args.pop("y"), **args)
    for (W0, b0), (W1, b1) in zip(before, net.get_weights()):
        np.testing.assert_array_equal(W0, W1)
        np.testing.assert_array_equal(b0, b1)


def test_bad_inputs_to_predict_score_loss(net):
    with pytest.raises(ValueError, match="3 features"):
        net.predict(np.ones((2, 4)))
    with pytest.raises(ValueError, match="finite"):
        net.score(np.full((2, 3), np.inf), [0, 1])
    with pytest.raises(ValueError, match="weight_decay"):
        net.loss(X, y, weight_decay=-1)
    with pytest.raises(ValueError, match="predict_proba"):
        fastbp.MLP([3, 1], output="identity", loss="mse", backend="numpy").predict_proba(X)


def test_set_weights_is_checked_before_writing(net):
    before = net.get_weights()
    bad = [(before[0][0], before[0][1]), (np.ones((4, 3)), before[1][1])]
    with pytest.raises(ValueError, match=r"W_2 must have shape \(4, 2\)"):
        net.set_weights(bad)
    with pytest.raises(ValueError, match="finite"):
        net.set_weights([(np.full((3, 4), np.nan), before[0][1]), before[1]])
    with pytest.raises(ValueError, match="2 \\(W, b\\) pairs"):
        net.set_weights(before[:1])
    np.testing.assert_array_equal(net.get_weights()[0][0], before[0][0])


def test_binary_targets_must_lie_in_0_1():
    net = fastbp.MLP([3, 1], output="sigmoid", loss="binary_cross_entropy", backend="numpy")
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        net.fit(X, np.arange(10.0), verbose=0)


def test_one_hot_targets_are_accepted(net):
    net.fit(X, np.eye(2)[y], epochs=1, verbose=0)


def test_a_column_of_class_indices_trains_as_the_indices():
    """y of shape (N, 1), as a column read from a table, is class indices (one-hot needs K
    columns)."""
    nets = [fastbp.MLP([3, 4, 3], seed=0, backend="numpy") for _ in range(2)]
    labels = np.arange(10) % 3
    nets[0].fit(X, labels, epochs=2, verbose=0)
    nets[1].fit(X, labels[:, None], epochs=2, verbose=0)
    np.testing.assert_array_equal(nets[0].get_flat_params(), nets[1].get_flat_params())


def test_one_callback_need_not_be_in_a_list(net):
    seen = []
    net.fit(X, y, epochs=2, verbose=0, callbacks=lambda epoch, logs: seen.append(epoch))
    assert seen == [1, 2]
