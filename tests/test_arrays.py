"""Every array type comes in through one converter (fastbp.arrays) and trains exactly like
NumPy."""

import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import fastbp
from doubles import DLPackOnly
from fastbp import arrays

torch = pytest.importorskip("torch")

rng = np.random.default_rng(0)
X = rng.normal(size=(24, 3))
y = np.array([0, 1] * 12)


def train_and_predict(X_in, y_in, **fit):
    net = fastbp.MLP([3, 5, 2], seed=1, backend="numpy")
    net.fit(X_in, y_in, epochs=3, batch_size=8, lr=0.1, verbose=0, **fit)
    return net.get_flat_params(), net.predict_proba(X_in), net.score(X_in, y_in), \
        net.loss(X_in, y_in)


EXPECTED = None


def expected():
    global EXPECTED
    if EXPECTED is None:
        EXPECTED = train_and_predict(X, y)
    return EXPECTED


@pytest.mark.parametrize("make", [
    lambda a: torch.from_numpy(a.copy()),
    lambda a: torch.from_numpy(a.copy()).requires_grad_(True) if a.dtype.kind == "f"
    else torch.from_numpy(a.copy()),
    lambda a: DLPackOnly(a.copy()),
    lambda a: np.asarray(a).tolist(),
], ids=["tensor", "tensor-requires-grad", "dlpack-only", "list"])
def test_array_types_train_and_predict_exactly_as_numpy(make):
    params, proba, score, loss = train_and_predict(make(X), make(y))
    want = expected()
    np.testing.assert_array_equal(params, want[0])
    np.testing.assert_array_equal(proba, want[1])
    assert (score, loss) == (want[2], want[3])


def test_pandas_and_memmap_train_exactly_as_numpy(tmp_path):
    pd = pytest.importorskip("pandas")
    params, proba, *_ = train_and_predict(pd.DataFrame(X, columns=list("abc")), pd.Series(y))
    np.testing.assert_array_equal(params, expected()[0])
    path = tmp_path / "X.dat"
    mapped = np.memmap(path, dtype=X.dtype, mode="w+", shape=X.shape)
    mapped[:] = X
    params, proba, *_ = train_and_predict(np.memmap(path, dtype=X.dtype, shape=X.shape), y)
    np.testing.assert_array_equal(params, expected()[0])


def test_a_dataframe_names_the_features_and_later_frames_must_match(tmp_path):
    """As scikit-learn's feature_names_in_: fit on a DataFrame keeps its column names (saved
    with the model), and a DataFrame given later must have those columns in that order;
    plain arrays pass."""
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame(X, columns=["x0", "x1", "x2"])
    net = fastbp.MLP([3, 5, 2], seed=1, backend="numpy")
    net.fit(frame, y, epochs=1, verbose=0)
    assert net.config["feature_names"] == ["x0", "x1", "x2"]
    net.save(tmp_path / "m.npz")
    assert fastbp.load(tmp_path / "m.npz").config["feature_names"] == ["x0", "x1", "x2"]
    np.testing.assert_array_equal(net.predict(frame), net.predict(X))
    with pytest.raises(ValueError, match=r"missing \['x2'\], unexpected \['z'\]"):
        net.predict(frame.rename(columns={"x2": "z"}))
    with pytest.raises(ValueError, match=r"another order.*X\[net.config\['feature_names'\]\]"):
        net.score(frame[["x2", "x0", "x1"]], y)
    before = net.get_flat_params()
    with pytest.raises(ValueError, match="X_val's columns are not"):
        net.fit(frame, y, epochs=1, verbose=0,
                validation_data=(frame.set_axis(["a", "b", "c"], axis=1), y))
    np.testing.assert_array_equal(net.get_flat_params(), before)
    unnamed = fastbp.MLP([3, 5, 2], seed=1, backend="numpy")
    unnamed.fit(pd.DataFrame(X), y, epochs=1, verbose=0)   # integer column labels: no names
    assert unnamed.config["feature_names"] is None


def test_pandas_missing_values_and_text_are_clear_errors():
    pd = pytest.importorskip("pandas")
    net = fastbp.MLP([3, 5, 2], seed=1, backend="numpy")
    frame = pd.DataFrame({"a": pd.array([1, None, 3] * 8, dtype="Int64"), "b": X[:, 1],
                          "c": [True, False] * 12})
    with pytest.raises(ValueError, match=r"X must be finite, got nan at index \(1, 0\)"):
        net.predict(frame)
    np.testing.assert_array_equal(net.predict(frame.fillna(0)),
                                  net.predict(frame.fillna(0).to_numpy(dtype=float)))
    with pytest.raises(TypeError, match="X must be a real numeric array.*Python objects"):
        net.predict(pd.DataFrame({"a": ["x"] * 24, "b": X[:, 1], "c": X[:, 2]}))


