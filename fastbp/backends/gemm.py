"""CPU GEMM providers: who multiplies the matrices of the CPU backends, chosen when one is made.

``out = a @ b`` for float32/float64 operands, and ``out = a16 @ b16`` for bf16 operands with
float32 accumulation and a float32 ``out`` (bf16 is stored as ``uint16``: the upper half of a
float32, see :mod:`fastbp.backends.mixed`). Operands may be transposed views (``W.T``,
``a_prev.T``); a provider passes them to its library as transposed, never copies them.

- ``numpy``: NumPy's BLAS (``np.matmul(out=)``, OpenBLAS in the wheels). No bf16.
- ``mkl``: Intel MKL's CBLAS (``pip install 'fastbp[mkl]'``, the ``mkl`` wheel's
  ``libmkl_rt``): ``cblas_sgemm``, ``cblas_dgemm`` and ``cblas_gemm_bf16bf16f32``, called by
  address from compiled code (:mod:`fastbp.kernels.cblas`; a ctypes call cost ~4.5 us of
  Python a GEMM). Left to itself, ``libmkl_rt`` threads on whatever OpenMP
  runtime the process loaded first -- PyTorch's spinning libgomp if torch was imported before
  (measured: small steps 4.8x slower) -- and its own OpenMP (``libiomp5``) computes wrong
  products beside that libgomp (their ``omp_*`` symbols clash) and spins 200 ms after every
  GEMM (``KMP_BLOCKTIME``). So the provider threads MKL on oneTBB (the ``tbb`` wheel that the
  ``mkl`` wheel installs; ``MKL_Set_Threading_Layer(TBB)`` before the first call), whose
  workers owe nothing to OpenMP and sleep soon after a GEMM; without oneTBB, MKL runs
  sequentially.
- ``torch``: bf16 GEMMs only, through PyTorch's CPU matmul (oneDNN, which uses AVX512-BF16
  and AMX on any vendor's CPU); the product is rounded to bf16 by the library, then widened
  into the float32 ``out``. torch is imported on first use, its libgomp with its own default
  wait policy (:func:`fastbp.backends.threads.torch_spins_as_by_default`).

:func:`select` takes MKL for float32 on Intel CPUs where it is installed (measured on a
Sapphire Rapids, 2 cores: MKL's SGEMMs 1.12-1.24x faster than OpenBLAS's on the bench's step
GEMMs), NumPy's BLAS elsewhere (MKL's SGEMMs ran the step GEMMs 1.2-1.5x slower than
OpenBLAS's Haswell kernels on an AMD Zen 3, 1.3x slower than its SkylakeX kernels on a Zen 4
and 2.1-2.3x on a Zen 5, measured side by side). For bf16: MKL on Intel CPUs (its AMX kernels
write the float32 product directly: a mid training step took 10.1-10.7 ms against 12.0-12.3
through PyTorch, whose bf16 product must be widened in a second pass; on another machine of
the kind PyTorch's steps took 1.28x / 0.99x / 0.90x MKL's on the bench's small / mid / large,
interleaved), PyTorch's oneDNN
elsewhere where installed (MKL's bf16 kernels do not use AVX512-BF16 on AMD CPUs: 53 GFLOP/s
against 200-330 for oneDNN on the Zen 4), then MKL; none on a CPU without bf16 instructions.
Each choice keeps its reason.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import glob
import importlib.util
import os
import sys

import numpy as np

MKL_HINT = "pip install 'fastbp[mkl]'"
BF16_HINT = f"{MKL_HINT} (MKL's cblas_gemm_bf16bf16f32) or pip install torch (oneDNN)"
#: the vendor string of the CPUs whose float32 GEMMs MKL runs fastest
INTEL = "GenuineIntel"
#: CPU flags (``/proc/cpuinfo``) of bf16 dot-product instructions
BF16_FLAGS = ("avx512_bf16", "amx_bf16")

#: ``MKL_Set_Threading_Layer`` codes: one thread, and oneTBB's pool
MKL_THREADING_SEQUENTIAL, MKL_THREADING_TBB = 1, 4


class NumpyGemm:
    """NumPy's BLAS."""

    name = "numpy"

    def matmul(self, a, b, out):
        return np.matmul(a, b, out=out)

    def describe(self) -> str:
        return f"numpy {np.__version__} BLAS"


