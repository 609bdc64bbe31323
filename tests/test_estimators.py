"""fastbp.MLPClassifier / MLPRegressor as scikit-learn estimators."""

import pickle
import warnings

import numpy as np
import pytest

sklearn = pytest.importorskip("sklearn")
from sklearn.base import clone  # noqa: E402
from sklearn.datasets import load_digits, load_iris, make_classification  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.model_selection import GridSearchCV, cross_val_score, train_test_split  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from sklearn.utils.estimator_checks import check_estimator  # noqa: E402

from fastbp import MLPClassifier, MLPRegressor  # noqa: E402


@pytest.fixture(autouse=True)
def quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        yield


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    return train_test_split(X, y, test_size=0.25, random_state=0, stratify=y)


@pytest.mark.slow
@pytest.mark.parametrize("estimator", [MLPClassifier(max_iter=100, dtype="float64"),
                                       MLPRegressor(max_iter=100, dtype="float64")],
                         ids=["classifier", "regressor"])
def test_check_estimator(estimator):
    # float64: check_sample_weight_equivalence compares weighted and repeated fits to
    # rtol 1e-7, which float32 arithmetic cannot meet (scikit-learn's own MLP runs in float64)
    check_estimator(estimator)


def test_import_fastbp_names_the_extra_when_sklearn_is_missing(monkeypatch):
    import builtins
    import importlib
    import sys

    real_import = builtins.__import__

    def no_sklearn(name, *args, **kwargs):
        if name.startswith("sklearn"):
            raise ImportError("No module named 'sklearn'")
        return real_import(name, *args, **kwargs)

    monkeypatch.delitem(sys.modules, "fastbp.estimators", raising=False)
    monkeypatch.setattr(builtins, "__import__", no_sklearn)
    with pytest.raises(ImportError, match=r"fastbp\[sklearn\]"):
        importlib.import_module("fastbp.estimators")


def test_string_labels_end_to_end(digits):
    X_train, X_test, y_train, y_test = digits
    names = np.array(["zero", "one", "two", "three", "four", "five", "six", "seven", "eight",
                      "nine"], dtype=object)
    clf = MLPClassifier(random_state=0).fit(X_train, names[y_train])
    assert set(clf.classes_) == set(names)
    assert clf.predict(X_test).dtype == object
    assert clf.score(X_test, names[y_test]) > 0.95
    assert clf.predict_proba(X_test).shape == (len(X_test), 10)


def test_labels_with_gaps_and_pandas_categoricals():
    pd = pytest.importorskip("pandas")
    X, y = make_classification(200, 6, n_informative=4, n_classes=3, random_state=0)
    gaps = np.array([10, 20, 30])[y]
    clf = MLPClassifier(random_state=0, max_iter=300).fit(X, gaps)
    assert clf.classes_.tolist() == [10, 20, 30] and clf.n_outputs_ == 3
    cats = pd.Series(pd.Categorical(np.array(["a", "b", "c"])[y]))
    frame = pd.DataFrame(X, columns=[f"f{i}" for i in range(6)])
    clf = MLPClassifier(random_state=0, max_iter=300).fit(frame, cats)
    assert clf.feature_names_in_.tolist() == list(frame.columns)
    assert clf.score(frame, cats) > 0.8
    with pytest.raises(ValueError, match="feature names"):
        clf.predict(frame.rename(columns={"f0": "other"}))


def test_binary_and_multilabel_targets():
    X, y = make_classification(300, 8, random_state=0)
    clf = MLPClassifier(random_state=0).fit(X, y)
    assert clf.out_activation_ == "logistic" and clf.n_outputs_ == 1
    assert clf.predict_proba(X).shape == (300, 2)
    Y = np.stack([y, 1 - y, (X[:, 0] > 0).astype(int)], axis=1)
    multi = MLPClassifier(random_state=0, max_iter=300).fit(X, Y)
    assert multi.predict(X).shape == (300, 3) and multi.score(X, Y) > 0.8


def test_multi_output_regression():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(400, 5))
    Y = np.stack([X @ rng.normal(size=5), np.sin(X[:, 0])], axis=1)
    reg = MLPRegressor(random_state=0, max_iter=300).fit(X, Y)
    assert reg.predict(X).shape == (400, 2) and reg.score(X, Y) > 0.9


def test_pipeline_cross_val_and_grid_search(digits):
    X_train, _, y_train, _ = digits
    pipe = make_pipeline(StandardScaler(), MLPClassifier(max_iter=30, random_state=0))
    assert pipe.fit(X_train, y_train).score(X_train, y_train) > 0.95
    scores = cross_val_score(MLPClassifier(max_iter=30, random_state=0), X_train, y_train,
                             cv=3)
    assert scores.mean() > 0.9
    grid = GridSearchCV(MLPClassifier(max_iter=20, random_state=0),
                        {"hidden_layer_sizes": [(16,), (64,)]}, cv=2, n_jobs=2)
    grid.fit(X_train, y_train)
    assert grid.best_params_ in ({"hidden_layer_sizes": (16,)}, {"hidden_layer_sizes": (64,)})
    assert grid.best_score_ > 0.85