def test_gradients_take_tensors():
    net = fastbp.MLP([3, 5, 2], seed=1, backend="numpy")
    want = net.gradients(X, y)
    got = net.gradients(torch.tensor(X, requires_grad=True), torch.tensor(y))
    for g, w in zip(got, want):
        for a, b in zip(g, w):
            np.testing.assert_array_equal(a, b)


def test_host_numpy_is_not_copied():
    assert arrays.to_array(X, "X") is X
    tensor = torch.from_numpy(X)
    assert np.shares_memory(arrays.to_array(tensor, "X"), X)


@pytest.mark.parametrize("narrow", [
    lambda a: a.astype(np.float16),
    lambda a: torch.from_numpy(a).to(torch.bfloat16),
    lambda a: torch.from_numpy(a).to(torch.float16).requires_grad_(True),
], ids=["numpy-float16", "torch-bfloat16", "torch-float16-grad"])
def test_half_precision_becomes_the_model_dtype(narrow):
    got = arrays.as_float_array(narrow(X), "X")
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, X, rtol=1e-2)
    net = fastbp.MLP([3, 5, 2], seed=1, backend="numpy")
    np.testing.assert_array_equal(net.predict_proba(narrow(X)), net.predict_proba(got))


def test_numpy_bfloat16_from_ml_dtypes():
    ml_dtypes = pytest.importorskip("ml_dtypes")
    got = arrays.as_float_array(X.astype(ml_dtypes.bfloat16), "X")
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, X, rtol=1e-2)


@pytest.mark.parametrize("bad,match", [
    (X.astype(np.complex128), "complex"),
    (np.ones((24, 3), dtype="timedelta64[s]"), "time spans"),
    (np.ones((24, 3), dtype="datetime64[s]"), "dates and times"),
    (np.array([[object()] * 3] * 24), "Python objects"),
    (np.array([["a", "b", "c"]] * 24), "text"),
    (torch.ones((24, 3), dtype=torch.complex64), "complex"),
    ([[1, 2], [3]], "numeric array"),
])
def test_non_real_input_is_refused(bad, match):
    net = fastbp.MLP([3, 5, 2], seed=1, backend="numpy")
    before = net.get_flat_params()
    for call in (lambda: net.fit(bad, y, epochs=1, verbose=0), lambda: net.predict(bad)):
        with pytest.raises(TypeError, match=match) as info:
            call()
        assert "X" in str(info.value)
    np.testing.assert_array_equal(net.get_flat_params(), before)


def test_non_real_targets_are_refused():
    net = fastbp.MLP([3, 5, 2], seed=1, backend="numpy")
    with pytest.raises(TypeError, match="y must be a real numeric array.*complex"):
        net.fit(X, y.astype(complex), epochs=1, verbose=0)


def test_values_that_overflow_the_model_dtype_are_refused():
    big = X.copy()
    big[2, 1] = 1e200
    net32 = fastbp.MLP([3, 5, 2], seed=1, backend="numpy")
    with pytest.raises(ValueError, match=r"X must fit the model's float32.*1e\+200 at index "
                                         r"\(2, 1\)"):
        net32.predict(big)
    with pytest.raises(ValueError, match="X must fit"):
        net32.fit(big, y, epochs=1, verbose=0)
    reg = fastbp.MLP([3, 5, 1], output="identity", loss="mse", seed=1, backend="numpy")
    with pytest.raises(ValueError, match="y must fit the model's float32"):
        reg.fit(X, np.full(24, -1e60), epochs=1, verbose=0)
    net64 = fastbp.MLP([3, 5, 2], seed=1, backend="numpy", dtype="float64")
    net64.forward(big)  # representable in float64: accepted


@settings(max_examples=40, deadline=None)
@given(hnp.arrays(dtype=st.one_of(hnp.integer_dtypes(), hnp.unsigned_integer_dtypes(),
                                  hnp.floating_dtypes(), hnp.boolean_dtypes()),
                  shape=hnp.array_shapes(min_dims=1, max_dims=3, max_side=4)))
def test_every_real_dtype_converts_to_its_values(a):
    got = arrays.as_float_array(a, "X")
    assert got.dtype in (np.float32, np.float64)
    np.testing.assert_array_equal(got, a.astype(got.dtype))


@settings(max_examples=30, deadline=None)
@given(hnp.arrays(dtype=st.one_of(hnp.complex_number_dtypes(), hnp.datetime64_dtypes(),
                                  hnp.timedelta64_dtypes(), hnp.unicode_string_dtypes(),
                                  hnp.byte_string_dtypes()),
                  shape=hnp.array_shapes(min_dims=1, max_dims=2, max_side=3)))
