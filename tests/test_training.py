"""Real training: XOR, digits, regression; symmetry, dropout, early stopping, divergence."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fastbp
from fastbp.data import load, train_test_split
from fastbp.trainer import Trainer

from backends import usable_backends

CPU_BACKENDS = [b for b in usable_backends() if b in ("numpy", "numba")]


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_xor_learned_by_2_2_1_sigmoid_net(backend):
    xor = load("xor")
    net = fastbp.MLP([2, 2, 1], activation="sigmoid", output="sigmoid",
                     loss="binary_cross_entropy", init="normal", init_scale=1.0, seed=1,
                     backend=backend, dtype="float64")
    net.fit(xor.X, xor.y, epochs=3000, batch_size=None, lr=2.0, optimizer="momentum",
            verbose=0)
    assert net.predict(xor.X).tolist() == [0, 1, 1, 0]
    assert net.loss(xor.X, xor.y) < 0.05


def test_zero_init_keeps_hidden_units_identical():
    """The symmetry problem: with all-zero weights every hidden unit gets the same update."""
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(40, 3)), rng.integers(0, 2, 40)
    net = fastbp.MLP([3, 5, 2], activation="tanh", init="zeros", backend="numpy",
                     dtype="float64", seed=0)
    net.set_weights([(W, b + 0.1) for W, b in net.get_weights()])  # equal, not zero
    net.fit(X, y, epochs=5, batch_size=8, lr=0.5, verbose=0)
    (W1, b1), (W2, _) = net.get_weights()
    assert np.abs(W1).max() > 1e-3  # the weights did move ...
    assert np.ptp(W1, axis=1).max() < 1e-12 and np.ptp(b1) < 1e-12  # ... all hidden units alike
    assert np.ptp(W2, axis=0).max() < 1e-12  # each output sees identical hidden units


def test_random_init_breaks_symmetry():
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(40, 3)), rng.integers(0, 2, 40)
    net = fastbp.MLP([3, 5, 2], activation="tanh", init="xavier", backend="numpy", seed=0)
    net.fit(X, y, epochs=2, verbose=0)
    assert np.ptp(net.get_weights()[0][0], axis=1).max() > 1e-3


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_regression_with_relu_and_mse(backend):
    rng = np.random.default_rng(0)
    X = rng.uniform(-2, 2, size=(512, 2))
    y = np.sin(X[:, 0]) + 0.5 * X[:, 1] ** 2
    net = fastbp.MLP([2, 32, 32, 1], activation="relu", output="identity", loss="mse",
                     seed=0, backend=backend)
    net.fit(X, y, epochs=150, batch_size=32, lr=0.01, optimizer="adam", verbose=0)
    assert net.score(X, y) > 0.95
    assert net.predict(X).shape == (512,)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_digits_test_accuracy_at_least_097(backend):
    ds = load("digits")
    X_train, X_test, y_train, y_test = train_test_split(ds.X, ds.y, 0.2, seed=0)
    net = fastbp.MLP([64, 256, 10], seed=0, standardize=True, backend=backend)
    history = net.fit(X_train, y_train, epochs=30, batch_size=32, lr=0.005, optimizer="adam",
                      weight_decay=1e-4, validation_split=0.1, verbose=0)
    assert net.score(X_test, y_test) >= 0.97
    assert history.train_loss[-1] < history.train_loss[0] / 5
    assert len(history.val_accuracy) == 30 and history.val_accuracy[-1] > 0.95


def test_same_seed_same_model():
    ds = load("iris")
    nets = [fastbp.MLP([4, 8, 3], seed=7, backend="numpy") for _ in range(2)]
    for net in nets:
        net.fit(ds.X, ds.y, epochs=3, dropout=0.2, verbose=0)
    for (W1, b1), (W2, b2) in zip(nets[0].get_weights(), nets[1].get_weights()):
        np.testing.assert_array_equal(W1, W2)
        np.testing.assert_array_equal(b1, b2)


class TestDropout:
    def setup_method(self):
        self.net = fastbp.MLP([6, 50, 3], activation="relu", seed=3, backend="numpy",
                              dtype="float64")
        self.X = np.random.default_rng(0).normal(size=(200, 6))

    def test_mask_drops_about_p_and_scales_kept_units(self):
        layer = self.net.layers[0]
        layer.dropout = 0.3
        Xd = self.net.backend.asarray(self.X, "float64")
        out = layer.forward(Xd, training=True, rng=self.net.rng)
        mask = layer.mask
        assert set(np.unique(mask)) <= {0.0, 1 / 0.7}
        assert abs((mask == 0).mean() - 0.3) < 0.03
        np.testing.assert_allclose(out, layer.a * mask)

    def test_same_mask_in_backward(self):
        """Gradients through dropped units vanish: the forward mask is reused."""
        layer, top = self.net.layers
        layer.dropout = 0.5
        Xd = self.net.backend.asarray(self.X, "float64")
        self.net.forward_device(Xd, training=True)
        Y = np.eye(3)[np.random.default_rng(1).integers(0, 3, 200)]
        loss_acc = np.zeros(1)
        self.net.backward_device(Y, 1 / 200, 0.0, loss_acc)
        dropped = layer.mask == 0
        assert dropped.any()
        assert np.all(layer.delta[dropped] == 0)

    def test_no_dropout_at_prediction(self):
        self.net.fit(self.X, np.zeros(200, dtype=int), epochs=1, dropout=0.5, verbose=0)
        first, second = self.net.forward(self.X), self.net.forward(self.X)
        np.testing.assert_array_equal(first, second)
        assert all(layer.dropout == 0 for layer in self.net.layers)


def test_early_stopping_restores_the_best_weights():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 10))
    y = rng.integers(0, 2, 60)  # pure noise: validation loss turns up quickly
    X_val, y_val = rng.normal(size=(60, 10)), rng.integers(0, 2, 60)
    net = fastbp.MLP([10, 64, 2], seed=0, backend="numpy", dtype="float64")
    snapshots = []
    history = net.fit(X, y, epochs=200, batch_size=10, lr=0.05, optimizer="adam",
                      validation_data=(X_val, y_val), early_stopping=3, verbose=0,
                      callbacks=[lambda epoch, logs: snapshots.append(net.get_weights())])
    assert history.stopped_early and len(history) < 200
    assert len(history) - history.best_epoch == 3
    best = snapshots[history.best_epoch - 1]
    for (W, b), (Wb, bb) in zip(net.get_weights(), best):
        np.testing.assert_array_equal(W, Wb)
    assert net.loss(X_val, y_val) == pytest.approx(min(history.val_loss), rel=1e-9)


def test_callback_can_stop_training():
    ds = load("xor")
    net = fastbp.MLP([2, 4, 2], seed=0, backend="numpy")
    history = net.fit(ds.X, ds.y, epochs=50, verbose=0, callbacks=[lambda e, logs: e == 4])
    assert len(history) == 4


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_divergence_raises_and_keeps_last_finite_weights():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(64, 3)) * 100
    y = rng.normal(size=64) * 1e3
    net = fastbp.MLP([3, 16, 1], output="identity", loss="mse", seed=0, backend="numpy",
                     preprocess=None)
    with pytest.raises(FloatingPointError, match="diverged"):
        net.fit(X, y, epochs=50, lr=10.0, batch_size=8, verbose=0, optimizer="sgd")
    assert all(np.isfinite(W).all() and np.isfinite(b).all() for W, b in net.get_weights())


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("epochs", [1, 3, 5])
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_weights_restored_after_divergence_still_predict(epochs, optimizer):
    """An epoch's last update is seen by no loss of that epoch: when it is the one that
    diverges, the weights the next epoch started from are finite but useless, and the
    restore goes one epoch further back."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 4))
    y = (X[:, 0] > 0).astype(int)
    net = fastbp.MLP([4, 5, 2], backend="numpy", seed=0)
    with pytest.raises(FloatingPointError, match="diverged"):
        net.fit(X, y, epochs=epochs, batch_size=None, lr=1e38, optimizer=optimizer, verbose=0)
    assert np.isfinite(net.predict_proba(X)).all()


