"""The GPU backend's GEMMs: a cuBLAS handle of fastbp's own, behind a small interface.

Why not ``cupy.matmul``: every CuPy cuBLAS wrapper calls ``setStream``, which raises
``NotImplementedError`` while the stream captures (cupy ``cupy_backends/cuda/libs/cublas.pyx``,
cupy issue 6290), so no step with a GEMM could be captured as a CUDA graph; and CuPy picks the
float32 compute type from ``CUPY_TF32`` in the environment, so ``CUPY_TF32=1`` would quietly
turn ``precision="highest"`` into TF32.

:class:`CublasGemm` holds its own handle from a maintained binding (nvmath-python's
``nvmath.bindings.cublas``), runs on CuPy's current stream, and gives cuBLAS a preallocated
workspace (``cublasSetWorkspace``, set again after every ``cublasSetStream``, which resets it),
so no GEMM allocates while a stream captures. The compute type of every call is explicit
(:func:`gemm_types`): float32 exact (``COMPUTE_32F`` with the default, non-TF32, math mode),
TF32 (``COMPUTE_32F_FAST_TF32``) or bf16 inputs with float32 accumulation and output.

Row-major arrays are handed to column-major cuBLAS as their transposes: ``C = A @ B`` is
computed as ``C^T = B^T A^T`` (:func:`gemm_arguments`), so C-contiguous operands and transposed
views of them (``W.T``, ``a_prev.T``) are read in place, never copied.

:class:`HostCublas` is a NumPy stand-in for the binding (same calls, same column-major
arguments, raw pointers): ``cupy-sim`` runs its GEMMs through :class:`CublasGemm` on it, so the
argument mapping, the stream and workspace protocol and the bf16 path run in CI without a GPU.
"""

from __future__ import annotations

import ctypes
import importlib.metadata
from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np

#: cuBLAS's recommended workspace on Hopper (4 MiB suffices before it): preallocated once
WORKSPACE_BYTES = 32 * 2**20
#: cudaDataType_t values (library_types.h)
DATA_TYPES = {"R_32F": 0, "R_64F": 1, "R_16BF": 14}


@dataclass(frozen=True)
class GemmTypes:
    """The cuBLAS types of one GEMM: ``operand`` (A and B), ``output`` (C) as cudaDataType
    names, and the ``compute`` type (cublasComputeType_t name, without ``CUBLAS_``)."""

    operand: str
    output: str
    compute: str

    @property
    def scalar(self):
        """The dtype of ``alpha`` and ``beta`` for this compute type."""
        return np.float64 if self.compute == "COMPUTE_64F" else np.float32


def gemm_types(dtype, precision: str) -> GemmTypes:
    """The types of a GEMM on arrays of ``dtype`` at ``precision``, the rule in one place:

    ==========  ===========  =====================================================
    dtype       precision    operands / output / compute
    ==========  ===========  =====================================================
    float64     any          R_64F / R_64F / COMPUTE_64F
    float32     highest      R_32F / R_32F / COMPUTE_32F (IEEE float32, no TF32)
    float32     tf32         R_32F / R_32F / COMPUTE_32F_FAST_TF32
    float32     bf16         R_16BF / R_32F / COMPUTE_32F (bf16 products, float32 sums)
    ==========  ===========  =====================================================

    Nothing in the environment enters (``CUPY_TF32`` changes nothing here).
    """
    dtype = np.dtype(dtype)
    if dtype == np.float64:
        return GemmTypes("R_64F", "R_64F", "COMPUTE_64F")
    if dtype != np.float32:
        raise TypeError(f"GEMMs run on float32 or float64 arrays, got {dtype}")
    compute = {"highest": ("R_32F", "COMPUTE_32F"), "tf32": ("R_32F", "COMPUTE_32F_FAST_TF32"),
               "bf16": ("R_16BF", "COMPUTE_32F")}
    if precision not in compute:
        raise ValueError(f"precision must be one of {list(compute)}, got {precision!r}")
    operand, kind = compute[precision]
    return GemmTypes(operand, "R_32F", kind)


@dataclass(frozen=True)
class ColumnMajor:
    """How cuBLAS reads a row-major 2-D array ``x`` of shape ``(r, c)`` so that it means
    ``x^T`` (``c x r``): ``op`` "N" when its rows are contiguous (the buffer IS ``x^T`` in column
    major, leading dimension the row stride), "T" when its columns are (a transposed view: the
    buffer is ``x`` in column major, transposed by cuBLAS)."""

    op: str
    ld: int


