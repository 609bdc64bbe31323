"""The training features behind the estimators, through MLP.fit: weights, Nesterov,
schedules, callbacks, early stopping, metrics, continued fits."""

import math

import numpy as np
import pytest

import fastbp
from fastbp import metrics, schedules
from fastbp.callbacks import Callback, EarlyStopping, Plateau
from fastbp.data import load
from fastbp.optim import Nesterov

from backends import usable_backends


def blobs(n=120, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, size=n)
    X = rng.normal(size=(n, 4)) + np.eye(3, 4)[y] * 3
    return X, y


def net(**kw):
    return fastbp.MLP([4, 8, 3], seed=0, backend="numpy", dtype="float64", **kw)


def test_sample_weight_equals_repeated_rows_in_fit():
    X, y = blobs()
    w = np.random.default_rng(1).integers(0, 4, size=len(X))
    a, b = net(), net()
    ha = a.fit(X, y, sample_weight=w, batch_size=None, epochs=20, lr=0.05, verbose=0,
               shuffle=False)
    hb = b.fit(np.repeat(X, w, axis=0), np.repeat(y, w), batch_size=None, epochs=20, lr=0.05,
               verbose=0, shuffle=False)
    np.testing.assert_allclose(a.get_flat_params(), b.get_flat_params(), rtol=1e-10,
                               atol=1e-12)
    np.testing.assert_allclose(ha.train_loss, hb.train_loss, rtol=1e-10)


def test_weight_rows_is_the_weighted_mean_delta():
    be = fastbp.get_backend("numpy")
    x = np.arange(6.0).reshape(3, 2)
    w = np.array([[1.0], [0.0], [3.0]])
    total = np.zeros(1)
    be.weight_rows(x, w, total)
    np.testing.assert_allclose(x, np.array([[0, 1], [0, 0], [12, 15]]) / 4)
    assert total[0] == 4


@pytest.mark.parametrize("bad, match", [(np.ones(3), "shape"), (-np.ones(120), "non-neg"),
                                        (np.zeros(120), "all zero")])
def test_bad_sample_weight(bad, match):
    X, y = blobs()
    model = net()
    before = model.get_flat_params()
    with pytest.raises(ValueError, match=match):
        model.fit(X, y, sample_weight=bad, verbose=0)
    np.testing.assert_array_equal(model.get_flat_params(), before)


def test_balanced_class_weight_in_fit():
    rng = np.random.default_rng(0)
    y = (rng.random(600) < 0.08).astype(int)
    X = rng.normal(size=(600, 4)) + y[:, None] * 0.8
    recalls = {}
    for cw in (None, "balanced"):
        model = fastbp.MLP([4, 8, 2], seed=0, backend="numpy")
        model.fit(X, y, class_weight=cw, epochs=30, optimizer="adam", lr=0.01, verbose=0)
        recalls[cw] = (model.predict(X)[y == 1] == 1).mean()
    assert recalls["balanced"] > recalls[None] + 0.2
    with pytest.raises(ValueError, match="class index"):
        net().fit(*blobs(), class_weight={7: 2.0}, verbose=0)


def test_nesterov_is_the_look_ahead_step():
    be = fastbp.get_backend("numpy")
    p, g, v = np.array([1.0, 2.0]), np.array([0.5, -1.0]), np.array([0.1, 0.2])
    opt = Nesterov(be, 2, "float64", lr=0.1, momentum=0.9)
    opt.velocity[:] = v
    expected_v = 0.9 * v - 0.1 * g
    expected_p = p + 0.9 * expected_v - 0.1 * g
    opt.step(p, g)
    np.testing.assert_allclose(opt.velocity, expected_v)
    np.testing.assert_allclose(p, expected_p)
    X, y = blobs()
    history = net().fit(X, y, optimizer="nesterov", lr=0.05, epochs=20, verbose=0)
    assert history.train_loss[-1] < 0.2


class Run:
    """A stand-in for the trainer, as schedules see it."""

    def __init__(self, lr=0.1):
        self.lr = self.initial_lr = lr
        self.epochs_done = self.samples_seen = 0


