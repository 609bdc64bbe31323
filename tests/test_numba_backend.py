"""The Numba backend against the NumPy reference backend: the core ops, dropout masks, the probe
and whole training runs (same seed and data, same trained weights)."""

import numpy as np
import pytest

pytest.importorskip("numba")

import fastbp  # noqa: E402
from fastbp.backends import numba_backend  # noqa: E402
from fastbp.kernels import codes, cpu, kernel, reference  # noqa: E402

RTOL = {np.float32: 1e-5, np.float64: 1e-12}
DTYPES = [np.float32, np.float64]
#: the size at which the kernels go parallel in these tests (smaller than the real one, so
#: that both compilations of every loop run on small arrays)
TEST_PARALLEL_MIN_WORK = 1 << 14
#: (batch, n_in, n_out): below and above that size
SHAPES = [(7, 13, 5), (300, 129, TEST_PARALLEL_MIN_WORK // 300 + 3)]


@pytest.fixture(autouse=True)
def parallel_from_test_size(monkeypatch):
    monkeypatch.setattr(kernel, "PARALLEL_MIN_WORK", TEST_PARALLEL_MIN_WORK)


@pytest.fixture(scope="module")
def numpy_be():
    return fastbp.get_backend("numpy")


@pytest.fixture(scope="module")
def numba_be():
    return fastbp.get_backend("numba")


def arrays(dtype, *shapes, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(shape).astype(dtype) for shape in shapes]


def assert_close(got, want):
    rtol = RTOL[want.dtype.type]
    np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * max(1.0, np.abs(want).max()))


def both(numpy_be, numba_be, op, *args):
    """Run backend method ``op`` on each backend with its own copy of ``args``."""
    results = []
    for be in (numpy_be, numba_be):
        copies = [x.copy() if isinstance(x, np.ndarray) else x for x in args]
        results.append((getattr(be, op)(*copies), copies))
    return results


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("act", ["relu", "tanh", "elu", "softmax"])
def test_linear_forward(numpy_be, numba_be, dtype, shape, act):
    N, n_in, n_out = shape
    a_prev, W, b, z, a = arrays(dtype, (N, n_in), (n_in, n_out), (n_out,), (N, n_out), (N, n_out))
    code = codes.ACTIVATION_CODES[act]
    (want, want_args), (got, got_args) = both(numpy_be, numba_be, "linear_forward",
                                              a_prev, W, b, code, 1.0, z, a)
    assert got is got_args[-1]
    assert_close(got_args[-2], want_args[-2])  # z
    assert_close(got, want)  # a


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("act", ["relu", "sigmoid", "leaky_relu"])
@pytest.mark.parametrize("dropout", [False, True])
def test_backprop_delta(numpy_be, numba_be, dtype, shape, act, dropout):
    N, n, n_next = shape
    delta_next, W_next, z, out = arrays(dtype, (N, n_next), (n, n_next), (N, n), (N, n))
    mask = (np.random.default_rng(1).random((N, n)) >= 0.5).astype(dtype) * 2 if dropout else None
    code = codes.ACTIVATION_CODES[act]
    a = reference.activate(z, code, 0.01, np.empty_like(z))
    (want, _), (got, got_args) = both(numpy_be, numba_be, "backprop_delta",
                                      delta_next, W_next, z, a, code, 0.01, out, mask)
    assert got is got_args[6]
    assert_close(got, want)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("lam", [0.0, 1e-3])
def test_weight_grads(numpy_be, numba_be, dtype, shape, lam):
    N, n_in, n_out = shape
    a_prev, delta, W, dW, db = arrays(dtype, (N, n_in), (N, n_out), (n_in, n_out),
                                      (n_in, n_out), (n_out,))
    (_, want), (_, got) = both(numpy_be, numba_be, "weight_grads", a_prev, delta, W, lam, dW, db)
    assert_close(got[4], want[4])  # dW
    assert_close(got[5], want[5])  # db


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("output, loss", [("softmax", "cross_entropy"), ("identity", "mse"),
                                          ("sigmoid", "binary_cross_entropy"),
                                          ("identity", "hinge"), ("softmax", "mse")])
def test_output_delta_loss_accumulates_like_numpy(numpy_be, numba_be, dtype, shape, output, loss):
    N, _, n = shape
    (z,) = arrays(dtype, (N, n))
    y = np.eye(n, dtype=dtype)[np.random.default_rng(2).integers(0, n, N)]
    act, loss_code = codes.ACTIVATION_CODES[output], codes.LOSS_CODES[loss]
    a = numpy_be.empty((N, n), dtype)
    numpy_be.linear_forward(np.eye(N, dtype=dtype), z, np.zeros(n, dtype), act, 0.0, z.copy(), a)
    results = []
    for be in (numpy_be, numba_be):
        delta, loss_acc = be.empty((N, n), dtype), be.zeros((1,), dtype)
        for _ in range(2):  # the accumulator adds up
            assert be.output_delta_loss(z, a, y, loss_code, act, 0.0, 1 / N, delta,
                                        loss_acc) is delta
        results.append((delta, loss_acc))
    (want_delta, want_loss), (got_delta, got_loss) = results
    assert_close(got_delta, want_delta)
    assert got_loss.dtype == want_loss.dtype
    assert_close(got_loss, want_loss)


@pytest.mark.parametrize("dtype", DTYPES + [np.uint8])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("strided", [False, True])
def test_take_rows_gathers_what_numpy_takes(numpy_be, numba_be, dtype, shape, strided):
    """Serial and parallel (the larger shape) builds, any strides, any dtype."""
    N, n_in, width = shape
    x = (np.arange(3 * N * width) % 251).astype(dtype).reshape(3 * N, width)
    if strided:
        x = x[::2, ::-1]
    index = np.random.default_rng(0).integers(0, x.shape[0], N)
    got, want = (be.take_rows(x, be.asindex(index), np.empty((N, width), dtype))
                 for be in (numba_be, numpy_be))
    assert np.array_equal(got, want) and np.array_equal(got, x[index])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_standardize_rows_rounds_as_numpys_two_ufuncs(numpy_be, numba_be, dtype, shape):
    """The fused in-place ``(x - mean) / std`` gives NumPy's subtract-then-divide bit for bit
    (a constant column's std is 1), serial and parallel builds."""
    N, _, width = shape
    x, mean, std = arrays(dtype, (N, width), (width,), (width,))
    x = x * 1e3 + 7
    std = np.abs(std) + 1e-3
    std[0] = 1.0
    got, want = (be.standardize_rows(x.copy(), mean, std) for be in (numba_be, numpy_be))
    assert got.dtype == dtype and np.array_equal(got, want)
    assert np.array_equal(want, (x - mean) / std)


@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.bool_, np.float64])
@pytest.mark.parametrize("rows", ["index", "slice"])
def test_upload_rows_converts_as_numpy_does(numpy_be, numba_be, dtype, rows):
    """A host batch gathered into a float32 buffer: the values NumPy's cast gives."""
    host = (np.arange(40 * 6) * 37 % 300 - 40).astype(dtype).reshape(40, 6)
    picked = np.random.default_rng(1).permutation(40)[:9] if rows == "index" else slice(3, 12)
    got, want = (be.upload_rows(host, picked, np.empty((9, 6), np.float32))
                 for be in (numba_be, numpy_be))
    assert np.array_equal(got, want) and np.array_equal(got, host[picked].astype(np.float32))


