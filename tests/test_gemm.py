"""The CPU GEMM providers: selection with its reasons, fallback, and products that match
NumPy's."""

import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fastbp
from fastbp.backends import gemm
from fastbp.kernels import cblas, reference

BF16_CPU = {"avx512f", "avx512_bf16"}


def operands(dtype, m=37, k=53, n=29, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((m, k)).astype(dtype), rng.standard_normal((k, n)).astype(dtype)


def layouts(a, b):
    """The operand layouts a training step passes: plain, ``delta @ W.T``, ``a_prev.T @ delta``."""
    yield a, b
    yield a, np.ascontiguousarray(b.T).T
    yield np.ascontiguousarray(a.T).T, b


@pytest.mark.parametrize("shape, strides, want", [
    ((3, 4), (16, 4), (cblas.NO_TRANS, 4)),
    ((4, 3), (4, 16), (cblas.TRANS, 4)),
    ((3, 2), (32, 8), (0, 0)),  # every other column: must be copied
])
def test_blas_layout_reads_row_and_column_major_views(shape, strides, want):
    assert cblas.blas_layout(*shape, *strides, 4) == want


def test_without_mkl_numpy_blas_is_chosen_and_the_extra_is_named():
    chosen = gemm.select(2, mkl_path="", flags=BF16_CPU, torch=False)
    assert chosen.fp32.name == "numpy"
    assert "fastbp[mkl]" in chosen.fp32_reason
    assert chosen.bf16 is None and "fastbp[mkl]" in chosen.bf16_reason


def test_an_mkl_that_does_not_load_falls_back_to_numpy(tmp_path):
    fake = tmp_path / "libmkl_rt.so.2"
    fake.write_bytes(b"not a library")
    chosen = gemm.select(2, mkl_path=str(fake), flags=set(), torch=False)
    assert chosen.fp32.name == "numpy"
    assert "did not load" in chosen.fp32_reason and str(fake) in chosen.fp32_reason


def test_a_cpu_without_bf16_instructions_is_named():
    chosen = gemm.select(2, mkl_path="", flags={"avx2", "fma"}, torch=True)
    assert chosen.bf16 is None
    assert "lacks bf16" in chosen.bf16_reason and "avx512_bf16" in chosen.bf16_reason


def test_torch_is_preferred_for_bf16_where_installed():
    chosen = gemm.select(2, mkl_path="", flags=BF16_CPU, torch=True)
    assert chosen.bf16.name == "torch" and "oneDNN" in chosen.bf16_reason


@pytest.fixture(scope="module")
def mkl():
    path = gemm.find_mkl()
    if not path:
        pytest.skip("MKL is not installed (pip install 'fastbp[mkl]')")
    return gemm.MklGemm(path, 2)


@pytest.mark.parametrize("torch", [False, True])
def test_mkl_is_chosen_on_intel_for_float32_and_for_bf16(mkl, torch):
    chosen = gemm.select(2, flags=BF16_CPU, torch=torch, vendor="GenuineIntel")
    assert chosen.fp32.name == "mkl" and chosen.bf16.name == "mkl"
    assert "Math Kernel Library" in chosen.fp32.describe()
    assert "Intel" in chosen.bf16_reason


def test_on_amd_torch_serves_bf16_before_mkl(mkl):
    chosen = gemm.select(2, flags=BF16_CPU, torch=True, vendor="AuthenticAMD")
    assert chosen.bf16.name == "torch" and "slow on a AuthenticAMD" in chosen.bf16_reason


def test_on_amd_numpy_blas_stays_for_float32_and_mkl_serves_bf16(mkl):
    chosen = gemm.select(2, flags=BF16_CPU, torch=False, vendor="AuthenticAMD")
    assert chosen.fp32.name == "numpy" and "AuthenticAMD" in chosen.fp32_reason
    assert chosen.bf16.name == "mkl"


@pytest.mark.parametrize("dtype, rtol", [("float32", 1e-5), ("float64", 1e-12)])
def test_mkl_products_match_numpy_in_every_layout(mkl, dtype, rtol):
    for a, b in layouts(*operands(dtype)):
        out = np.empty((a.shape[0], b.shape[1]), dtype)
        mkl.matmul(a, b, out)
        np.testing.assert_allclose(out, a @ b, rtol=rtol, atol=rtol * np.abs(a @ b).max())


def laid_out(values, layout):
    """``values`` as a row-major array, a column-major view (``x.T`` of a row-major array),
    or a view of every other column (which BLAS cannot read: the provider copies it)."""
    if layout == "C":
        return np.ascontiguousarray(values)
    if layout == "F":
        return np.ascontiguousarray(values.T).T
    wide = np.zeros((values.shape[0], 2 * values.shape[1]), values.dtype)
    wide[:, ::2] = values
    return wide[:, ::2]


@settings(max_examples=60, deadline=None)
@given(m=st.integers(0, 40), k=st.integers(0, 40), n=st.integers(0, 40),
       layouts=st.tuples(*[st.sampled_from(["C", "F", "strided"])] * 2),
       dtype=st.sampled_from([np.float32, np.float64]), seed=st.integers(0, 2**16))
def test_mkl_products_match_numpy_for_any_shape_and_layout(mkl, m, k, n, layouts, dtype, seed):
    """The compiled caller reads every operand layout a step passes, copies the one it cannot,
    and writes every entry of ``out`` (a zero inner dimension writes zeros), as NumPy does."""
    a, b = (laid_out(x, layout) for x, layout in zip(operands(dtype, m, k, n, seed), layouts))
    out = np.full((m, n), np.nan, dtype)
    assert mkl.matmul(a, b, out) is out
    want = a.astype(np.float64) @ b
    rtol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(out, want, rtol=rtol, atol=rtol * max(np.abs(want).max(
        initial=0), 1))


def test_mkl_refuses_an_output_it_cannot_write(mkl):
    a, b = operands(np.float32, 4, 5, 3)
    out = np.zeros((3, 4), np.float32).T  # column-major
    with pytest.raises(ValueError, match="C-contiguous"):
        mkl.matmul(a, b, out)
    with pytest.raises(ValueError, match="C-contiguous"):
        mkl.matmul_bf16(*(np.ones(x.shape, np.uint16) for x in (a, b)), out)


def test_mkl_needs_numba_and_says_which_extra(monkeypatch):
    """Without Numba, MKL is not offered: NumPy's BLAS runs, and the reason names the extra."""
    import fastbp.kernels

    monkeypatch.setitem(sys.modules, "fastbp.kernels.cblas", None)  # import raises
    monkeypatch.delattr(fastbp.kernels, "cblas", raising=False)
    chosen = gemm.select(2, mkl_path=gemm.find_mkl() or "libmkl_rt.so", flags=set(),
                         torch=False)
    assert chosen.fp32.name == "numpy"
    assert "Numba" in chosen.fp32_reason and "fastbp[mkl]" in chosen.fp32_reason


@pytest.mark.parametrize("a_shape, b_shape, out_shape", [
    ((4, 5), (6, 3), (4, 3)),  # inner dimensions differ
    ((4, 5), (5, 3), (4, 2)),  # the output is too small
    ((4, 5), (5, 3), (3, 4)),
])
def test_mkl_refuses_shapes_that_do_not_match_as_numpy_does(mkl, a_shape, b_shape, out_shape):
    """A mismatched GEMM is a ValueError before MKL is called (it would read and write out of
    bounds), as ``np.matmul`` refuses it."""
    a, b, out = (np.ones(shape, np.float32) for shape in (a_shape, b_shape, out_shape))
    with pytest.raises(ValueError):
        np.matmul(a, b, out=out)
    with pytest.raises(ValueError, match="shapes do not match"):
        mkl.matmul(a, b, out)
    with pytest.raises(ValueError, match="shapes do not match"):
        mkl.matmul_bf16(*(np.ones(x.shape, np.uint16) for x in (a, b)), out)


def bf16_pair(seed=0):
    a, b = operands(np.float32, seed=seed)
    a16, b16 = (reference.to_bf16(x, np.empty(x.shape, np.uint16)) for x in (a, b))
    exact = reference.from_bf16(a16).astype(np.float64) @ reference.from_bf16(b16)
    return a16, b16, exact


def bf16_providers():
    yield "mkl", gemm.MklGemm(gemm.find_mkl(), 2) if gemm.find_mkl() else None, 1e-5
    # the library rounds the product to bf16: 2^-8 of the largest entry
    yield "torch", gemm.TorchBf16Gemm(2) if gemm.torch_installed() else None, 2.0 ** -8


@pytest.mark.parametrize("name, provider, rtol", list(bf16_providers()))
def test_bf16_products_are_exact_products_of_the_rounded_inputs(name, provider, rtol):
    """bf16 x bf16 is exact in float32, so the only error left is the accumulation's (MKL) or
    the library's rounding of its result (PyTorch)."""
    if provider is None:
        pytest.skip(f"{name} is not installed")
    a16, b16, exact = bf16_pair()
    for a, b in layouts(a16, b16):
        out = np.empty(exact.shape, np.float32)
        provider.matmul_bf16(a, b, out)
        np.testing.assert_allclose(out, exact, rtol=rtol, atol=rtol * np.abs(exact).max())


def test_fit_in_bf16_without_a_bf16_library_names_what_to_install(monkeypatch):
    net = fastbp.MLP([4, 8, 3], backend="numpy", seed=0)
    chosen = gemm.select(2, mkl_path="", flags=BF16_CPU, torch=False)
    monkeypatch.setattr(net.backend, "gemms", chosen)
    before = net.get_flat_params().copy()
    X, y = np.random.default_rng(0).standard_normal((20, 4)), np.arange(20) % 3
    with pytest.raises(ValueError, match=r"precision='bf16'.*fastbp\[mkl\]"):
        net.fit(X, y, epochs=1, verbose=0, precision="bf16")
    assert np.array_equal(net.get_flat_params(), before)


def test_fit_in_bf16_on_a_cpu_without_bf16_says_so(monkeypatch):
    net = fastbp.MLP([4, 8, 3], backend="numpy", seed=0)
    monkeypatch.setattr(net.backend, "gemms", gemm.select(2, mkl_path="", flags=set()))
    with pytest.raises(ValueError, match="lacks bf16"):
        net.fit(np.zeros((6, 4)), np.arange(6) % 3, epochs=1, verbose=0, precision="bf16")


def test_bf16_needs_a_float32_network():
    net = fastbp.MLP([4, 8, 3], backend="numpy", dtype="float64", seed=0)
    if "bf16" not in net.backend.precisions:
        pytest.skip(net.backend.unavailable_precisions["bf16"])
    with pytest.raises(ValueError, match="float32 networks.*float64"):
        net.fit(np.zeros((6, 4)), np.arange(6) % 3, epochs=1, verbose=0, precision="bf16")