@pytest.mark.parametrize("schedule, expected", [
    (schedules.StepDecay(step_size=2, gamma=0.5), [0.1, 0.1, 0.05, 0.05, 0.025]),
    (schedules.Cosine(period=4), [0.1 * (1 + math.cos(math.pi * e / 4)) / 2 for e in range(5)]),
    (schedules.FromFunction(lambda e: 1.0 / e), [1.0, 0.5, 1 / 3, 0.25, 0.2]),
    (schedules.Constant(), [0.1] * 5),
])
def test_schedules_set_the_documented_rate(schedule, expected):
    run = Run()
    schedule.on_train_begin(run)
    seen = [run.lr]
    for epoch in range(1, 5):
        schedule.on_epoch_end(epoch, {"loss": 1.0}, run)
        seen.append(run.lr)
    np.testing.assert_allclose(seen, expected, atol=1e-12)  # cosine floors at 1e-12 > 0


def test_invscaling_and_adaptive_follow_scikit_learn():
    run = Run()
    inv = schedules.InvScaling(power_t=0.5)
    run.samples_seen = 99
    inv.on_epoch_end(1, {}, run)
    assert run.lr == pytest.approx(0.1 / 100 ** 0.5)
    adaptive, run = schedules.Adaptive(), Run(lr=1e-5)
    assert adaptive.lower(run) and run.lr == pytest.approx(2e-6)
    assert adaptive.lower(run) and run.lr == pytest.approx(4e-7)
    assert not adaptive.lower(run)


def test_reduce_on_plateau_lowers_after_patience():
    run, plateau = Run(), schedules.ReduceOnPlateau("loss", factor=0.5, patience=2, min_delta=0)
    plateau.on_train_begin(run)
    for epoch, loss in enumerate([1.0, 0.9, 0.9, 0.9, 0.95], start=1):
        plateau.on_epoch_end(epoch, {"loss": loss}, run)
    assert run.lr == pytest.approx(0.05)


def test_schedule_reaches_the_fit_and_history():
    X, y = blobs()
    h = net().fit(X, y, lr=0.1, lr_schedule=schedules.StepDecay(step_size=1, gamma=0.5),
                  epochs=3, verbose=0)
    np.testing.assert_allclose(h.lr, [0.1, 0.05, 0.025])
    h = net().fit(X, y, lr=0.1, lr_schedule=lambda e: 0.01 * e, epochs=3, verbose=0)
    np.testing.assert_allclose(h.lr, [0.01, 0.02, 0.03])
    with pytest.raises(ValueError, match="lr_schedule"):
        net().fit(X, y, lr_schedule="warmup", verbose=0)


def test_callback_sees_the_model_and_changes_the_rate():
    class Halve(Callback):
        def on_epoch_end(self, epoch, logs, run):
            assert run.net is model
            run.lr = run.lr / 2
            return epoch == 3

    X, y = blobs()
    model = net()
    h = model.fit(X, y, lr=0.08, epochs=10, callbacks=[Halve()], verbose=0)
    assert len(h) == 3 and h.lr == [0.08, 0.04, 0.02]


def test_early_stopping_monitor_min_delta_restore_best():
    X, y = blobs(300)
    model = net()
    stop = EarlyStopping("val_accuracy", min_delta=0.5, patience=2)
    h = model.fit(X, y, epochs=50, validation_split=0.3, metrics=["accuracy"],
                  callbacks=[stop], verbose=0, lr=0.05)
    assert len(h) == 3 and h.stopped_early  # nothing improves by 0.5 after epoch 1
    assert h.best_epoch == int(np.argmax(h.metrics["val_accuracy"])) + 1
    with pytest.raises(ValueError, match="monitor='nope'"):
        net().fit(X, y, epochs=2, callbacks=[EarlyStopping("nope")], verbose=0)


def test_metrics_in_the_history():
    X, y = blobs(300)
    h = net().fit(X, y, epochs=3, validation_split=0.3, verbose=0,
                  metrics=["accuracy", "f1", "roc_auc", "top_2_accuracy"])
    for name in ("val_accuracy", "val_f1", "val_roc_auc", "val_top_2_accuracy"):
        assert len(h.metrics[name]) == 3 and 0 <= h.metrics[name][-1] <= 1
    assert h.metrics["val_accuracy"] == h.val_score
    with pytest.raises(ValueError, match="metrics"):
        net().fit(X, y, metrics=["precision"], verbose=0)