def column_major(x) -> ColumnMajor:
    """The :class:`ColumnMajor` reading of ``x``; a ValueError if no BLAS layout fits."""
    rows, cols = x.shape
    if x.size == 0:  # nothing is read: any layout will do
        return ColumnMajor("N", max(cols, 1))
    s0, s1 = (s // x.itemsize for s in x.strides)
    if s1 == 1 or cols == 1:  # rows contiguous: the buffer is x^T, column major
        ld = s0 if rows > 1 else max(cols, 1)
        if ld >= max(cols, 1):
            return ColumnMajor("N", ld)
    if s0 == 1 or rows == 1:  # columns contiguous: the buffer is x, column major
        ld = s1 if cols > 1 else max(rows, 1)
        if ld >= max(rows, 1):
            return ColumnMajor("T", ld)
    raise ValueError(f"a GEMM operand must have contiguous rows or columns, got shape "
                     f"{x.shape} with strides {x.strides}")


def gemm_arguments(a, b, out) -> dict:
    """cuBLAS arguments for row-major ``out = a @ b``: ``C^T = B^T A^T``, so cuBLAS's first
    operand is ``b``, its second ``a``; ``m, n, k`` are ``out.shape[1], out.shape[0],
    a.shape[1]``."""
    (m_rows, k), (k_b, n_cols) = a.shape, b.shape
    if k != k_b or out.shape != (m_rows, n_cols):
        raise ValueError(f"GEMM shapes do not match: {a.shape} @ {b.shape} -> {out.shape}")
    if not out.flags.c_contiguous:
        raise ValueError(f"a GEMM output must be C-contiguous, got strides {out.strides}")
    first, second = column_major(b), column_major(a)
    return {"transa": first.op, "transb": second.op, "m": n_cols, "n": m_rows, "k": k,
            "lda": first.ld, "ldb": second.ld, "ldc": max(n_cols, 1)}


class CublasGemm:
    """``out = a @ b`` through a cuBLAS handle of fastbp's own (see the module docstring).

    ``binding`` is ``nvmath.bindings.cublas`` (or :class:`HostCublas`), ``current_stream()``
    the handle of CuPy's current stream, ``pointer(x)`` the device address of an array,
    ``workspace`` a preallocated device buffer (kept as long as the handle), ``data_types``
    cudaDataType values by name. Calls on one stream run in order; fastbp never runs GEMMs on
    two streams at once, so they share the one workspace (and one handle per device serves every
    backend instance of the process: :func:`device_gemm`).
    """

    captures = True

    def __init__(self, binding, current_stream, pointer, workspace, data_types=DATA_TYPES,
                 version=""):
        self.cublas = binding
        self.current_stream = current_stream
        self.pointer = pointer
        self.workspace = workspace
        self.data_types = data_types
        self.version = version
        self.handle = binding.create()
        binding.set_pointer_mode(self.handle, binding.PointerMode.HOST)
        binding.set_math_mode(self.handle, binding.Math.DEFAULT_MATH)
        self.stream = None
        self._scalars = {dtype: (np.ones(1, dtype), np.zeros(1, dtype))
                         for dtype in (np.float32, np.float64)}

    def _use_current_stream(self):
        """Point the handle at CuPy's current stream, and the workspace back at ours."""
        stream = self.current_stream()
        if stream != self.stream:
            self.cublas.set_stream(self.handle, stream)
            self.cublas.set_workspace(self.handle, self.pointer(self.workspace),
                                      self.workspace.nbytes)
            self.stream = stream

    def __call__(self, a, b, out, types: GemmTypes):
        """``out = a @ b``; ``a`` and ``b`` already hold ``types.operand`` (bf16: uint16 bits)."""
        args = gemm_arguments(a, b, out)
        if out.size == 0:
            return out
        if args["k"] == 0:
            out.fill(0)
            return out
        self._use_current_stream()
        op = self.cublas.Operation
        alpha, beta = self._scalars[types.scalar]
        operand, output = self.data_types[types.operand], self.data_types[types.output]
        self.cublas.gemm_ex(
            self.handle, getattr(op, args["transa"]), getattr(op, args["transb"]),
            args["m"], args["n"], args["k"], alpha.ctypes.data,
            self.pointer(b), operand, args["lda"], self.pointer(a), operand, args["ldb"],
            beta.ctypes.data, self.pointer(out), output, args["ldc"],
            getattr(self.cublas.ComputeType, types.compute), self.cublas.GemmAlgo.DEFAULT)
        return out

    def describe(self, dtype, precision) -> str:
        types = gemm_types(dtype, precision)
        return (f"fastbp's cuBLAS handle ({self.version}): {types.operand} inputs, "
                f"CUBLAS_{types.compute}, {self.workspace.nbytes // 2**20} MiB workspace")


class CupyGemm:
    """``cupy.matmul`` with the compute type set explicitly per call: the fallback where
    nvmath-python is missing. It cannot be captured in a CUDA graph, nor do bf16."""

    captures = False

    def __init__(self, cupy, reason):
        self.cupy = cupy
        self.reason = reason

    def __call__(self, a, b, out, types: GemmTypes):
        from cupy._core import _routines_linalg as linalg

        if types.operand == "R_16BF":
            raise ValueError(f"bf16 GEMMs need fastbp's cuBLAS handle: {self.reason}")
        kind = {"COMPUTE_32F": "FP32", "COMPUTE_32F_FAST_TF32": "TF32",
                "COMPUTE_64F": "FP64"}[types.compute]
        dtype = np.dtype(out.dtype)
        previous = linalg.get_compute_type(dtype)
        linalg.set_compute_type(dtype, getattr(linalg, f"COMPUTE_TYPE_{kind}"))
        try:
            return self.cupy.matmul(a, b, out=out)
        finally:
            linalg.set_compute_type(dtype, previous)

    def describe(self, dtype, precision) -> str:
        return (f"cupy.matmul, CUBLAS_{gemm_types(dtype, precision).compute} "
                f"(no graph capture: {self.reason})")


_DEVICE_GEMMS: dict = {}


def device_gemm(cupy, device_id=0):
    """The cupy backend's GEMM on device ``device_id`` (the current one), one per device and
    process: :class:`CublasGemm` on nvmath-python, else :class:`CupyGemm` saying what to
    install."""
    try:
        import nvmath
        from nvmath.bindings import cublas
    except ImportError as exc:
        return CupyGemm(cupy, f"nvmath-python is not installed ({exc}; pip install "
                              f"'fastbp[gpu]')")
    if device_id not in _DEVICE_GEMMS:
        data_types = {name: int(getattr(nvmath.CudaDataType, f"CUDA_{name}"))
                      for name in DATA_TYPES}
        workspace = cupy.empty(WORKSPACE_BYTES, dtype=np.uint8)
        _DEVICE_GEMMS[device_id] = CublasGemm(
            cublas, lambda: cupy.cuda.get_current_stream().ptr, lambda x: x.data.ptr, workspace,
            data_types, f"nvmath-python {importlib.metadata.version('nvmath-python')}")
    return _DEVICE_GEMMS[device_id]


class HostCublas:
    """A NumPy stand-in for ``nvmath.bindings.cublas``: the calls :class:`CublasGemm` makes,
    on host memory addressed by raw pointers, column-major like cuBLAS. ``calls`` records
    every call's name and arguments (the tests read the protocol from it). TF32 is computed as
    exact float32 here; bf16 operands are exact bf16."""

    PointerMode = SimpleNamespace(HOST=0, DEVICE=1)
    Math = SimpleNamespace(DEFAULT_MATH=0, TF32_TENSOR_OP_MATH=3)
    Operation = SimpleNamespace(N=0, T=1)
    ComputeType = SimpleNamespace(COMPUTE_32F=68, COMPUTE_32F_FAST_TF32=77, COMPUTE_64F=70)
    GemmAlgo = SimpleNamespace(DEFAULT=-1)
    _DTYPES = {DATA_TYPES["R_32F"]: np.float32, DATA_TYPES["R_64F"]: np.float64,
               DATA_TYPES["R_16BF"]: np.uint16}

    def __init__(self):
        self.calls = []

    def _record(self, name, *args):
        self.calls.append((name, args))

    def create(self):
        self._record("create")
        return 1

    def set_pointer_mode(self, handle, mode):
        self._record("set_pointer_mode", mode)

    def set_math_mode(self, handle, mode):
        self._record("set_math_mode", mode)

    def set_stream(self, handle, stream):
        self._record("set_stream", stream)

    def set_workspace(self, handle, pointer, nbytes):
        self._record("set_workspace", pointer, nbytes)

    def gemm_ex(self, handle, transa, transb, m, n, k, alpha, a, atype, lda, b, btype, ldb,
                beta, c, ctype, ldc, compute, algo):
        """``C = alpha op(A) op(B) + beta C`` (column major) with NumPy; bf16 operands are
        widened to float32 exactly, products summed in float32 (like cuBLAS)."""
        self._record("gemm_ex", transa, transb, m, n, k, atype, ctype, compute)
        scalar = np.float64 if compute == self.ComputeType.COMPUTE_64F else np.float32
        A = self._operand(a, atype, lda, transa, m, k)
        B = self._operand(b, btype, ldb, transb, k, n)
        C = _column_major_view(c, self._DTYPES[ctype], m, n, ldc)
        alpha, beta = (_column_major_view(p, scalar, 1, 1, 1)[0, 0] for p in (alpha, beta))
        C[...] = alpha * (A @ B) + (beta * C if beta else 0)

    def _operand(self, pointer, data_type, ld, trans, rows, cols):
        """``op(X)`` as a ``rows x cols`` float array read from column-major memory."""
        shape = (cols, rows) if trans == self.Operation.T else (rows, cols)
        x = _column_major_view(pointer, self._DTYPES[data_type], *shape, ld)
        if x.dtype == np.uint16:  # bf16 bit patterns: the upper half of a float32
            x = (x.astype(np.uint32) << 16).view(np.float32)
        return x.T if trans == self.Operation.T else x


def _column_major_view(pointer, dtype, rows, cols, ld):
    """The ``rows x cols`` column-major matrix at ``pointer`` (leading dimension ``ld``) as a
    NumPy view of that memory."""
    dtype = np.dtype(dtype)
    count = ld * (cols - 1) + rows
    buffer = (ctypes.c_char * (count * dtype.itemsize)).from_address(pointer)
    return np.ndarray((rows, cols), dtype, buffer, strides=(dtype.itemsize, ld * dtype.itemsize))
