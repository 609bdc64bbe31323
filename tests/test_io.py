"""Saving and loading models: round trips, atomic writes, corrupt and foreign files."""

import json
import os

import numpy as np
import pytest

import fastbp
from fastbp.data import load


@pytest.fixture
def trained():
    ds = load("iris")
    net = fastbp.MLP([4, 6, 5, 3], activation=["tanh", "elu"], seed=0, backend="numpy",
                     standardize=True, elu_alpha=0.5)
    net.fit(ds.X, ds.y, epochs=3, verbose=0)
    return net, ds


def test_round_trip_gives_identical_predictions(trained, tmp_path):
    net, ds = trained
    path = tmp_path / "model.npz"
    net.save(path)
    again = fastbp.load(path, backend="numpy")
    np.testing.assert_array_equal(again.forward(ds.X), net.forward(ds.X))
    np.testing.assert_array_equal(again.predict(ds.X), net.predict(ds.X))
    assert again.config == net.config
    assert again.standardizer is not None


def test_save_leaves_no_temporary_files_and_overwrites(trained, tmp_path):
    net, _ = trained
    path = tmp_path / "model.npz"
    net.save(path)
    net.save(path)
    assert os.listdir(tmp_path) == ["model.npz"]


def test_crash_while_writing_keeps_the_old_file(trained, tmp_path, monkeypatch):
    net, ds = trained
    path = tmp_path / "model.npz"
    net.save(path)
    before = path.read_bytes()

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", crash)
    with pytest.raises(OSError, match="disk full"):
        net.save(path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["model.npz"]


def test_corrupt_file_is_a_clear_error(tmp_path):
    path = tmp_path / "broken.npz"
    path.write_bytes(b"not a zip file at all")
    with pytest.raises(ValueError, match="not a fastbp model file"):
        fastbp.load(path)


def test_foreign_npz_is_a_clear_error(tmp_path):
    path = tmp_path / "other.npz"
    np.savez(path, weights=np.ones(3))
    with pytest.raises(ValueError, match="not a fastbp model file"):
        fastbp.load(path)
    meta = np.frombuffer(json.dumps({"format": "something-else"}).encode(), np.uint8)
    np.savez(path, meta=meta)
    with pytest.raises(ValueError, match="not a fastbp model file"):
        fastbp.load(path)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        fastbp.load(tmp_path / "nope.npz")


def saved_with(net, path, **replaced):
    """``net`` saved to ``path`` with the arrays ``replaced`` (name: function of the saved
    array) written over it by hand."""
    net.save(path)
    with np.load(path) as f:
        arrays = dict(f)
    arrays.update({name: edit(arrays[name]) for name, edit in replaced.items()})
    np.savez(path, **arrays)
    return path


def test_weights_that_do_not_match_the_config(trained, tmp_path):
    path = saved_with(trained[0], tmp_path / "model.npz", W_2=lambda W: np.ones((2, 2)))
    with pytest.raises(ValueError, match="W_2"):
        fastbp.load(path)


def test_a_loaded_model_keeps_the_choice_of_preprocess_auto(tmp_path):
    X = np.random.default_rng(0).normal(size=(40, 3))  # well scaled: auto chooses no scaling
    net = fastbp.MLP([3, 4, 2], backend="numpy", seed=0)
    net.fit(X, (X[:, 0] > 0).astype(int), epochs=1, verbose=0)
    assert net.preprocessor is None
    net.save(tmp_path / "m.npz")
    loaded = fastbp.load(tmp_path / "m.npz", backend="numpy")
    loaded.fit(X * 1000, (X[:, 0] > 0).astype(int), epochs=1, verbose=0)  # badly scaled now
    assert loaded.preprocessor is None


def test_float64_weights_beyond_a_float32_model_are_refused(trained, tmp_path):
    path = saved_with(trained[0], tmp_path / "model.npz",
                      W_1=lambda W: W.astype(np.float64) * 1e300)
    with pytest.raises(fastbp.files.FileFormatError, match="W_1.*beyond the model's float32"):
        fastbp.load(path)


def test_a_bad_backend_is_the_callers_error_not_the_files(trained, tmp_path):
    net, _ = trained
    net.save(tmp_path / "model.npz")
    with pytest.raises(ValueError, match="backend must be") as info:
        fastbp.load(tmp_path / "model.npz", backend="bad")
    assert not isinstance(info.value, fastbp.files.FileFormatError)
