"""fastbp.MLPClassifier / MLPRegressor behave as scikit-learn's where scikit-learn defines
the behaviour: parameters, early stopping, L-BFGS limits, partial_fit, warm starts."""

import inspect
import math
import re
import warnings

import numpy as np
import pytest

sklearn = pytest.importorskip("sklearn")
import sklearn.neural_network as sk  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.metrics import accuracy_score, r2_score  # noqa: E402
from sklearn.utils._param_validation import InvalidParameterError  # noqa: E402
from sklearn.utils.estimator_checks import check_param_validation  # noqa: E402

from fastbp import MLPClassifier, MLPRegressor, host, train  # noqa: E402

X = np.random.RandomState(0).randn(40, 3)
y = np.arange(40) % 2
Y_MULTILABEL = np.stack([y, 1 - y, (X[:, 0] > 0).astype(int)], axis=1)
FAST = dict(hidden_layer_sizes=(4,), max_iter=3, random_state=0, backend="numpy")


@pytest.fixture(autouse=True)
def quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        yield


@pytest.mark.parametrize("Estimator", [MLPClassifier, MLPRegressor])
def test_lbfgs_ignores_early_stopping(Estimator):
    est = Estimator(solver="lbfgs", early_stopping=True, max_iter=5).fit(X, y)
    assert est.n_iter_ <= 5
    assert est.validation_scores_ is None and est.best_validation_score_ is None


def test_r2_of_constant_targets_is_finite_as_scikit_learns():
    constant = np.full((3, 1), 3.0)
    for outputs in (constant, constant + 1, np.array([[1.0], [2.0], [4.0]])):
        assert host.r2_score(outputs, constant) == r2_score(constant, outputs)


def test_weighted_scores_match_scikit_learns():
    rng = np.random.default_rng(0)
    targets, outputs, w = rng.normal(size=(12, 2)), rng.normal(size=(12, 2)), rng.random(12)
    assert host.r2_score(outputs, targets, w) == pytest.approx(
        r2_score(targets, outputs, sample_weight=w))
    labels, predicted = rng.integers(0, 3, 12), rng.integers(0, 3, 12)
    eye = np.eye(3)
    assert host.accuracy(eye[predicted], eye[labels], "multiclass", w) == pytest.approx(
        accuracy_score(labels, predicted, sample_weight=w))


def test_early_stopping_holds_out_ceil_of_the_fraction():
    """12 rows, validation_fraction=0.1: scikit-learn's train_test_split holds out
    ceil(1.2) = 2, so 10 train: t_ counts those; fewer than 2 held out is refused."""
    X12, y12 = X[:12], y[:12]
    est = MLPClassifier(**FAST, early_stopping=True, n_iter_no_change=50).fit(X12, y12)
    assert est.t_ == 10 * est.n_iter_
    with pytest.raises(ValueError, match="validation set is too small"):
        MLPClassifier(**FAST, early_stopping=True, validation_fraction=0.05).fit(X12, y12)


def held_out_rows(monkeypatch):
    """Record the rows fit holds out for validation (the split's permutation)."""
    rows = []
    real = train.split_data

    def recording(net, X, Y, sample_weight, validation, validation_split, order=None):
        out = real(net, X, Y, sample_weight, validation, validation_split, order)
        rows.append(out[4][:out[3][0].shape[0]])
        return out

    monkeypatch.setattr(train, "split_data", recording)
    return rows


@pytest.mark.parametrize("Estimator,metric,targets", [
    (MLPClassifier, accuracy_score, y),
    (MLPRegressor, r2_score, X @ np.array([1.0, -2.0, 0.5]))])
def test_validation_score_is_weighted_by_the_held_out_sample_weights(monkeypatch, Estimator,
                                                                     metric, targets):
    rows = held_out_rows(monkeypatch)
    w = np.random.default_rng(1).random(40) * 4
    est = Estimator(**{**FAST, "max_iter": 1}, dtype="float64", early_stopping=True,
                    validation_fraction=0.5).fit(X, targets, sample_weight=w)
    val = rows[0]
    expected = metric(targets[val], est.predict(X[val]), sample_weight=w[val])
    assert est.best_validation_score_ == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_lbfgs_honours_max_fun_and_tol_and_warns():
    with pytest.warns(ConvergenceWarning, match="lbfgs failed to converge"):
        limited = MLPClassifier(solver="lbfgs", max_fun=3, max_iter=500, random_state=0)
        limited.fit(X, y)
    assert limited.n_iter_ <= 3
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        loose = MLPClassifier(solver="lbfgs", tol=1e3, random_state=0).fit(X, y)
    assert loose.n_iter_ == 0 and np.isfinite(loose.loss_)