def test_full_batch_and_stochastic_batches():
    ds = load("iris")
    for batch_size in (None, 1):
        net = fastbp.MLP([4, 8, 3], seed=0, backend="numpy", standardize=True)
        history = net.fit(ds.X[:30], ds.y[:30], epochs=2, batch_size=batch_size, verbose=0)
        assert len(history) == 2


def test_progress_bar_and_epoch_lines(capsys):
    ds = load("xor")
    net = fastbp.MLP([2, 4, 2], seed=0, backend="numpy")
    net.fit(ds.X, ds.y, epochs=2, validation_data=(ds.X, ds.y), verbose=1)
    err = capsys.readouterr()
    text = err.out + err.err
    assert "epoch 1/2" in text and "val_acc" in text and "step" in text


@settings(max_examples=200, deadline=None)
@given(st.floats(0, 1e5))
def test_epoch_seconds_read_back_within_their_rounding(seconds):
    """The epoch line's time: seconds from 1 s, milliseconds below, two or three significant
    digits, never an exponent (``0.00s`` hid every epoch of a small net)."""
    from fastbp.history import format_seconds

    text = format_seconds(seconds)
    assert "e" not in text.replace("ms", "").replace("s", "")
    value = float(text[:-2]) / 1e3 if text.endswith("ms") else float(text[:-1])
    assert abs(value - seconds) <= 0.051 * seconds + 5e-6