class MklGemm:
    """Intel MKL's CBLAS through ctypes (float32, float64, bf16 -> float32)."""

    name = "mkl"

    def __init__(self, path: str, threads: int):
        try:  # the caller of the GEMMs is compiled: the [mkl] extra brings Numba
            from ..kernels import cblas
        except ImportError as exc:
            raise ImportError(f"MKL's GEMMs are called through Numba ({exc}): {MKL_HINT}") \
                from exc
        self.cblas = cblas
        self.path = path
        self.lib = ctypes.CDLL(path)
        self.lib.MKL_Set_Num_Threads.argtypes = [ctypes.c_int]
        self.lib.MKL_Set_Threading_Layer.argtypes = [ctypes.c_int]
        #: output dtype -> (routine address, 1 in that dtype)
        self.routines = {dtype: (self._address(name), dtype(1)) for name, dtype in (
            ("cblas_sgemm", np.float32), ("cblas_dgemm", np.float64))}
        self.bf16_routine = (self._address("cblas_gemm_bf16bf16f32"), np.float32(1))
        self.threading = self._thread_on_tbb(os.path.dirname(path))
        self.lib.MKL_Set_Num_Threads(threads)
        self.version = self._version()

    def _address(self, name) -> int:
        """The address of CBLAS routine ``name`` (AttributeError if MKL lacks it)."""
        return ctypes.cast(getattr(self.lib, name), ctypes.c_void_p).value

    def _thread_on_tbb(self, directory) -> str:
        """Thread MKL on oneTBB (loaded from beside ``libmkl_rt``, with global symbols, where
        MKL's TBB layer looks for it), else sequentially; returns which."""
        found = sorted(glob.glob(os.path.join(directory, "libtbb.so.12*")))
        try:
            ctypes.CDLL(found[0], mode=ctypes.RTLD_GLOBAL)
        except (IndexError, OSError):
            self.lib.MKL_Set_Threading_Layer(MKL_THREADING_SEQUENTIAL)
            return "sequential (oneTBB not found beside MKL)"
        self.lib.MKL_Set_Threading_Layer(MKL_THREADING_TBB)
        return "oneTBB threads"

    def _version(self) -> str:
        buffer = ctypes.create_string_buffer(256)
        try:
            self.lib.mkl_get_version_string(buffer, 256)
        except AttributeError:
            return "MKL"
        return buffer.value.decode(errors="replace").strip()

    def matmul(self, a, b, out):
        routine = self.routines.get(out.dtype.type)
        if routine is None or a.dtype != out.dtype or b.dtype != out.dtype:
            return np.matmul(a, b, out=out)
        return self._gemm(routine, a, b, out)

    def matmul_bf16(self, a16, b16, out):
        """``out = a16 @ b16``: bf16 (``uint16``) operands, float32 accumulation and ``out``."""
        return self._gemm(self.bf16_routine, a16, b16, out)

    def _gemm(self, routine, a, b, out):
        """``out = a @ b`` by the compiled caller (:func:`fastbp.kernels.cblas.gemm`), which
        checks what BLAS would otherwise read or write out of bounds."""
        address, one = routine
        cblas = self.cblas
        status = cblas.gemm(address, a, b, out, one)
        if status == cblas.NEEDS_COPY:  # an operand neither row- nor column-major
            status = cblas.gemm(address, np.ascontiguousarray(a), np.ascontiguousarray(b), out,
                                one)
        if status == cblas.SHAPES_DIFFER:
            raise ValueError(f"GEMM shapes do not match: {a.shape} @ {b.shape} into "
                             f"{out.shape}")
        if status == cblas.OUT_NOT_CONTIGUOUS:
            raise ValueError(f"GEMM output must be C-contiguous, got strides {out.strides}")
        return out

    def describe(self) -> str:
        return f"{self.version}, {self.threading} ({self.path})"


def torch_import_policy():
    """The wait policy ``import torch`` loads PyTorch's libgomp with: its own default, where
    fastbp set a passive one for its Numba kernels (:mod:`fastbp.kernels.openmp`, see
    :func:`fastbp.backends.threads.torch_spins_as_by_default`); without them (no Numba)
    fastbp set none."""
    if "fastbp.kernels.openmp" not in sys.modules:
        return contextlib.nullcontext()
    from .threads import torch_spins_as_by_default

    return torch_spins_as_by_default()


class TorchBf16Gemm:
    """bf16 GEMMs on PyTorch's CPU matmul (oneDNN), imported on first use."""

    name = "torch"

    def __init__(self, threads: int):
        self.threads = threads
        self.torch = None
        self._scratch = {}

    def _import(self):
        if self.torch is None:
            with torch_import_policy():
                import torch

            torch.set_num_threads(self.threads)
            self.torch = torch
        return self.torch

    def matmul_bf16(self, a16, b16, out):
        """``out = a16 @ b16`` (the library rounds the product to bf16; widened into ``out``)."""
        torch = self._import()
        key = out.shape
        if key not in self._scratch:
            self._scratch[key] = torch.empty(out.shape, dtype=torch.bfloat16)
        product = self._scratch[key]
        as_bf16 = lambda x: torch.from_numpy(x).view(torch.bfloat16)  # noqa: E731
        torch.matmul(as_bf16(a16), as_bf16(b16), out=product)
        torch.from_numpy(out).copy_(product)
        return out

    def describe(self) -> str:
        version = self.torch.__version__ if self.torch else "not imported yet"
        return f"torch {version} (oneDNN)"