@pytest.mark.parametrize("Estimator,Sklearn", [(MLPClassifier, sk.MLPClassifier),
                                               (MLPRegressor, sk.MLPRegressor)])
def test_partial_fit_is_scikit_learns(Estimator, Sklearn):
    ours = list(inspect.signature(Estimator.partial_fit).parameters)
    assert ours == list(inspect.signature(Sklearn.partial_fit).parameters)
    assert not hasattr(Estimator(solver="lbfgs"), "partial_fit")
    extra = {"classes": [0, 1]} if Estimator is MLPClassifier else {}
    Estimator(**FAST).partial_fit(X, y, np.ones(40), **extra)  # sample_weight positional
    with pytest.raises(ValueError, match="partial_fit does not support early_stopping=True"):
        Estimator(**FAST, early_stopping=True).partial_fit(X, y, **extra)


def test_regressor_takes_scikit_learns_parameters_and_loss():
    parameters = list(inspect.signature(MLPRegressor).parameters)
    assert parameters[:3] == list(inspect.signature(sk.MLPRegressor).parameters)[:3]
    est = MLPRegressor(**sk.MLPRegressor().get_params())
    assert est.loss == "squared_error"
    MLPRegressor("squared_error", (4,), max_iter=2).fit(X, y)
    with pytest.raises(ValueError, match="poisson.*not implemented"):
        MLPRegressor(loss="poisson", max_iter=2).fit(X, y)


def test_partial_fit_trains_multilabel_indicators():
    est = MLPClassifier(**FAST)
    est.partial_fit(X, Y_MULTILABEL, classes=[0, 1, 2]).partial_fit(X, Y_MULTILABEL)
    assert est.classes_.tolist() == [0, 1, 2] and est.out_activation_ == "logistic"
    assert est.predict(X).shape == (40, 3)


@pytest.mark.parametrize("name,value", [
    ("momentum", 1.5), ("power_t", -1), ("shuffle", "yes"), ("warm_start", 1),
    ("early_stopping", "no"), ("nesterovs_momentum", None), ("alpha", -1),
    ("random_state", "x"), ("random_state", np.random.default_rng(0)),
    ("class_weight", np.array([1.0, 2.0])), ("dropout", 1.0), ("precision", "fp8")])
def test_invalid_parameters_are_scikit_learns_error(name, value):
    with pytest.raises(InvalidParameterError, match=f"'{name}' parameter"):
        MLPClassifier(**{**FAST, name: value}).fit(X, y)


def test_valid_edge_parameters_train():
    MLPClassifier(**FAST, validation_fraction=0.0).fit(X, y)
    est = MLPClassifier(**{**FAST, "max_iter": 30}, n_iter_no_change=np.inf, tol=1e9).fit(X, y)
    assert est.n_iter_ == 30  # never stops on a plateau
    est = MLPClassifier(**{**FAST, "max_iter": 30}, n_iter_no_change=math.inf, tol=1e9,
                        early_stopping=True).fit(X, y)
    assert est.n_iter_ == 30


@pytest.mark.parametrize("Estimator", [MLPClassifier, MLPRegressor])
def test_every_parameter_has_a_scikit_learn_constraint(Estimator):
    check_param_validation(Estimator.__name__, Estimator(**FAST))


def test_warm_start_needs_the_same_classes():
    est = MLPClassifier(**FAST, warm_start=True).fit(X, y)
    with pytest.raises(ValueError, match="warm_start can only be used where `y` has the same"):
        est.fit(X, np.arange(40) % 3)
    est.fit(X, 1 - y)  # the same classes


def test_batch_size_above_the_sample_count_is_clipped_with_a_warning():
    with pytest.warns(UserWarning, match="It is going to be clipped"):
        est = MLPClassifier(**FAST, batch_size=100).fit(X, y)
    assert est.t_ == 40 * est.n_iter_


