"""Class 5: resume continues the same run, or refuses naming why; a failed resume leaves the
model exactly as it was; the saved shuffle and split orders are validated; a second writer of
the same checkpoint is refused."""

import json
import signal
import threading

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import fastbp
from edits import rewrite
from fastbp import checkpoint as checkpoints
from fastbp import fit_options
from fastbp.files import FileFormatError

RNG = np.random.default_rng(0)
X = RNG.normal(size=(60, 4))
Y = (X[:, 0] > 0).astype(int) + (X[:, 1] > 0.5)
OPTIONS = dict(epochs=3, batch_size=16, lr=0.01, optimizer="adam", verbose=0)


def net(seed=0, **kwargs):
    return fastbp.MLP([4, 6, 3], backend="numpy", dtype="float64", seed=seed, **kwargs)


def checkpointed(tmp_path, stop_after=2, **options):
    """A checkpoint after ``stop_after`` of the epochs (a callback stops the run)."""
    path = tmp_path / "run.ckpt"
    opts = {**OPTIONS, **options}
    net(**opts.pop("model", {})).fit(X, Y, checkpoint=path, callbacks=[
        lambda epoch, logs: epoch == stop_after], **opts)
    return path


def state(model):
    pre = model.preprocessor
    return (model.get_flat_params(), json.dumps(model.rng.bit_generator.state),
            None if pre is None else (pre.mean.copy(), pre.std.copy()))


def assert_unchanged(before, model):
    after = state(model)
    np.testing.assert_array_equal(before[0], after[0])
    assert before[1] == after[1]
    assert (before[2] is None) == (after[2] is None)


@pytest.mark.parametrize("change,message", [
    ({"X": X[:50], "Y": Y[:50]}, "other train data"),
    ({"X": X + 1e-9}, "other train data"),
    ({"batch_size": 8}, "batch_size=16, this fit uses batch_size=8"),
    ({"shuffle": False}, "shuffle=True"),
    ({"lr": 0.02}, "resume='new_lr' continues"),
    ({"weight_decay": 1e-3}, "weight_decay"),
    ({"optimizer": "sgd"}, "optimizer='adam'"),
    ({"validation_split": 0.2}, "validation_split"),
    ({"dropout": 0.1}, "dropout"),
])
def test_resume_with_other_data_or_options_is_refused(tmp_path, change, message):
    path = checkpointed(tmp_path)
    change = dict(change)
    data_X, data_Y = change.pop("X", X), change.pop("Y", Y)
    fresh = net()
    before = state(fresh)
    with pytest.raises(ValueError, match=message):
        fresh.fit(data_X, data_Y, checkpoint=path, resume=True, **{**OPTIONS, **change})
    assert_unchanged(before, fresh)


def test_new_lr_override_resumes_with_this_lr(tmp_path):
    path = checkpointed(tmp_path)
    history = net().fit(X, Y, checkpoint=path, resume="new_lr", **{**OPTIONS, "lr": 0.02})
    assert history.epoch == [1, 2, 3]


def test_more_epochs_may_continue_a_run(tmp_path):
    path = checkpointed(tmp_path, stop_after=3)
    assert net().fit(X, Y, checkpoint=path, resume=True,
                     **{**OPTIONS, "epochs": 5}).epoch == [1, 2, 3, 4, 5]


def test_seed_none_with_validation_split_resumes_on_the_same_split(tmp_path):
    opts = {**OPTIONS, "validation_split": 0.25, "epochs": 4}
    reference = fastbp.MLP([4, 6, 3], backend="numpy", dtype="float64", seed=None)
    theta0 = reference.get_flat_params()
    state0 = reference.rng.bit_generator.state
    path = tmp_path / "run.ckpt"
    reference.fit(X, Y, checkpoint=path, callbacks=[lambda e, _: e == 2], **opts)
    resumed = fastbp.MLP([4, 6, 3], backend="numpy", dtype="float64", seed=None)
    history = resumed.fit(X, Y, checkpoint=path, resume=True, **opts)
    straight = fastbp.MLP([4, 6, 3], backend="numpy", dtype="float64", seed=None)
    straight.set_flat_params(theta0)
    straight.rng.bit_generator.state = state0
    expected = straight.fit(X, Y, **opts)
    assert history.val_loss == expected.val_loss
    np.testing.assert_array_equal(resumed.get_flat_params(), straight.get_flat_params())