def test_metric_values_match_scikit_learn():
    sk = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    outputs = rng.random((200, 3))
    outputs[:, 0] = np.round(outputs[:, 0], 1)  # ties
    labels = rng.integers(0, 3, size=200)
    targets = np.eye(3)[labels]
    assert metrics.f1(outputs, targets, "classification") == pytest.approx(
        sk.f1_score(labels, outputs.argmax(1), average="macro"))
    assert metrics.roc_auc(outputs, targets, "classification") == pytest.approx(
        np.mean([sk.roc_auc_score(labels == k, outputs[:, k]) for k in range(3)]))
    assert metrics.top_k_accuracy(2)(outputs, targets, "classification") == pytest.approx(
        sk.top_k_accuracy_score(labels, outputs, k=2))
    assert metrics.r2(outputs, targets, "regression") == pytest.approx(
        sk.r2_score(targets, outputs))


def test_partial_fit_continues_and_fit_resets_the_optimizer():
    X, y = blobs()
    model = net()
    model.fit(X, y, optimizer="adam", lr=0.01, epochs=2, batch_size=40, verbose=0)
    first = model.training_state.optimizer
    assert first.t == 6
    model.partial_fit(X, y, optimizer="adam", lr=0.01, batch_size=40)
    assert model.training_state.optimizer is first and first.t == 9
    assert model.training_state.epochs_done == 3
    model.fit(X, y, optimizer="adam", lr=0.01, epochs=1, batch_size=40, verbose=0)
    assert model.training_state.optimizer is not first
    assert model.training_state.optimizer.t == 3


def test_defaults_learn_unscaled_data():
    ds = load("breast_cancer")
    X_train, X_test, y_train, y_test = fastbp.data.train_test_split(ds.X, ds.y, seed=0)
    model = fastbp.MLP([ds.X.shape[1], 100, 2], seed=0)
    model.fit(X_train, y_train, verbose=0)
    assert model.score(X_test, y_test) > 0.9


@pytest.mark.parametrize("options, error, match", [
    (dict(class_weight="even"), TypeError, "class_weight"),
    (dict(class_weight={0: -1.0}), ValueError, "class_weight"),
    (dict(beta1=1.0), ValueError, "beta1"),
    (dict(epsilon=0), ValueError, "epsilon"),
    (dict(lr_schedule=3), TypeError, "lr_schedule"),
    (dict(callbacks=[3]), TypeError, "callbacks"),
    (dict(metrics=[3]), ValueError, "metrics"),
    (dict(lr_schedule=lambda e: -1.0), ValueError, "learning rate"),
])
def test_bad_training_options_leave_the_model_unchanged(options, error, match):
    X, y = blobs()
    model = net()
    before = model.get_flat_params()
    with pytest.raises(error, match=match):
        model.fit(X, y, epochs=2, verbose=0, **options)
    np.testing.assert_array_equal(model.get_flat_params(), before)


def test_schedule_parameters_are_checked():
    for make, match in ((lambda: schedules.StepDecay(step_size=0), "step_size"),
                        (lambda: schedules.Cosine(period=0), "period"),
                        (lambda: schedules.ReduceOnPlateau(factor=1.5), "factor"),
                        (lambda: EarlyStopping(patience=0), "patience"),
                        (lambda: EarlyStopping(monitor=""), "monitor")):
        with pytest.raises((ValueError, TypeError), match=match):
            make()


def test_a_resumed_fit_continues_the_schedule(tmp_path):
    X, y = blobs()
    options = dict(lr=0.1, lr_schedule=schedules.StepDecay(step_size=1, gamma=0.5),
                   verbose=0, optimizer="sgd", checkpoint=tmp_path / "run.ckpt")
    net().fit(X, y, epochs=2, **options)
    resumed = net().fit(X, y, epochs=4, resume=True, **options)
    np.testing.assert_allclose(resumed.lr, [0.1, 0.05, 0.025, 0.0125])