def fitted_pair(Estimator, Sklearn, X_fit, targets, **params):
    """fastbp's and scikit-learn's estimator fitted alike on ``(X_fit, targets)``."""
    common = dict(hidden_layer_sizes=(4,), random_state=0, **{"max_iter": 3, **params})
    return (Estimator(**common, backend="numpy").fit(X_fit, targets),
            Sklearn(**common).fit(X_fit, targets))


@pytest.mark.parametrize("fit_dtype", [np.float32, np.float64])
@pytest.mark.parametrize("predict_dtype", [np.float32, np.float64, np.int64])
def test_outputs_have_scikit_learns_float_dtype(fit_dtype, predict_dtype):
    """float32 where the training and the predicted X are float32, else float64."""
    X_predict = (X * 3).astype(predict_dtype)
    for ours, theirs in [fitted_pair(MLPClassifier, sk.MLPClassifier, X.astype(fit_dtype), y),
                         fitted_pair(MLPRegressor, sk.MLPRegressor, X.astype(fit_dtype), X)]:
        methods = (["predict_proba", "predict_log_proba"] if hasattr(ours, "predict_proba")
                   else ["predict"])
        for method in methods:
            expected = getattr(theirs, method)(X_predict).dtype
            assert getattr(ours, method)(X_predict).dtype == expected, method


@pytest.mark.parametrize("label", [5, "only"])
def test_a_single_class_is_fitted_and_predicted_as_scikit_learns(label):
    labels = np.array([label] * 40, dtype=object if isinstance(label, str) else None)
    ours, theirs = fitted_pair(MLPClassifier, sk.MLPClassifier, X, labels)
    assert ours.classes_.tolist() == theirs.classes_.tolist() == [label]
    assert ours.predict(X).tolist() == theirs.predict(X).tolist()
    assert ours.predict_proba(X).shape == theirs.predict_proba(X).shape == (40, 2)
    assert (ours.out_activation_, ours.n_outputs_) == (theirs.out_activation_, 1)
    assert ours.score(X, labels) == 1.0
    partial = MLPClassifier(**FAST).partial_fit(X, labels, classes=[label])
    assert partial.predict(X[:3]).tolist() == [label] * 3


def test_partial_fit_counts_this_calls_epoch_as_scikit_learns():
    ours, theirs = MLPClassifier(**FAST), sk.MLPClassifier(hidden_layer_sizes=(4,))
    for _ in range(3):
        ours.partial_fit(X, y, classes=[0, 1])
        theirs.partial_fit(X, y, classes=[0, 1])
        assert ours.n_iter_ == theirs.n_iter_ == 1
        assert ours.t_ == theirs.t_ and len(ours.loss_curve_) == len(theirs.loss_curve_)
        assert ours.best_loss_ == min(ours.loss_curve_)


def test_partial_fit_continues_the_adaptive_rates_plateau_count_as_scikit_learns():
    """A tol nothing meets: every n_iter_no_change + 1 calls the rate is divided by 5."""
    params = dict(hidden_layer_sizes=(4,), solver="sgd", learning_rate="adaptive", tol=1e9,
                  n_iter_no_change=2, random_state=0)
    ours, theirs = MLPClassifier(**params, backend="numpy"), sk.MLPClassifier(**params)
    for _ in range(7):
        ours.partial_fit(X, y, classes=[0, 1])
        theirs.partial_fit(X, y, classes=[0, 1])
        assert ours.net_.training_state.optimizer.lr == pytest.approx(
            theirs._optimizer.learning_rate)
    assert ours.net_.training_state.optimizer.lr == pytest.approx(0.001 / 25)


@pytest.mark.parametrize("early_stopping", [False, True])
def test_warm_starts_continue_scores_bests_and_the_stopping_count(early_stopping):
    """With a tol nothing meets, the first fit stops after n_iter_no_change + 2 epochs; a
    warm refit continues the count, so stops after one, and appends its scores."""
    params = dict(tol=1e9, n_iter_no_change=2, warm_start=True, early_stopping=early_stopping)
    ours, theirs = fitted_pair(MLPClassifier, sk.MLPClassifier, X, y, **params,
                               max_iter=20)
    assert ours.n_iter_ == theirs.n_iter_ == 4
    ours.fit(X, y)
    theirs.fit(X, y)
    assert ours.n_iter_ == theirs.n_iter_ == 1
    assert len(ours.loss_curve_) == len(theirs.loss_curve_) == 5
    if early_stopping:
        assert len(ours.validation_scores_) == len(theirs.validation_scores_) == 5
        assert ours.best_validation_score_ == max(ours.validation_scores_)
        assert ours.best_loss_ is None is theirs.best_loss_
    else:
        assert ours.best_loss_ == min(ours.loss_curve_) and theirs.validation_scores_ is None