def cores() -> int:
    """CPUs this process may run on (the threads a provider is given)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def find_mkl() -> str | None:
    """The path of the ``mkl`` wheel's ``libmkl_rt``, or of one on the library path."""
    for prefix in dict.fromkeys((sys.prefix, sys.base_prefix)):
        found = sorted(glob.glob(os.path.join(prefix, "lib", "libmkl_rt.so*")))
        if found:
            return found[0]
    return ctypes.util.find_library("mkl_rt")


def cpuinfo(field: str) -> str | None:
    """The value of ``field`` (``flags``, ``vendor_id``, ``model name``) for the first CPU in
    Linux's ``/proc/cpuinfo``; None elsewhere or when it is missing."""
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                name, _, value = line.partition(":")
                if name.strip() == field:
                    return value.strip()
    except OSError:
        pass
    return None


def cpu_flags() -> set:
    """The instruction-set flags of this CPU (empty off Linux)."""
    return set((cpuinfo("flags") or "").split())


def bf16_missing(flags: set | None = None) -> str | None:
    """Why this CPU has no bf16 GEMM instructions, or None if it has them (``flags``: its
    instruction-set flags, for tests)."""
    flags = cpu_flags() if flags is None else flags
    if flags & set(BF16_FLAGS):
        return None
    return f"this CPU lacks bf16 instructions ({' or '.join(BF16_FLAGS)})"


def cpu_vendor() -> str:
    """The CPU vendor string (``GenuineIntel``, ``AuthenticAMD``; ``unknown`` off Linux)."""
    return cpuinfo("vendor_id") or "unknown"


def torch_installed() -> bool:
    return "torch" in sys.modules or importlib.util.find_spec("torch") is not None


class Gemms:
    """The providers a CPU backend uses: ``fp32`` for float GEMMs and ``bf16`` (None if no
    library can run them here), each with the reason it was chosen."""

    def __init__(self, fp32, fp32_reason, bf16, bf16_reason):
        self.fp32, self.fp32_reason = fp32, fp32_reason
        self.bf16, self.bf16_reason = bf16, bf16_reason

    def describe(self) -> dict:
        bf16 = (f"{self.bf16.name}: {self.bf16.describe()}" if self.bf16 else "unavailable")
        return {"gemm": f"{self.fp32.name}: {self.fp32.describe()}",
                "gemm_reason": self.fp32_reason,
                "gemm_bf16": bf16, "gemm_bf16_reason": self.bf16_reason}


def select(threads: int, mkl_path: str | None = None, flags: set | None = None,
           torch: bool | None = None, vendor: str | None = None) -> Gemms:
    """Choose the providers (the arguments stand in for what is installed, for tests):
    MKL for float32 on an Intel CPU where installed, else NumPy's BLAS; for bf16, if the CPU
    has bf16 instructions, MKL on an Intel CPU where installed, else PyTorch's oneDNN where
    installed, else MKL, else none."""
    mkl_path = find_mkl() if mkl_path is None else mkl_path
    flags = cpu_flags() if flags is None else flags
    torch = torch_installed() if torch is None else torch
    vendor = cpu_vendor() if vendor is None else vendor
    mkl = None
    if mkl_path:
        try:
            mkl = MklGemm(mkl_path, threads)
        except (OSError, AttributeError, ImportError) as exc:
            mkl_reason = f"MKL at {mkl_path} did not load ({exc})"
        else:
            mkl_reason = "MKL is installed"
    else:
        mkl_reason = f"MKL is not installed ({MKL_HINT} for its GEMMs)"
    if mkl and vendor != INTEL:
        fp32, fp32_reason = NumpyGemm(), (f"NumPy's BLAS: MKL is installed, but on this {vendor} "
                                          f"CPU its float32 GEMMs are slower (1.2-1.5x on Zen 3, "
                                          f"1.3x on Zen 4, 2.1-2.3x on Zen 5)")
    else:
        fp32 = mkl or NumpyGemm()
        fp32_reason = mkl_reason if mkl else f"NumPy's BLAS: {mkl_reason}"
    no_bf16 = bf16_missing(flags)
    if no_bf16:
        return Gemms(fp32, fp32_reason, None, no_bf16)
    if mkl and vendor == INTEL:
        return Gemms(fp32, fp32_reason, mkl, "MKL's cblas_gemm_bf16bf16f32 on an Intel CPU "
                                             "(AMX tiles; float32 products, no widening pass)")
    if torch:
        return Gemms(fp32, fp32_reason, TorchBf16Gemm(threads),
                     "PyTorch is installed: oneDNN's bf16 matmul"
                     + (f" (MKL's bf16 GEMMs are slow on a {vendor} CPU)" if mkl else ""))
    if mkl:
        return Gemms(fp32, fp32_reason, mkl, "MKL's cblas_gemm_bf16bf16f32 (PyTorch's oneDNN, "
                                             "faster on this CPU, is not installed)")
    return Gemms(fp32, fp32_reason, None, f"no bf16 GEMM library is installed: {BF16_HINT}")
