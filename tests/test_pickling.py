"""pickle, copy.deepcopy and joblib of an MLP: the same model, optimizer state included."""

import copy
import pickle
import threading

import joblib
import numpy as np
import pytest

import fastbp
from fastbp import pickling
from fastbp.data import load

from tests.backends import usable_backends

DIGITS = load("digits")
X, Y = DIGITS.X[:300], DIGITS.y[:300]


def fitted(backend, optimizer="adam", **options):
    net = fastbp.MLP([64, 16, 10], backend=backend, seed=1, **options)
    net.fit(X, Y, epochs=2, batch_size=50, optimizer=optimizer, verbose=0)
    return net


@pytest.mark.parametrize("backend", usable_backends())
@pytest.mark.parametrize("duplicate", ["pickle", "deepcopy", "joblib"])
def test_duplicate_continues_exactly_as_the_original(backend, duplicate, tmp_path):
    net = fitted(backend)
    if duplicate == "pickle":
        twin = pickle.loads(pickle.dumps(net))
    elif duplicate == "deepcopy":
        twin = copy.deepcopy(net)
    else:
        joblib.dump(net, tmp_path / "net.joblib")
        twin = joblib.load(tmp_path / "net.joblib")
    assert twin is not net and twin.backend.name == net.backend.name
    assert twin.config == net.config
    np.testing.assert_array_equal(twin.predict(X), net.predict(X))
    # Adam's moments, its step count and the shuffling generator came along: a continued
    # fit of each takes the same steps
    assert twin.training_state.optimizer.t == net.training_state.optimizer.t > 0
    for model in (net, twin):
        model.partial_fit(X, Y, batch_size=50)
    np.testing.assert_array_equal(twin.get_flat_params(), net.get_flat_params())


def test_a_fresh_fit_of_a_copy_differs_from_continuing_it():
    """The test above can fail: without the optimizer state a continued fit starts Adam anew."""
    net = fitted("numpy")
    twin = copy.deepcopy(net)
    twin.training_state = None
    for model in (net, twin):
        model.partial_fit(X, Y, batch_size=50)
    assert not np.array_equal(twin.get_flat_params(), net.get_flat_params())


def test_the_copy_is_independent_of_the_original():
    net = fitted("numpy")
    before, moments = net.get_flat_params(), net.training_state.optimizer.m.copy()
    twin = copy.deepcopy(net)
    twin.partial_fit(X, Y, batch_size=50)
    np.testing.assert_array_equal(net.get_flat_params(), before)
    np.testing.assert_array_equal(net.training_state.optimizer.m, moments)
    assert not np.array_equal(twin.get_flat_params(), before)
    assert twin.training_state.optimizer.t > net.training_state.optimizer.t


def test_copies_serve_two_threads_at_once():
    """Each copy has its own lock: one thread fits while another predicts on its copy."""
    net = fitted("numpy")
    twin = copy.deepcopy(net)
    errors = []

    def keep_predicting():
        try:
            for _ in range(20):
                twin.predict(X)
        except Exception as exc:  # pragma: no cover - the failure reported below
            errors.append(exc)

    worker = threading.Thread(target=keep_predicting)
    worker.start()
    net.fit(X, Y, epochs=2, verbose=0)
    worker.join()
    assert errors == []


def test_an_unfitted_model_pickles():
    net = fastbp.MLP([4, 3, 2], output="sigmoid", loss="binary_cross_entropy", seed=0,
                     classes=["no", "yes"])
    twin = pickle.loads(pickle.dumps(net))
    assert twin.training_state is None and twin.preprocessor is None
    np.testing.assert_array_equal(twin.get_flat_params(), net.get_flat_params())


def test_the_preprocessor_and_the_auto_choice_come_along():
    scaled = X * np.linspace(1, 1000, 64)   # badly scaled: "auto" standardises
    net = fastbp.MLP([64, 16, 10], seed=0)
    net.fit(scaled, Y, epochs=1, verbose=0)
    for twin in (pickle.loads(pickle.dumps(net)), net.copy()):
        assert twin.auto_decided
        np.testing.assert_array_equal(twin.preprocessor.mean, net.preprocessor.mean)
        np.testing.assert_array_equal(twin.predict(scaled), net.predict(scaled))


def test_a_copy_keeps_the_choice_to_train_on_raw_features():
    """preprocess="auto" chose nothing on well-scaled data; a copy must not choose again on
    other data (it would standardise the copy and not the original)."""
    unit_scale = np.random.default_rng(0).normal(size=X.shape)
    net = fastbp.MLP([64, 16, 10], seed=0)
    net.fit(unit_scale, Y, epochs=1, verbose=0)
    assert net.auto_decided and net.preprocessor is None
    for twin in (pickle.loads(pickle.dumps(net)), net.copy()):
        twin.fit(unit_scale * np.linspace(1, 1000, 64), Y, epochs=1, verbose=0)
        assert twin.preprocessor is None


def test_a_backend_not_usable_here_falls_back_to_auto(monkeypatch):
    data = pickle.dumps(fitted("numpy"))
    real_probe = pickling.probe
    monkeypatch.setattr(pickling, "probe", lambda name: (False, "no GPU answers")
                        if name == "numpy" else real_probe(name))
    with pytest.warns(RuntimeWarning, match="pickled on backend 'numpy'.*no GPU answers"):
        twin = pickle.loads(data)
    assert twin.backend.name == fastbp.get_backend("auto").name
    twin.partial_fit(X, Y)   # the optimizer state moved to the new backend
    assert twin.training_state.key[-1] == twin.backend.name


def test_a_model_fitted_with_a_lambda_schedule_pickles_without_it():
    net = fastbp.MLP([64, 16, 10], backend="numpy", seed=0)
    net.fit(X, Y, epochs=1, verbose=0, optimizer="sgd", lr=0.02,
            lr_schedule=lambda epoch: 0.02 / epoch)
    twin = pickle.loads(pickle.dumps(net))
    kept = twin.training_state.options
    assert "lr_schedule" not in kept and kept["lr"] == 0.02 and kept["optimizer"] == "sgd"
    assert "lr_schedule" in net.training_state.options   # the original keeps it