@pytest.mark.parametrize("backend_name", usable_backends())
def test_weights_schedules_and_nesterov_agree_on_every_backend(backend_name):
    rng = np.random.default_rng(0)
    X, y, w = rng.normal(size=(24, 3)), rng.integers(0, 2, 24), rng.integers(0, 3, 24)
    results = []
    for name in ("numpy", backend_name):
        model = fastbp.MLP([3, 4, 2], seed=0, backend=name, dtype="float64")
        history = model.fit(X, y, sample_weight=w, epochs=3, batch_size=8, verbose=0,
                            lr_schedule="cosine", optimizer="nesterov", lr=0.1)
        results.append((model.get_flat_params(), history.train_loss))
    np.testing.assert_allclose(results[1][0], results[0][0], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(results[1][1], results[0][1], rtol=1e-9)


def test_lbfgs_limits_and_its_exit_status_in_the_history():
    X, y = blobs()
    limited = net().fit(X, y, optimizer="lbfgs", epochs=500, max_fun=3, verbose=0)
    assert len(limited) <= 3 and limited.solver_status == 1
    assert "EVALUATIONS" in limited.solver_message
    loose = net().fit(X, y, optimizer="lbfgs", epochs=500, gtol=1e3, verbose=0)
    assert len(loose) == 0 and loose.solver_status == 0 and math.isfinite(loose.solver_loss)
    with pytest.raises(ValueError, match="max_fun"):
        net().fit(X, y, optimizer="lbfgs", max_fun=0, verbose=0)


def test_validation_split_keeps_the_held_out_weights_for_the_score():
    from fastbp.train import split_data

    X, y = blobs()
    model = net()
    Y = model.targets(y, len(X), "y")
    w = np.arange(len(X), dtype=float)
    X_tr, _, w_tr, (X_val, _, w_val), order = split_data(model, X, Y, w, None, 0.25)
    assert len(X_val) == len(w_val) == 30 and len(w_tr) == len(X_tr) == 90
    np.testing.assert_array_equal(w_val, w[order[:30]])
    np.testing.assert_array_equal(X_val, X[order[:30]])


def test_early_stopping_patience_may_be_infinite():
    X, y = blobs()
    stop = EarlyStopping("loss", min_delta=1e9, patience=math.inf, restore_best=False)
    assert len(net().fit(X, y, epochs=12, callbacks=[stop], verbose=0)) == 12


def test_partial_fit_continues_with_the_step_options_of_the_fit_before():
    """fit(optimizer="sgd", lr=0.05, ...) then partial_fit(X, y): the same SGD, not fit's
    defaults (Adam at 1e-3, a fresh optimizer)."""
    X = np.random.default_rng(0).normal(size=(64, 3))
    y = (X[:, 0] > 0).astype(int)
    options = dict(optimizer="momentum", lr=0.05, batch_size=16, weight_decay=1e-3)
    net = fastbp.MLP([3, 5, 2], backend="numpy", seed=0)
    twin = fastbp.MLP([3, 5, 2], backend="numpy", seed=0)
    net.fit(X, y, epochs=2, verbose=0, **options)
    twin.fit(X, y, epochs=3, verbose=0, **options)
    optimizer = net.training_state.optimizer
    net.partial_fit(X, y)
    assert net.training_state.optimizer is optimizer and net.training_state.epochs_done == 3
    np.testing.assert_array_equal(net.get_flat_params(), twin.get_flat_params())
    net.partial_fit(X, y, lr=0.01)   # given: this call's, with a fresh optimizer
    assert net.training_state.optimizer is not optimizer
    assert net.training_state.optimizer.lr == 0.01


def test_min_delta_counts_from_the_last_real_improvement():
    """Keras's rule: 1.0, 0.95, 0.90, 0.85 with min_delta=0.1 improved by 0.15 in three
    epochs, so patience 3 does not run out (scikit-learn's tol rule, every_gain, does)."""
    def plateau_after(values, every_gain):
        plateau = Plateau("val_loss", 0.1, "auto", every_gain=every_gain)
        for value in values:
            plateau.update({"val_loss": value})
        return plateau

    keras = plateau_after([1.0, 0.95, 0.90, 0.85], every_gain=False)
    assert keras.wait == 0 and keras.best == 0.85 and keras.best_value == 0.85
    sklearn_rule = plateau_after([1.0, 0.95, 0.90, 0.85], every_gain=True)
    assert sklearn_rule.wait == 3 and sklearn_rule.best_value == 0.85
    stalled = plateau_after([1.0, 0.95, 0.99], every_gain=False)
    assert (stalled.wait, stalled.best, stalled.best_value) == (2, 1.0, 0.95)


def test_adaptive_lowers_the_rate_where_early_stopping_would_stop():
    X, y = blobs(300)
    h = net().fit(X, y, epochs=40, lr=0.2, validation_split=0.3, early_stopping=2,
                  lr_schedule="adaptive", verbose=0)
    lowered = [b / a for a, b in zip(h.lr, h.lr[1:]) if b != a]
    assert lowered and all(ratio == pytest.approx(0.2) for ratio in lowered), h.lr
    with pytest.raises(ValueError, match="'adaptive' lowers the rate.*early_stopping=N"):
        net().fit(X, y, epochs=2, lr_schedule="adaptive", verbose=0)


def test_a_plateau_schedule_counts_on_across_partial_fits():
    """partial_fit continues the schedule's and early stopping's counts: one epoch at a
    time lowers the rate as one fit of as many epochs does."""
    X, y = blobs(300)

    def schedule():
        return schedules.ReduceOnPlateau(monitor="val_loss", factor=0.5, patience=2,
                                         min_delta=0.05)

    whole = net().fit(X, y, epochs=12, lr=0.1, validation_data=(X, y), lr_schedule=schedule(),
                      verbose=0)
    stepped = net()
    stepped.fit(X, y, epochs=1, lr=0.1, validation_data=(X, y), lr_schedule=schedule(),
                verbose=0)
    rates = [stepped.partial_fit(X, y, validation_data=(X, y)).lr[0] for _ in range(11)]
    assert min(whole.lr) < 0.1 and [whole.lr[0]] + rates == whole.lr


@pytest.mark.parametrize("options,match", [
    (dict(lr_schedule="plateau"), "watches 'val_loss', which this run does not log"),
    (dict(callbacks=[EarlyStopping("val_accuracy")], validation_split=0.2),
     "watches 'val_accuracy'"),
    (dict(metrics=["accuracy"]), "metrics are computed on the validation set"),
    (dict(metrics=[lambda o, t, task: 0.0, lambda o, t, task: 1.0], validation_split=0.2),
     "two metrics logged as 'val_<lambda>'"),
    (dict(metrics=["r2"], validation_split=0.2), "'r2' is defined for regression"),
    (dict(metrics=["top_3_accuracy"], validation_split=0.2), "over 3 classes is always 1"),
    (dict(optimizer="lbfgs", lr_schedule="cosine"), "lbfgs' takes no learning rate"),
])
def test_what_a_run_watches_is_checked_before_it_starts(options, match):
    X, y = blobs()
    model = net()
    before, generator = model.get_flat_params(), model.rng.bit_generator.state
    with pytest.raises(ValueError, match=match):
        model.fit(X, y, epochs=3, verbose=0, **options)
    np.testing.assert_array_equal(model.get_flat_params(), before)
    assert model.rng.bit_generator.state == generator and model.training_state is None


def test_scipy_sparse_features_fit_predict_and_validate_as_dense():
    sparse = pytest.importorskip("scipy.sparse")
    X, y = blobs()
    X[X < 0.5] = 0.0
    dense, sparse_net = net(), net()
    expected = dense.fit(X, y, epochs=2, validation_data=(X, y), verbose=0)
    history = sparse_net.fit(sparse.csr_matrix(X), y, epochs=2,
                             validation_data=(sparse.csr_array(X), y), verbose=0)
    np.testing.assert_allclose(sparse_net.get_flat_params(), dense.get_flat_params(),
                               rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(history.val_loss, expected.val_loss, rtol=1e-9)
    for matrix in (sparse.csr_matrix(X), sparse.csc_matrix(X)):
        np.testing.assert_allclose(sparse_net.predict_proba(matrix), dense.predict_proba(X),
                                   rtol=1e-9)
        assert sparse_net.score(matrix, y) == dense.score(X, y)
    with pytest.raises(ValueError, match="must have 4 features"):
        sparse_net.predict(sparse.csr_matrix(X[:, :3]))


@pytest.mark.parametrize("options,match", [
    (dict(optimizer="lbfgs"), "lbfgs' is full-batch and needs dense X"),
    (dict(model=dict(preprocess="pca")), "preprocess='pca' needs dense features"),
])
def test_what_sparse_input_cannot_train_with_is_refused_first(options, match):
    sparse = pytest.importorskip("scipy.sparse")
    X, y = blobs()
    model = net(**options.pop("model", {}))
    generator = model.rng.bit_generator.state
    with pytest.raises(ValueError, match=match):
        model.fit(sparse.csr_matrix(X), y, epochs=1, validation_split=0.2, verbose=0,
                  **options)
    assert model.rng.bit_generator.state == generator and model.preprocessor is None
    assert not model.auto_decided


def test_a_bad_class_weight_is_refused_before_the_split_draws_rows():
    X, y = blobs()
    model = net()
    generator = model.rng.bit_generator.state
    with pytest.raises((ValueError, TypeError), match="class_weight"):
        model.fit(X, y, epochs=1, validation_split=0.2, class_weight={5: 1.0}, verbose=0)
    assert model.rng.bit_generator.state == generator
