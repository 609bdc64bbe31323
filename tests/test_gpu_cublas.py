"""fastbp's cuBLAS GEMM: the compute-type rule, the row-major to column-major mapping, and the
handle protocol that lets a GEMM run while a stream captures -- all through
:class:`~fastbp.backends.cublas.HostCublas`, the NumPy stand-in of ``nvmath.bindings.cublas``
(no GPU here: what a real handle does on a device is not tested, only what fastbp asks of it).
"""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastbp.backends.cublas import (
    CublasGemm,
    HostCublas,
    column_major,
    gemm_arguments,
    gemm_types,
)

pytestmark = pytest.mark.gpu


def host_gemm(streams=(0,)):
    """A :class:`CublasGemm` on the stand-in; ``streams`` feeds ``current_stream()`` in turn."""
    binding = HostCublas()
    order = iter(streams)
    current = [streams[0]]

    def current_stream():
        current[0] = next(order, current[0])
        return current[0]

    workspace = np.empty(4096, np.uint8)
    return binding, CublasGemm(binding, current_stream, lambda x: x.ctypes.data, workspace)


# -- the compute-type rule ----------------------------------------------------------------------

@pytest.mark.parametrize("dtype,precision,expected", [
    (np.float32, "highest", ("R_32F", "R_32F", "COMPUTE_32F")),
    (np.float32, "tf32", ("R_32F", "R_32F", "COMPUTE_32F_FAST_TF32")),
    (np.float32, "bf16", ("R_16BF", "R_32F", "COMPUTE_32F")),
    (np.float64, "highest", ("R_64F", "R_64F", "COMPUTE_64F")),
    (np.float64, "tf32", ("R_64F", "R_64F", "COMPUTE_64F")),
    (np.float64, "bf16", ("R_64F", "R_64F", "COMPUTE_64F")),
])
def test_compute_type_rule(dtype, precision, expected):
    types = gemm_types(dtype, precision)
    assert (types.operand, types.output, types.compute) == expected


def test_cupy_tf32_in_the_environment_cannot_change_highest(monkeypatch):
    """CuPy reads CUPY_TF32 for its own GEMMs; fastbp's handle asks for COMPUTE_32F and the
    default (non-TF32) math mode explicitly."""
    monkeypatch.setenv("CUPY_TF32", "1")
    binding, gemm = host_gemm()
    a, b = np.ones((3, 2), np.float32), np.ones((2, 4), np.float32)
    gemm(a, b, np.empty((3, 4), np.float32), gemm_types(np.float32, "highest"))
    assert ("set_math_mode", (HostCublas.Math.DEFAULT_MATH,)) in binding.calls
    (name, args), = [call for call in binding.calls if call[0] == "gemm_ex"]
    assert args[-1] == HostCublas.ComputeType.COMPUTE_32F


def test_unknown_precision_and_dtype_are_refused():
    with pytest.raises(ValueError, match="precision must be one of.*'fp8'"):
        gemm_types(np.float32, "fp8")
    with pytest.raises(TypeError, match="float32 or float64.*int32"):
        gemm_types(np.int32, "highest")


# -- the mapping: any layout a step has, any shape ------------------------------------------

def operand(rng, rows, cols, dtype, transposed):
    """A ``rows x cols`` operand, C-contiguous or a transposed view (like ``W.T``)."""
    x = rng.standard_normal((cols, rows) if transposed else (rows, cols)).astype(dtype)
    return x.T if transposed else x


@settings(max_examples=60, deadline=None)
@given(m=st.integers(0, 7), k=st.integers(0, 6), n=st.integers(0, 7),
       a_t=st.booleans(), b_t=st.booleans(), dtype=st.sampled_from([np.float32, np.float64]))
def test_gemm_equals_numpy_for_every_layout(m, k, n, a_t, b_t, dtype):
    rng = np.random.default_rng(m * 100 + k * 10 + n)
    a, b = operand(rng, m, k, dtype, a_t), operand(rng, k, n, dtype, b_t)
    out = np.full((m, n), np.nan, dtype)
    _, gemm = host_gemm()
    gemm(a, b, out, gemm_types(dtype, "highest"))
    np.testing.assert_allclose(out, a @ b, rtol=1e-5, atol=1e-5)