def test_the_progress_bar_rate_leaves_out_a_slow_first_step(monkeypatch):
    """A first step that compiles (here: sleeps 0.4 s) must not set the rate and time left of
    the fast steps after it: the bar's clock starts when it ends."""
    import time

    import fastbp.trainer as trainer_module

    bars = []

    class Recorded(trainer_module.tqdm):
        def close(self):
            bars.append(self.format_dict)
            super().close()

    step = Trainer.step

    def slow_first_step(self, *args):
        if not bars and not getattr(self, "slept", False):
            self.slept = True
            time.sleep(0.4)
        return step(self, *args)

    monkeypatch.setattr(trainer_module, "tqdm", Recorded)
    monkeypatch.setattr(Trainer, "step", slow_first_step)
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(400, 4)), rng.integers(0, 2, 400)
    fastbp.MLP([4, 8, 2], backend="numpy", seed=0).fit(X, y, epochs=2, batch_size=10,
                                                        verbose=1)
    shown = bars[0]  # close() runs again when the bar is collected
    assert shown["n"] == 80 and shown["elapsed"] < 0.3
    rate = shown["rate"] or shown["n"] / shown["elapsed"]
    assert rate > 1 / 0.1  # steps per second: far from the 1 / 0.4 of the first step


@pytest.mark.parametrize("backend", usable_backends())
@pytest.mark.parametrize("shuffle", [True, False])
def test_a_training_set_too_big_for_the_device_streams_to_the_same_model(
        backend, shuffle, monkeypatch):
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(50, 4)), rng.integers(0, 3, 50)

    def train():
        net = fastbp.MLP([4, 6, 3], backend=backend, dtype="float64", seed=0)
        net.fit(X, y, epochs=2, batch_size=16, lr=0.1, optimizer="momentum", shuffle=shuffle,
                verbose=0)
        return net.get_flat_params()

    resident = train()
    be = fastbp.get_backend(backend)
    monkeypatch.setattr(type(be), "device_memory_free", lambda self: 1024)  # 1 KiB free
    streamed = train()
    np.testing.assert_allclose(streamed, resident, rtol=1e-12)


@pytest.mark.parametrize("shuffle", [False, True])
@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_standardising_each_batch_trains_as_on_the_standardised_set(
        backend, shuffle, monkeypatch):
    """float32 features are standardised batch by batch as they are gathered, never as a whole
    copy: the same weights, bit for bit, as training on the standardised set, and the caller's
    array untouched."""
    from fastbp.data import Standardizer

    rng = np.random.default_rng(3)
    X = (rng.standard_normal((300, 6)) * [1, 10, 100, 1e3, 0.1, 5] + 50).astype(np.float32)
    y = rng.integers(0, 3, 300)
    original = X.copy()
    whole = []
    transform = Standardizer.transform
    monkeypatch.setattr(Standardizer, "transform",
                        lambda self, data: whole.append(len(data)) or transform(self, data))
    options = dict(epochs=2, batch_size=64, shuffle=shuffle, verbose=0, validation_split=0.2)
    by_batch = fastbp.MLP([6, 8, 3], seed=0, backend=backend, preprocess="standardize")
    by_batch.fit(X, y, **options)
    assert 240 not in whole  # the 240 training rows were never standardised as one array
    np.testing.assert_array_equal(X, original)
    on_set = fastbp.MLP([6, 8, 3], seed=0, backend=backend, preprocess=None)
    on_set.fit(transform(by_batch.preprocessor, X), y, **options)
    np.testing.assert_array_equal(by_batch.get_flat_params(), on_set.get_flat_params())