def test_a_checkpoint_of_a_preprocessed_model_fails_without_changing_it(tmp_path):
    path = checkpointed(tmp_path, model={"preprocess": "standardize"})
    fresh = net(preprocess="standardize")
    before = state(fresh)
    with pytest.raises(ValueError, match="batch_size"):
        fresh.fit(X, Y, checkpoint=path, resume=True, **{**OPTIONS, "batch_size": 4})
    assert_unchanged(before, fresh)
    assert fresh.preprocessor is None


def mid_epoch_checkpoint(tmp_path, monkeypatch):
    """A checkpoint as a Ctrl-C in the middle of epoch 2 writes it (row 32 of 60)."""
    path = tmp_path / "run.ckpt"
    trainers = []

    def spy(p, trainer, position):
        trainers.append(trainer)
        checkpoints.save(p, trainer, position)

    monkeypatch.setattr("fastbp.trainer.checkpoint_save", spy)
    net().fit(X, Y, checkpoint=path, callbacks=[lambda e, _: e == 1], **OPTIONS)
    order = np.random.default_rng(5).permutation(60)
    checkpoints.save(path, trainers[-1], checkpoints.Position(1, 32, order, 1.5))
    return path


@pytest.mark.parametrize("edit,message", [
    (lambda a: a.update(order=np.arange(60) + 1000), "order must be a permutation"),
    (lambda a: a.update(order=np.zeros(60, dtype=np.int64)), "order must be a permutation"),
    (lambda a: a.update(order=np.arange(59)), "order must be a permutation"),
    (lambda a: a.update(params=np.zeros(3)), r"'params' has shape \(3,\)"),
    (lambda a: a.update(params=np.full(a["params"].shape, np.nan)), "params holds NaN"),
    (lambda a: a.pop("opt_m"), "optimizer state"),
    (lambda a: a.update(junk=np.zeros(1)), r"unexpected arrays \['junk'\]"),
])
def test_corrupt_checkpoint_arrays_are_refused_and_change_nothing(tmp_path, monkeypatch, edit,
                                                                  message):
    path = mid_epoch_checkpoint(tmp_path, monkeypatch)
    rewrite(path, edit_arrays=edit)
    fresh = net()
    before = state(fresh)
    with pytest.raises(FileFormatError, match=message):
        fresh.fit(X, Y, checkpoint=path, resume=True, **OPTIONS)
    assert_unchanged(before, fresh)


@pytest.mark.parametrize("edit,message", [
    (lambda m: m.update(next_row=31), "next_row must be a multiple"),
    (lambda m: m.update(next_row=600), "next_row"),
    (lambda m: m.update(epoch=-1), "epoch must be an integer"),
    (lambda m: m.update(epoch="1"), "epoch must be an integer"),
    (lambda m: m.update(loss_so_far=float("nan")), "loss_so_far"),
    (lambda m: m.update(rng_state={"bit_generator": "MT19937", "state": 3}), "rng_state"),
    (lambda m: m["history"].update(epoch=[1, 2, 3]), "history"),
    (lambda m: m.update(optimizer_scalars={"t": "x"}), "optimizer_scalars"),
    (lambda m: m.update(optimizer_scalars={"t": -5}), "optimizer_scalars must be step counts"),
    (lambda m: m["history"].update(lr=[None]), "history"),
    (lambda m: m["history"].update(train_loss=["low"]), "history"),
    (lambda m: m["history"].update(best_epoch=7), "history"),
    (lambda m: m["history"].update(metrics={"val_f1": [0.5, 0.6]}), "history"),
    (lambda m: m.update(samples_seen=-1), "samples_seen must be an integer"),
    (lambda m: m.update(version=1), "format version"),
    (lambda m: m["config"].update(sizes=[4, 7, 3]), "another architecture: sizes"),
])
def test_corrupt_checkpoint_meta_is_refused_and_changes_nothing(tmp_path, monkeypatch, edit,
                                                                message):
    path = mid_epoch_checkpoint(tmp_path, monkeypatch)
    rewrite(path, edit_meta=edit)
    fresh = net()
    before = state(fresh)
    with pytest.raises((FileFormatError, ValueError), match=message):
        fresh.fit(X, Y, checkpoint=path, resume=True, **OPTIONS)
    assert_unchanged(before, fresh)