def test_every_non_real_dtype_is_refused(a):
    with pytest.raises(TypeError, match="X must be a real numeric array"):
        arrays.to_array(a, "X")


def test_jax_arrays_if_installed():
    jnp = pytest.importorskip("jax.numpy")
    np.testing.assert_array_equal(arrays.as_float_array(jnp.asarray(X), "X"), X)


@pytest.mark.gpu
def test_device_arrays_are_used_in_place(gpu_backend, monkeypatch):
    """The cupy backend never copies its own arrays through the host: under cupy-sim the
    device arrays are NumPy arrays, so every host conversion is counted (none may happen) and
    the arrays the first layer and the trainer see must be the caller's memory.
    (Unverified on a real GPU until this runs on one.)"""
    from fastbp import trainer

    X_dev = gpu_backend.asarray(X, np.float32)
    Y_dev = gpu_backend.asarray(np.eye(2)[y], np.float32)
    host_copies = []
    original = arrays.host_array
    monkeypatch.setattr(arrays, "host_array",
                        lambda x, name: host_copies.append(name) or original(x, name))
    placed = []
    place_data = trainer.Trainer.place_data
    monkeypatch.setattr(trainer.Trainer, "place_data",
                        lambda self, A, B: placed.append(place_data(self, A, B)) or placed[-1])
    net = fastbp.MLP([3, 4, 2], seed=1, backend=gpu_backend)
    first_inputs = []
    forward = net.layers[0].forward
    monkeypatch.setattr(net.layers[0], "forward",
                        lambda a, *args: first_inputs.append(a) or forward(a, *args))
    net.fit(X_dev, Y_dev, epochs=1, batch_size=None, lr=0.1, verbose=0)
    proba = net.predict_proba(X_dev)
    assert host_copies == []
    assert all(np.shares_memory(a, b) for a, b in zip(placed[0], (X_dev, Y_dev)))
    assert np.shares_memory(first_inputs[-1], X_dev)
    twin = fastbp.MLP([3, 4, 2], seed=1, backend="numpy")
    twin.fit(X, y, epochs=1, batch_size=None, lr=0.1, verbose=0)
    np.testing.assert_allclose(proba, twin.predict_proba(X), rtol=1e-5, atol=1e-6)


def test_a_failing_dlpack_export_is_a_clear_error():
    class Broken:
        dtype = "weird8"

        def __dlpack__(self, **kwargs):
            raise BufferError("unsupported dtype")

    net = fastbp.MLP([3, 5, 2], seed=1, backend="numpy")
    with pytest.raises(TypeError, match="X must be a numeric array: its DLPack export "
                                        r"\(Broken, dtype weird8\) failed"):
        net.predict(Broken())


@settings(max_examples=60, deadline=None)
@given(hnp.arrays(st.sampled_from([np.float32, np.float64]), hnp.array_shapes(max_dims=2),
                  elements=st.floats(allow_nan=True, allow_infinity=True, width=32)))
def test_check_finite_raises_exactly_for_nan_inf_and_names_the_first(arr):
    """One min/max pass decides; the error names the first bad element, as a full sweep would."""
    bad = ~np.isfinite(arr)
    if not bad.any():
        arrays.check_finite(arr, "X", np.float32)
        return
    first = np.unravel_index(int(bad.reshape(-1).argmax()), arr.shape)
    with pytest.raises(ValueError, match=rf"X must be finite, got .* at index "
                                         rf"{re.escape(str(tuple(int(i) for i in first)))}"):
        arrays.check_finite(arr, "X", np.float32)


@pytest.mark.parametrize("value, ok", [(3e38, True), (-3.5e38, False), (1e300, False)])
def test_check_finite_refuses_float64_values_beyond_float32(value, ok):
    arr = np.zeros((3, 2))
    arr[2, 1] = value
    arrays.check_finite(arr, "X")  # no model dtype: any finite value
    if ok:
        arrays.check_finite(arr, "X", np.float32)
    else:
        with pytest.raises(ValueError, match=r"fit the model's float32.*at index \(2, 1\)"):
            arrays.check_finite(arr, "X", np.float32)


def test_integer_features_become_the_models_dtype_directly():
    """uint8 pixels go to a float32 model as float32 (no float64 copy eight times their size);
    without a model dtype, integers become float64."""
    pixels = rng.integers(0, 256, (6, 3), dtype=np.uint8)
    assert arrays.as_float_array(pixels, "X", dtype="float32").dtype == np.float32
    assert arrays.as_float_array(pixels, "X").dtype == np.float64
    net = fastbp.MLP([3, 4, 2], seed=0, backend="numpy")
    np.testing.assert_array_equal(net.predict_proba(pixels),
                                  net.predict_proba(pixels.astype(np.float32)))