def test_a_sliced_operand_uses_its_row_stride():
    big = np.arange(24, dtype=np.float64).reshape(4, 6)
    a = big[:, :3]  # rows of 3 columns, 6 apart
    assert column_major(a).op == "N" and column_major(a).ld == 6
    out = np.empty((4, 2))
    _, gemm = host_gemm()
    gemm(a, np.ones((3, 2)), out, gemm_types(np.float64, "highest"))
    np.testing.assert_array_equal(out, a @ np.ones((3, 2)))


@pytest.mark.parametrize("bad,match", [
    (lambda: (np.ones((3, 4))[:, ::2], np.ones((2, 2)), np.empty((3, 2))), "contiguous rows"),
    (lambda: (np.ones((3, 2)), np.ones((3, 2)), np.empty((3, 2))), "do not match"),
    (lambda: (np.ones((3, 2)), np.ones((2, 2)), np.empty((2, 3)).T), "C-contiguous"),
])
def test_layouts_cublas_cannot_read_are_refused(bad, match):
    with pytest.raises(ValueError, match=match):
        gemm_arguments(*bad())


def test_bf16_operands_round_then_accumulate_in_float32():
    """Operands as bf16 bit patterns (the upper halves of float32): 1 + 2^-9 rounds to 1."""
    a = np.array([[1 + 2.0**-9, 2.0]], np.float32)
    b = np.array([[1.0], [1.0]], np.float32)
    # 1 + 2^-9 lies below half a bf16 step above 1: truncating and rounding both give 1
    bits = [(x.view(np.uint32) >> 16).astype(np.uint16) for x in (a, b)]
    out = np.empty((1, 1), np.float32)
    _, gemm = host_gemm()
    gemm(*bits, out, gemm_types(np.float32, "bf16"))
    assert out[0, 0] == 3.0


# -- the protocol a captured GEMM needs ------------------------------------------------------

def test_the_handle_follows_the_current_stream_and_keeps_its_workspace():
    """cublasSetStream resets the workspace to cuBLAS's pool, which would allocate while a
    stream captures: every stream change is followed by our preallocated workspace, and a GEMM
    on an unchanged stream sets neither."""
    binding, gemm = host_gemm(streams=(0, 0, 7, 7, 0))
    a, b, out = np.ones((2, 2)), np.ones((2, 2)), np.empty((2, 2))
    for _ in range(5):
        gemm(a, b, out, gemm_types(np.float64, "highest"))
    names = [name for name, _ in binding.calls]
    assert names.count("create") == 1
    assert names[3:] == ["set_stream", "set_workspace", "gemm_ex", "gemm_ex",
                         "set_stream", "set_workspace", "gemm_ex", "gemm_ex",
                         "set_stream", "set_workspace", "gemm_ex"]
    streams = [args[0] for name, args in binding.calls if name == "set_stream"]
    assert streams == [0, 7, 0]
    workspaces = {args for name, args in binding.calls if name == "set_workspace"}
    assert workspaces == {(gemm.workspace.ctypes.data, gemm.workspace.nbytes)}


def test_the_cupy_backend_gemm_is_the_host_handle_in_the_simulator(gpu_backend):
    if gpu_backend.name != "cupy-sim":
        pytest.skip("on a GPU the handle is nvmath-python's")
    before = len(gpu_backend.cublas.calls)
    x = gpu_backend.asarray(np.ones((3, 2)))
    gpu_backend.matmul(x.T, x, gpu_backend.empty((2, 2), np.float64))
    assert "gemm_ex" in [name for name, _ in gpu_backend.cublas.calls[before:]]


def test_without_nvmath_the_gemm_falls_back_and_says_what_to_install(monkeypatch):
    import builtins

    from fastbp.backends.cublas import device_gemm

    real_import = builtins.__import__

    def no_nvmath(name, *args, **kwargs):
        if name.startswith("nvmath"):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_nvmath)
    gemm = device_gemm(cupy=None)
    assert not gemm.captures and "pip install 'fastbp[gpu]'" in gemm.reason
    assert "no graph capture" in gemm.describe(np.float32, "highest")
    with pytest.raises(ValueError, match="bf16 GEMMs need fastbp's cuBLAS handle"):
        gemm(None, None, np.empty(1, np.float32), gemm_types(np.float32, "bf16"))