def test_a_valid_mid_epoch_checkpoint_resumes(tmp_path, monkeypatch):
    path = mid_epoch_checkpoint(tmp_path, monkeypatch)
    assert net().fit(X, Y, checkpoint=path, resume=True, **OPTIONS).epoch == [1, 2, 3]


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_mutated_checkpoints_resume_or_fail_clearly_changing_nothing(tmp_path, draw):
    path = tmp_path / "base.ckpt"
    if not path.exists():
        path = checkpointed(tmp_path)
        path.rename(tmp_path / "base.ckpt")
        path = tmp_path / "base.ckpt"
    raw = bytearray(path.read_bytes())
    at = draw.draw(st.integers(0, len(raw) - 1))
    if draw.draw(st.booleans()):
        raw = raw[:at]
    else:
        raw[at] ^= draw.draw(st.integers(1, 255))
    target = tmp_path / "mutated.ckpt"
    target.write_bytes(bytes(raw))
    fresh = net()
    before = state(fresh)
    try:
        fresh.fit(X, Y, checkpoint=target, resume=True, **OPTIONS)
    except (ValueError, OSError):
        assert_unchanged(before, fresh)


def test_a_second_run_writing_the_same_checkpoint_is_refused(tmp_path):
    path = tmp_path / "run.ckpt"
    started, release = threading.Event(), threading.Event()

    def slow(epoch, logs):
        started.set()
        release.wait(30)

    first = threading.Thread(target=lambda: net().fit(X, Y, checkpoint=path, callbacks=[slow],
                                                      **{**OPTIONS, "epochs": 1}))
    first.start()
    started.wait(30)
    try:
        with pytest.raises(RuntimeError, match="being written by another training run"):
            net(1).fit(X, Y, checkpoint=path, **OPTIONS)
    finally:
        release.set()
        first.join(30)
    net(1).fit(X, Y, checkpoint=path, **OPTIONS)  # free again afterwards


def test_resume_needs_a_valid_mode_and_a_writable_checkpoint(tmp_path):
    with pytest.raises(ValueError, match="resume must be one of"):
        net().fit(X, Y, checkpoint=tmp_path / "c", resume="yes", **OPTIONS)
    with pytest.raises(FileNotFoundError, match="no such directory"):
        net().fit(X, Y, checkpoint="/nonexistent/c.ckpt", **OPTIONS)


def test_the_fingerprint_covers_every_fit_option_but_the_listed_ones():
    opts = fit_options.check_options(**OPTIONS)
    fingerprint = checkpoints.fingerprint(opts, X, Y, None)
    import dataclasses

    names = {f.name for f in dataclasses.fields(opts)}
    assert set(fingerprint["options"]) == names - set(checkpoints.UNFINGERPRINTED_OPTIONS)


def test_a_checkpoint_past_the_epochs_says_so_and_what_to_do(tmp_path):
    path = checkpointed(tmp_path, stop_after=3)
    with pytest.raises(ValueError, match=r"is already at epoch 3, past epochs=2: to train on, "
                       r"resume with epochs > 3"):
        net().fit(X, Y, checkpoint=path, resume=True, **{**OPTIONS, "epochs": 2})


def interrupted_and_resumed(tmp_path, stop_after, epochs, **options):
    """A run stopped after ``stop_after`` epochs, then resumed to ``epochs``: its history
    and weights."""
    path = checkpointed(tmp_path, stop_after=stop_after, epochs=epochs, **options)
    resumed = net()
    history = resumed.fit(X, Y, checkpoint=path, resume=True, **{**OPTIONS, **options,
                                                                 "epochs": epochs})
    return history, resumed.get_flat_params()


def assert_same_run(history, params, reference, reference_params):
    assert history.epoch == reference.epoch and history.lr == reference.lr
    assert history.val_loss == reference.val_loss
    assert history.best_epoch == reference.best_epoch
    assert history.stopped_early == reference.stopped_early
    np.testing.assert_array_equal(params, reference_params)


def test_a_resumed_run_stops_early_where_the_uninterrupted_one_did(tmp_path):
    options = dict(validation_split=0.25, early_stopping=3, lr=0.05)
    uninterrupted = net()
    reference = uninterrupted.fit(X, Y, **{**OPTIONS, **options, "epochs": 60})
    stopped = len(reference.epoch)
    assert reference.stopped_early and stopped - reference.best_epoch == 3
    # stop the first part while early stopping has counted two epochs without improvement
    history, params = interrupted_and_resumed(tmp_path, stopped - 1, 60, **options)
    assert_same_run(history, params, reference, uninterrupted.get_flat_params())