@pytest.mark.parametrize("bad", [-1, 10])
def test_take_rows_refuses_an_index_outside_the_rows(numba_be, bad):
    x = np.ones((10, 3), np.float32)
    with pytest.raises(IndexError, match="outside the rows"):
        numba_be.take_rows(x, numba_be.asindex([0, bad]), np.empty((2, 3), np.float32))


@pytest.mark.parametrize("dtype", DTYPES)
def test_dropout_masks_are_the_numpy_backends_from_the_same_seed(numpy_be, numba_be, dtype):
    masks = []
    for be in (numpy_be, numba_be):
        rng, out = np.random.default_rng(42), be.empty((64, 33), dtype)
        masks.append([be.dropout_mask(rng, 0.3, out).copy() for _ in range(3)])
    for want, got in zip(*masks):
        assert np.array_equal(got, want)
    assert set(np.unique(want)) == {0.0, dtype(1 / 0.7)}


def test_probe_compiles_and_runs_a_kernel():
    usable, reason = numba_backend.probe()
    assert usable, reason
    assert "numba" in reason and "threads" in reason
    assert fastbp.backend.probe("numba")[0]
    assert "numba" in fastbp.available_backends()


def test_probe_reports_a_broken_kernel(monkeypatch):
    def broken(*args):
        raise RuntimeError("LLVM ERROR: out of registers")

    monkeypatch.setattr(cpu, "sgd_update", broken)
    usable, reason = numba_backend.probe()
    assert not usable
    assert "out of registers" in reason


def test_describe_names_version_threads_layer_and_gemm(numba_be):
    info = numba_be.describe()
    assert info["numba"] and info["threads"] >= 1
    assert info["threading_layer"] == "workqueue"  # chosen by fastbp.backends.threads
    assert info["threads_reason"] and info["gemm"].split(":")[0] in ("numpy", "mkl")


def train(backend, dtype, X, y):
    net = fastbp.MLP([X.shape[1], 24, 16, 4], activation=["relu", "tanh"], backend=backend,
                     dtype=dtype, seed=3)
    net.fit(X, y, epochs=4, batch_size=32, lr=0.05, optimizer="momentum", momentum=0.9,
            weight_decay=1e-3, dropout=0.1, shuffle=True, verbose=0)
    return net.get_weights()


@pytest.mark.parametrize("dtype, rtol", [("float64", 1e-9), ("float32", 1e-4)])
def test_same_seed_and_data_train_the_same_weights_as_numpy(dtype, rtol):
    """Momentum SGD, weight decay, dropout, shuffling, a partial last batch: 4 epochs."""
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((300, 12)), rng.integers(0, 4, 300)
    want, got = train("numpy", dtype, X, y), train("numba", dtype, X, y)
    for (W_want, b_want), (W_got, b_got) in zip(want, got):
        for g, w in ((W_got, W_want), (b_got, b_want)):
            np.testing.assert_allclose(g, w, rtol=rtol, atol=rtol * np.abs(w).max())