@pytest.mark.parametrize("params", [
    dict(max_iter=4, early_stopping=True),
    dict(tol=10, n_iter_no_change=2),
    dict(tol=10, n_iter_no_change=2, early_stopping=True),
    dict(tol=10, n_iter_no_change=2, solver="sgd", learning_rate="adaptive")])
def test_verbose_prints_scikit_learns_lines(capsys, params):
    """The same lines, the numbers aside (the weights differ)."""
    def printed(Estimator, **backend):
        Estimator(hidden_layer_sizes=(4,), random_state=0, verbose=True,
                  **{"max_iter": 40, **params, **backend}).fit(X, y)
        return re.sub(r"\d+\.\d+", "#", capsys.readouterr().out)

    ours = printed(MLPClassifier, backend="numpy")
    assert ours == printed(sk.MLPClassifier)
    assert ours.startswith("Iteration 1, loss = #\n")


def scikit_learn_squared_loss(est, X, Y):
    """scikit-learn's MLPRegressor loss at ``est``'s weights: ``mean((Y - f(X))^2) / 2``
    over the samples and the outputs, plus ``alpha/2 sum ||W||^2 / n``."""
    penalty = sum(float(np.sum(W * W)) for W in est.coefs_)
    return 0.5 * np.mean((Y - est.predict(X)) ** 2) + 0.5 * est.alpha * penalty / len(X)


Y_THREE = np.stack([X[:, 0], 3 * X[:, 1] - X[:, 2], X[:, 0] * X[:, 2]], axis=1)


def test_the_lbfgs_loss_of_several_outputs_is_scikit_learns():
    est = MLPRegressor(solver="lbfgs", hidden_layer_sizes=(8,), alpha=0.1, max_iter=20,
                       random_state=0, dtype="float64").fit(X, Y_THREE)
    assert est.loss_ == pytest.approx(scikit_learn_squared_loss(est, X, Y_THREE), rel=1e-9)


@pytest.mark.parametrize("Y", [Y_THREE, Y_THREE[:, 0]])
def test_the_loss_curve_of_several_outputs_is_scikit_learns(Y):
    """One full-batch step so small that the weights stay put: the epoch's loss is
    scikit-learn's loss at the fitted weights."""
    est = MLPRegressor(solver="sgd", momentum=0, hidden_layer_sizes=(8,), alpha=0.1,
                       batch_size=len(X), learning_rate_init=1e-12, max_iter=1,
                       random_state=0, dtype="float64").fit(X, Y)
    expected = scikit_learn_squared_loss(est, X, Y)
    assert est.loss_curve_ == [est.loss_] and est.loss_ == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("activation, factor", [("relu", 6), ("tanh", 6), ("logistic", 2)])
def test_initial_weights_are_scikit_learns_glorot_uniform(activation, factor):
    """scikit-learn draws ``W`` from ``U[-b, b]``, ``b = sqrt(factor / (n_in + n_out))``
    (factor 2 for the logistic, else 6); one step at a negligible rate leaves the weights
    where they started."""
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((300, 40)), rng.integers(0, 3, 300)
    sizes = (40, 60, 50, 3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for Estimator in (MLPClassifier, sk.MLPClassifier):
            params = dict(hidden_layer_sizes=sizes[1:-1], activation=activation, solver="sgd",
                          momentum=0.0, learning_rate_init=1e-12, max_iter=1, random_state=0)
            if Estimator is MLPClassifier:
                params["preprocess"] = None
            net = Estimator(**params).fit(X, y)
            for W, n_in, n_out in zip(net.coefs_, sizes[:-1], sizes[1:]):
                bound = math.sqrt(factor / (n_in + n_out))
                assert 0.97 * bound < np.abs(W).max() <= bound * (1 + 1e-6), Estimator
                np.testing.assert_allclose(W.std(), bound / math.sqrt(3), rtol=0.1)