def test_a_resumed_run_keeps_the_rate_a_plateau_lowered(tmp_path):
    schedule = fastbp.schedules.ReduceOnPlateau(monitor="loss", factor=0.5, patience=1,
                                                min_delta=0.05)
    options = dict(lr_schedule=schedule, lr=0.05)
    uninterrupted = net()
    reference = uninterrupted.fit(X, Y, **{**OPTIONS, **options, "epochs": 12})
    lowered = [e for e, (a, b) in enumerate(zip(reference.lr, reference.lr[1:]), 2) if b < a]
    assert lowered, reference.lr
    history, params = interrupted_and_resumed(tmp_path, lowered[0], 12, **options)
    assert_same_run(history, params, reference, uninterrupted.get_flat_params())


def test_a_version_2_checkpoint_resumes_with_fresh_counts(tmp_path):
    """A checkpoint of the last release (no learning rate, no callback counts) still resumes."""
    path = checkpointed(tmp_path, validation_split=0.25, early_stopping=3)

    def downgrade(meta):
        meta["version"] = 2
        del meta["lr"], meta["callbacks"]

    rewrite(path, downgrade)
    history = net().fit(X, Y, checkpoint=path, resume=True, validation_split=0.25,
                        early_stopping=3, **OPTIONS)
    assert history.epoch == [1, 2, 3]


@pytest.mark.parametrize("edit", [
    lambda meta: meta.update(lr=-1.0),
    lambda meta: meta.update(lr="fast"),
    lambda meta: meta.update(callbacks={"kind": "EarlyStopping"}),
    lambda meta: meta["callbacks"].append({"kind": "EarlyStopping", "state": {"wait": "x"}}),
])
def test_a_corrupt_learning_rate_or_callback_state_is_refused(tmp_path, edit):
    path = checkpointed(tmp_path, validation_split=0.25, early_stopping=3)
    rewrite(path, edit)
    model = net()
    before = state(model)
    with pytest.raises(FileFormatError, match="lr must be|callbacks must be"):
        model.fit(X, Y, checkpoint=path, resume=True, validation_split=0.25,
                  early_stopping=3, **OPTIONS)
    assert_unchanged(before, model)


def test_a_stop_during_the_last_step_of_an_epoch_resumes(tmp_path, monkeypatch):
    """A Ctrl-C that lands in an epoch's last step (every time, with one batch an epoch)
    finishes the epoch and writes an end-of-epoch checkpoint, which resumes exactly."""
    options = {**OPTIONS, "batch_size": None}
    reference = net()
    reference.fit(X, Y, **options)
    calls = []

    def stop_in_the_second_epoch(self, stop):
        calls.append(1)
        if len(calls) == 2:
            stop.signum = signal.SIGINT
        return stop.signum is not None

    path = tmp_path / "run.ckpt"
    with monkeypatch.context() as patch:
        patch.setattr("fastbp.trainer.Trainer.stop_requested", stop_in_the_second_epoch)
        with pytest.raises(KeyboardInterrupt):
            net().fit(X, Y, checkpoint=path, **options)
    resumed = net()
    assert resumed.fit(X, Y, checkpoint=path, resume=True, **options).epoch == [1, 2, 3]
    np.testing.assert_array_equal(resumed.get_flat_params(), reference.get_flat_params())


def test_resuming_a_run_that_stopped_early_trains_no_more(tmp_path):
    """A job killed after its run stopped early (before --save, say) and run again with
    resume gets the same model, not more epochs."""
    options = {**OPTIONS, "validation_split": 0.25, "early_stopping": 3, "lr": 0.05,
               "epochs": 60}
    path = tmp_path / "run.ckpt"
    first = net()
    done = first.fit(X, Y, checkpoint=path, **options)
    assert done.stopped_early
    again = net()
    history = again.fit(X, Y, checkpoint=path, resume=True, **options)
    assert history.epoch == done.epoch and history.stopped_early
    np.testing.assert_array_equal(again.get_flat_params(), first.get_flat_params())


def test_invscaling_resumes_with_the_samples_seen(tmp_path):
    options = dict(optimizer="sgd", lr=0.1, lr_schedule="invscaling")
    reference = net()
    expected = reference.fit(X, Y, **{**OPTIONS, **options, "epochs": 4})
    history, params = interrupted_and_resumed(tmp_path, 2, 4, **options)
    assert history.lr == expected.lr
    np.testing.assert_array_equal(params, reference.get_flat_params())


def test_a_mid_epoch_checkpoint_past_the_epochs_is_refused(tmp_path, monkeypatch):
    path = mid_epoch_checkpoint(tmp_path, monkeypatch)   # inside epoch 2
    with pytest.raises(ValueError, match="inside epoch 2, past epochs=1"):
        net().fit(X, Y, checkpoint=path, resume=True, **{**OPTIONS, "epochs": 1})