def test_clone_pickle_and_joblib_round_trips(tmp_path, digits):
    joblib = pytest.importorskip("joblib")
    X_train, X_test, y_train, _ = digits
    clf = MLPClassifier(hidden_layer_sizes=(32,), max_iter=20, random_state=0)
    twin = clone(clf)
    assert twin.get_params() == clf.get_params() and not hasattr(twin, "net_")
    clf.fit(X_train, y_train)
    again = pickle.loads(pickle.dumps(clf))
    np.testing.assert_array_equal(again.predict_proba(X_test), clf.predict_proba(X_test))
    joblib.dump(clf, tmp_path / "clf.joblib")
    loaded = joblib.load(tmp_path / "clf.joblib")
    np.testing.assert_array_equal(loaded.predict(X_test), clf.predict(X_test))


def test_an_unpickled_estimator_continues_its_optimizer(digits):
    """As scikit-learn's: Adam's moments are pickled, so partial_fit goes on the same."""
    X_train, _, y_train, _ = digits
    clf = MLPClassifier(hidden_layer_sizes=(16,), max_iter=3, random_state=0).fit(
        X_train, y_train)
    again = pickle.loads(pickle.dumps(clf))
    for model in (clf, again):
        model.partial_fit(X_train, y_train)
    np.testing.assert_array_equal(again.coefs_[0], clf.coefs_[0])
    assert again.t_ == clf.t_ and again.loss_curve_ == clf.loss_curve_


