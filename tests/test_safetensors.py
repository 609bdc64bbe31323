"""Models saved as .safetensors load back identically, and safetensors itself reads them."""

import json
import os

import numpy as np
import pytest

import fastbp

st_numpy = pytest.importorskip("safetensors.numpy")

rng = np.random.default_rng(0)
X = rng.normal(loc=2.0, size=(30, 4))
y = np.arange(30) % 3


def trained(preprocess, activation=("maxout", "prelu"), dtype="float32"):
    net = fastbp.MLP([4, 6, 5, 3], activation=list(activation), preprocess=preprocess,
                     seed=0, backend="numpy", dtype=dtype, maxout_pieces=3)
    net.fit(X, y, epochs=2, batch_size=10, lr=0.05, verbose=0)
    return net


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("preprocess", [None, "standardize", "pca", "zca"])
def test_round_trip(tmp_path, preprocess, dtype):
    net = trained(preprocess, dtype=dtype)
    path = tmp_path / "model.safetensors"
    net.save(path)
    assert sorted(os.listdir(tmp_path)) == ["model.safetensors"]
    back = fastbp.load(path, backend="numpy")
    assert back.config == net.config
    for got, want in zip(back.get_weights(), net.get_weights()):
        for a, b in zip(got, want):
            np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(back.forward(X), net.forward(X))


def test_safetensors_reads_the_weights_and_the_config(tmp_path):
    net = trained("zca")
    path = tmp_path / "model.safetensors"
    net.save(path)
    tensors = st_numpy.load_file(str(path))
    W, b = net.get_weights()[0]
    np.testing.assert_array_equal(tensors["W_1"], W)
    np.testing.assert_array_equal(tensors["b_1"], b)
    np.testing.assert_array_equal(tensors["alpha_2"], net.get_weights()[1][2])
    np.testing.assert_array_equal(tensors["whitener_matrix"], net.preprocessor.matrix)
    from safetensors import safe_open

    with safe_open(str(path), framework="numpy") as f:
        meta = json.loads(f.metadata()["fastbp"])
    assert meta["config"] == net.config and meta["format"] == "fastbp-mlp"


def test_npz_stays_the_default(tmp_path):
    net = trained(None)
    net.save(tmp_path / "model.npz")
    with np.load(tmp_path / "model.npz") as f:
        assert "W_1" in f.files
    np.testing.assert_array_equal(fastbp.load(tmp_path / "model.npz", backend="numpy")
                                  .forward(X), net.forward(X))


def test_foreign_and_corrupt_files_are_clear_errors(tmp_path):
    foreign = tmp_path / "foreign.safetensors"
    st_numpy.save_file({"weight": np.ones((2, 2), np.float32)}, str(foreign))
    with pytest.raises(ValueError, match="foreign.safetensors.*not a fastbp model file"):
        fastbp.load(foreign)
    good = tmp_path / "good.safetensors"
    trained(None).save(good)
    data = good.read_bytes()
    for name, payload in [("truncated", data[:len(data) // 2]), ("garbage", b"\x00" * 64),
                          ("empty", b"")]:
        path = tmp_path / f"{name}.safetensors"
        path.write_bytes(payload)
        with pytest.raises(ValueError, match=f"{name}.safetensors.*not a fastbp model file"):
            fastbp.load(path)
    with pytest.raises(FileNotFoundError, match="missing.safetensors"):
        fastbp.load(tmp_path / "missing.safetensors")


@pytest.mark.parametrize("write", [
    lambda net, path: net.save(path.with_suffix(".safetensors")),
    lambda net, path: net.to_onnx(path.with_suffix(".onnx")),
], ids=["safetensors", "onnx"])
def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path, monkeypatch,
                                                                   write):
    pytest.importorskip("onnx")
    net = trained(None)
    write(net, tmp_path / "out")
    (old,) = os.listdir(tmp_path)
    before = (tmp_path / old).read_bytes()

    def full_disk(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", full_disk)
    net.fit(X, y, epochs=1, verbose=0)
    with pytest.raises(OSError, match="No space"):
        write(net, tmp_path / "out")
    assert os.listdir(tmp_path) == [old]
    assert (tmp_path / old).read_bytes() == before