@pytest.mark.parametrize("device_memory", [None, 1 << 40], ids=["host", "device"])
@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.bool_])
@pytest.mark.parametrize("preprocess", ["standardize", None])
@pytest.mark.parametrize("shuffle", [False, True])
@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_integer_features_train_batch_by_batch_as_their_float_values(backend, shuffle,
                                                                     preprocess, dtype,
                                                                     device_memory,
                                                                     monkeypatch):
    """Integers that the model's dtype holds exactly (uint8 pixels) stay integers: on a
    backend without a device of its own each batch is converted as it is gathered and the set
    is never converted whole; a device (here a host backend that reports device memory) takes
    the set converted as it is copied over. Either way the weights and the losses come out bit
    for bit as from the float32 array of the same values (with a validation split, sample
    weights and standardising or not)."""
    rng = np.random.default_rng(4)
    values = rng.integers(-300 if dtype == np.int16 else 0, 2 if dtype == np.bool_ else 256,
                          (300, 6))
    X = values.astype(dtype)
    y = rng.integers(0, 3, 300)
    weights = rng.uniform(0.5, 2.0, 300)
    options = dict(epochs=2, batch_size=64, shuffle=shuffle, verbose=0, validation_split=0.2,
                   sample_weight=weights)

    def train(data):
        net = fastbp.MLP([6, 8, 3], seed=0, backend=backend, preprocess=preprocess)
        return net, net.fit(data, y, **options)

    monkeypatch.setattr(type(fastbp.get_backend(backend)), "device_memory_free",
                        lambda self: device_memory)
    floats, float_history = train(X.astype(np.float32))
    placed = []
    place = Trainer.place_data

    def recording(trainer, X, Y):
        placed.append(X.dtype)
        device_X, _ = placed_data = place(trainer, X, Y)
        placed.append((trainer.streamed, device_X.dtype))
        return placed_data

    monkeypatch.setattr(Trainer, "place_data", recording)
    ints, int_history = train(X)
    # the training rows reached the trainer unconverted; it kept them (host) or converted them
    kept = (True, np.dtype(dtype)) if device_memory is None else (False, np.dtype(np.float32))
    assert placed == [np.dtype(dtype), kept]
    np.testing.assert_array_equal(ints.get_flat_params(), floats.get_flat_params())
    assert int_history.train_loss == float_history.train_loss
    assert int_history.val_loss == float_history.val_loss


def test_uint8_pixels_in_a_memory_map_train_without_being_read_whole(tmp_path, monkeypatch):
    """A ``uint8`` memory map (a data set on disk) trains batch by batch from the map: the
    trainer gathers from the map itself (no float copy of it), and the weights are those
    of the array in memory."""
    rng = np.random.default_rng(5)
    pixels = rng.integers(0, 256, (400, 12), dtype=np.uint8)
    y = (pixels[:, 0] > 127).astype(int)
    mapped = np.lib.format.open_memmap(tmp_path / "pixels.npy", "w+", np.uint8, pixels.shape)
    mapped[...] = pixels
    mapped.flush()
    mapped = np.load(tmp_path / "pixels.npy", mmap_mode="r")
    placed = []
    place = Trainer.place_data
    monkeypatch.setattr(Trainer, "place_data", lambda self, X, Y: placed.append(
        isinstance(X, np.memmap)) or place(self, X, Y))
    weights = []
    for data in (mapped, pixels):
        net = fastbp.MLP([12, 8, 2], seed=0, backend="numpy")
        net.fit(data, y, epochs=2, batch_size=50, verbose=0)
        weights.append(net.get_flat_params())
    assert placed == [True, False]
    np.testing.assert_array_equal(*weights)


@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "nesterov", "adam"])
@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_weight_decay_in_the_update_equals_the_explicit_gradient(backend, optimizer):
    """Training adds ``lam W`` inside the optimizer's update (Adam in its own sweep on the
    Numba backend); three full-batch steps give the weights, bit for bit, of steps on the
    gradient with the L2 term written out (``MLP.gradients``, the path of gradient checks and
    L-BFGS): the term on every weight matrix, once, and on no bias or PReLU slope."""
    from fastbp.optim import make_optimizer

    rng = np.random.default_rng(5)
    X, y = rng.standard_normal((40, 5)), rng.integers(0, 3, 40)

    def net():
        return fastbp.MLP([5, 7, 6, 3], activation=["prelu", "tanh"], backend=backend,
                          dtype="float64", seed=2, preprocess=None)

    trained = net()
    trained.fit(X, y, epochs=3, batch_size=40, shuffle=False, lr=0.05, optimizer=optimizer,
                weight_decay=0.3, verbose=0)
    by_hand = net()
    opt = make_optimizer(optimizer, by_hand.backend, by_hand.n_params, by_hand.dtype, 0.05,
                         0.9)
    for _ in range(3):
        by_hand.gradients(X, y, weight_decay=0.3)  # into by_hand.grads
        opt.step(by_hand.params, by_hand.grads)
    np.testing.assert_array_equal(trained.get_flat_params(), by_hand.get_flat_params())