def test_sample_weight_equals_repeated_rows():
    X, y = make_classification(60, 5, random_state=1)
    w = np.random.default_rng(0).integers(0, 4, size=60)
    common = dict(hidden_layer_sizes=(8,), max_iter=40, random_state=0, tol=0,
                  batch_size=1000, dtype="float64", shuffle=False)
    weighted = MLPClassifier(**common).fit(X, y, sample_weight=w)
    repeated = MLPClassifier(**common).fit(np.repeat(X, w, axis=0), np.repeat(y, w))
    np.testing.assert_allclose(weighted.predict_proba(X), repeated.predict_proba(X),
                               rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(weighted.loss_curve_, repeated.loss_curve_, rtol=1e-9)


def test_balanced_class_weight_lifts_minority_recall():
    X, y = make_classification(1000, 10, weights=[0.95], flip_y=0, class_sep=0.5,
                               random_state=0)
    X_train, X_test, y_train, y_test = train_test_split(X, y, stratify=y, random_state=0)
    recall = {}
    for cw in (None, "balanced"):
        clf = MLPClassifier(hidden_layer_sizes=(16,), max_iter=50, random_state=0,
                            class_weight=cw).fit(X_train, y_train)
        recall[cw] = (clf.predict(X_test)[y_test == 1] == 1).mean()
    assert recall["balanced"] > recall[None] + 0.1


def test_class_weight_dict_by_label():
    X, y = make_classification(200, 5, random_state=0)
    labels = np.array(["no", "yes"])[y]
    clf = MLPClassifier(max_iter=20, random_state=0, class_weight={"yes": 5.0}).fit(X, labels)
    assert (clf.predict(X) == "yes").mean() > (labels == "yes").mean()
    with pytest.raises(ValueError, match="not classes"):
        MLPClassifier(max_iter=2, class_weight={"maybe": 2.0}).fit(X, labels)


def test_partial_fit_over_minibatches_learns_digits(digits):
    X_train, X_test, y_train, y_test = digits
    clf = MLPClassifier(random_state=0)
    with pytest.raises(ValueError, match="classes"):
        clf.partial_fit(X_train[:10], y_train[:10])
    for epoch in range(15):
        for lo in range(0, len(X_train), 100):
            clf.partial_fit(X_train[lo:lo + 100], y_train[lo:lo + 100], classes=np.arange(10))
    assert clf.score(X_test, y_test) > 0.9
    assert clf.net_.training_state.optimizer.t == len(clf.loss_curve_)  # an Adam step a call


def test_solvers_and_learning_rates(digits):
    X_train, X_test, y_train, y_test = digits
    for params in (dict(solver="lbfgs", max_iter=100),
                   dict(solver="sgd", learning_rate_init=0.05, max_iter=60),
                   dict(solver="sgd", learning_rate="adaptive", learning_rate_init=0.05),
                   dict(solver="sgd", learning_rate="invscaling", learning_rate_init=0.5,
                        nesterovs_momentum=False),
                   dict(early_stopping=True, max_iter=100)):
        clf = MLPClassifier(random_state=0, **params).fit(X_train, y_train)
        assert clf.score(X_test, y_test) > 0.9, params
    assert clf.best_validation_score_ == max(clf.validation_scores_)


def test_coefs_act_on_raw_features(digits):
    X_train, X_test, y_train, _ = digits
    clf = MLPClassifier(hidden_layer_sizes=(20,), max_iter=10, random_state=0)
    clf.fit(X_train, y_train)
    hidden = np.maximum(X_test @ clf.coefs_[0] + clf.intercepts_[0], 0)
    logits = hidden @ clf.coefs_[1] + clf.intercepts_[1]
    np.testing.assert_array_equal(logits.argmax(1), clf.predict(X_test))


def test_bad_parameters_name_themselves():
    X, y = make_classification(50, 4, random_state=0)
    for params, match in ((dict(solver="newton"), "solver"), (dict(activation="gelu"),
                          "activation"), (dict(hidden_layer_sizes=(0,)), "hidden_layer_sizes"),
                          (dict(batch_size=0), "batch_size"), (dict(max_iter=0), "max_iter")):
        with pytest.raises(ValueError, match=match):
            MLPClassifier(**params).fit(X, y)
    with pytest.raises(ValueError, match="sample_weight"):
        MLPClassifier(max_iter=2).fit(X, y, sample_weight=np.ones(3))


def test_sparse_csr_input_trains_like_dense_batch_by_batch(digits, monkeypatch):
    sparse = pytest.importorskip("scipy.sparse")
    from fastbp.sparse import SparseRows

    X_train, X_test, y_train, y_test = digits
    densified = []
    real = SparseRows.__getitem__

    def recording(self, rows):
        out = real(self, rows)
        densified.append(out.shape[0])
        return out

    monkeypatch.setattr(SparseRows, "__getitem__", recording)
    params = dict(max_iter=5, random_state=0, dtype="float64", early_stopping=True)
    from_sparse = MLPClassifier(**params).fit(sparse.csr_matrix(X_train), y_train)
    from_dense = MLPClassifier(**params).fit(X_train, y_train)
    np.testing.assert_allclose(from_sparse.predict_proba(sparse.csr_matrix(X_test)),
                               from_dense.predict_proba(X_test), rtol=1e-9, atol=1e-12)
    assert densified and max(densified) <= 200  # one batch (or validation chunk) at a time
    with pytest.raises(ValueError, match="dense"):
        MLPClassifier(solver="lbfgs").fit(sparse.csr_matrix(X_train), y_train)


def test_estimators_take_torch_tensors_as_numpy_arrays():
    torch = pytest.importorskip("torch")
    from fastbp import MLPClassifier

    X, y = load_iris(return_X_y=True)
    params = dict(hidden_layer_sizes=(8,), max_iter=5, random_state=0, backend="numpy")
    ref = MLPClassifier(**params).fit(X, y)
    tensors = MLPClassifier(**params).fit(torch.tensor(X, requires_grad=True), torch.tensor(y))
    np.testing.assert_array_equal(tensors.predict_proba(torch.tensor(X)), ref.predict_proba(X))


def test_integer_pixels_train_like_their_float32_values():
    """uint8 features are validated straight to the model's float32 (not widened to float64
    first): the same fit, bit for bit, as the float32 array of the same values."""
    rng = np.random.default_rng(0)
    X = rng.integers(0, 256, (60, 5), dtype=np.uint8)
    y = (X[:, 0] > 127).astype(int)
    fits = [MLPClassifier(hidden_layer_sizes=(4,), max_iter=3, random_state=0,
                          backend="numpy").fit(data, y) for data in (X, X.astype(np.float32))]
    for a, b in zip(fits[0].coefs_, fits[1].coefs_):
        np.testing.assert_array_equal(a, b)
    assert fits[0]._input_dtypes()[0] == np.float32
    assert MLPClassifier(dtype="float64")._input_dtypes()[0] == np.float64


def test_uint8_pixels_are_never_copied_whole_into_floats():
    """The estimator passes uint8 pixels to training unconverted, which converts each batch:
    a fit's peak of traced memory stays below the float32 copy of the set (4x its bytes)."""
    import tracemalloc

    rng = np.random.default_rng(0)
    X = rng.integers(0, 256, (20000, 200), dtype=np.uint8)
    y = (X[:, 0] > 127).astype(int)
    estimator = MLPClassifier(hidden_layer_sizes=(8,), max_iter=1, random_state=0,
                              backend="numpy")
    estimator.fit(X[:500], y[:500])  # imports and first calls outside the measurement
    tracemalloc.start()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            estimator.fit(X, y)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2 * X.nbytes, f"peak {peak / 1e6:.1f} MB for {X.nbytes / 1e6:.1f} MB of pixels"
