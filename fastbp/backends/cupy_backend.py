"""The GPU backend: CuPy arrays, cuBLAS GEMMs, and the Numba CUDA kernels of ``kernels/gpu.py``.

``cupy`` keeps parameters, optimizer state, activations and the resident training set on an
NVIDIA GPU: every GEMM goes through fastbp's own cuBLAS handle (:mod:`fastbp.backends.cublas`),
every fused pass is a kernel of :mod:`fastbp.kernels.gpu` launched on CuPy's current stream
(:mod:`fastbp.backends.cuda_ops`), whole training steps are captured as CUDA graphs
(:mod:`fastbp.backends.graphs`), and no method synchronises with the host except the ones that
return host values (``to_numpy``, ``scalar``, ``all_finite``). Losses accumulate in a 1-element
device array; the training loop reads it once per epoch. The device is chosen when the backend
is made: the launcher's local rank decides it under ``mpiexec`` / ``srun``
(:func:`fastbp.distributed.device_for_rank`), else CuPy's current device.

``cupy-sim`` is the same class with NumPy as its array namespace and the kernels executed by
Numba's CUDA simulator, thread by thread, on the CPU (no streams, no graphs); its GEMMs go
through the same :class:`~fastbp.backends.cublas.CublasGemm` on a NumPy stand-in of cuBLAS.
It exists so that the GPU code is tested where there is no GPU; it needs
``NUMBA_ENABLE_CUDASIM=1`` in the environment before numba is first imported, and ``auto``
never picks it.

Both import CuPy and Numba lazily, so probing them is cheap where they cannot run.
"""

from __future__ import annotations

import importlib.metadata
import math
import sys
from contextlib import contextmanager

import numpy as np

from ..backend import KernelBackend
from ..distributed import device_for_rank, launcher_local_rank
from . import graphs, transfers
from .cublas import CublasGemm, HostCublas, device_gemm, gemm_types
from .cuda_ops import SIM_GEOMETRY, CudaKernels, gpu_geometry

SIMULATOR_FLAG = "NUMBA_ENABLE_CUDASIM"
_HOW_TO_SIMULATE = (f"start the process with {SIMULATOR_FLAG}=1 (set before numba is first "
                    f"imported), e.g. `{SIMULATOR_FLAG}=1 python train.py`")
#: most numba views of device buffers kept per backend before the cache starts afresh
_VIEW_CACHE_SIZE = 4096
#: interpreter switch interval (seconds) while a simulated kernel runs
_SIM_SWITCH_INTERVAL = 1e-4


def _version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _simulator_enabled() -> bool:
    import numba

    return bool(numba.config.ENABLE_CUDASIM)


def probe() -> tuple[bool, str]:
    """``(usable, reason)`` for ``cupy``: CuPy imports, a CUDA device answers, and a Numba CUDA
    kernel compiles and runs on a CuPy array. Returns fast, without raising, where there is no GPU.
    """
    try:
        import cupy
    except ImportError as exc:
        return False, f"cupy is not installed ({exc}; pip install 'fastbp[gpu]')"
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # CUDARuntimeError: no driver, no device
        if _driver_version(cupy) == 0:  # CUDA calls that "insufficient" too: name it
            return False, "no CUDA GPU answers: no NVIDIA driver is installed here"
        return False, f"no CUDA GPU answers (no NVIDIA driver or GPU here?): {exc}"
    if count == 0:
        return False, "no CUDA GPU answers: CuPy sees 0 devices"
    try:
        if _simulator_enabled():
            return False, (f"{SIMULATOR_FLAG}=1 replaced numba.cuda by its simulator in this"
                           " process")
        _run_tiny_kernel(cupy)
    except Exception as exc:
        return False, (f"a CUDA GPU answers but a Numba CUDA kernel did not run "
                       f"({type(exc).__name__}: {exc}); {_gpu_install_hint(cupy)}")
    props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
    return True, (f"{props['name'].decode()} (cc {props['major']}.{props['minor']}), "
                  f"cupy {cupy.__version__}, numba-cuda {_version('numba-cuda')}")


def _gpu_install_hint(cupy) -> str:
    """The extra whose CUDA major version matches CuPy's build (12 unless it says 13)."""
    try:
        cuda13 = cupy.cuda.runtime.runtimeGetVersion() >= 13000
    except Exception:
        cuda13 = False
    extra, cuda = ("gpu-cuda13", 13) if cuda13 else ("gpu", 12)
    return f"pip install 'fastbp[{extra}]' (numba-cuda with NVVM for CUDA {cuda})"


def _driver_version(cupy):
    """The CUDA driver's version (0: no driver), or None where even that call fails."""
    try:
        return cupy.cuda.runtime.driverGetVersion()
    except Exception:
        return None


def _run_tiny_kernel(cupy):
    """Compile and launch :func:`kernels.gpu.sgd_update` on CuPy arrays; raise if it misbehaves."""
    from numba import cuda

    from ..kernels import gpu

    p = cupy.ones(4, dtype=np.float32)
    g = cupy.ones(4, dtype=np.float32)
    gpu.sgd_update[1, 32](cuda.as_cuda_array(p), cuda.as_cuda_array(g), np.float32(0.5))
    if not bool((p == 0.5).all()):
        raise RuntimeError(f"sgd_update on [1, 1, 1, 1] gave {cupy.asnumpy(p)}, not 0.5 each")


def probe_sim() -> tuple[bool, str]:
    """``(usable, reason)`` for ``cupy-sim``: Numba's CUDA simulator is on in this process."""
    try:
        import numba
        from numba import cuda  # noqa: F401  (numba-cuda must import)
    except ImportError as exc:
        return False, f"{exc.name or exc} is not installed (pip install 'fastbp[cpu]')"
    if not _simulator_enabled():
        return False, f"the Numba CUDA simulator is off: {_HOW_TO_SIMULATE}"
    return True, f"Numba CUDA simulator (numba {numba.__version__}, " \
                 f"numba-cuda {_version('numba-cuda')})"


class CupyBackend(KernelBackend):
    """CuPy arrays on one CUDA device, fastbp's cuBLAS GEMMs, fused Numba CUDA kernels."""

    name = "cupy"
    #: GEMM precision: "highest" (IEEE in the arrays' dtype), "tf32" (float32 GEMMs on TF32
    #: tensor cores: 10-bit mantissa products, float32 accumulation) or "bf16" (float32 GEMM
    #: operands rounded to bfloat16 for the tensor cores, float32 accumulation and output; the
    #: weights, activations and optimizer stay float32). float64 GEMMs stay float64.
    precision = "highest"
    precisions = ("highest", "tf32", "bf16")

    def __init__(self):
        import cupy
        from numba import cuda

        from ..kernels import gpu

        self.xp = cupy
        self._cuda = cuda
        self._views = {}
        self._streams = {}
        self.record = graphs.CaptureRecord()
        count = cupy.cuda.runtime.getDeviceCount()
        self.device_id = device_for_rank(launcher_local_rank(), count, cupy.cuda.Device().id)
        cupy.cuda.Device(self.device_id).use()
        cuda.select_device(self.device_id)
        geometry = gpu_geometry(cupy.cuda.Device().attributes["MultiProcessorCount"])
        self.kernels = CudaKernels(gpu, geometry, self._launch, self.step_clock(), self.empty)
        self.gemm = device_gemm(cupy, self.device_id)
        if not self.gemm.captures:
            self.precisions = ("highest", "tf32")
        self.batches = transfers.PinnedBatches(cupy)

    @property
    def captures_steps(self) -> bool:
        """Whether steps are replayed from CUDA graphs (needs fastbp's own cuBLAS handle)."""
        return self.gemm.captures

    # -- how kernels see arrays and streams --------------------------------------------------
    def _launch(self, kernel, grid, block, args):
        """``kernel`` on CuPy's current stream, device arrays passed as cached Numba views."""
        if self.record.active:
            self.record.note([arg for arg in args if not np.isscalar(arg)])
        kernel[grid, block, self._stream()](
            *[arg if np.isscalar(arg) else self._view(arg) for arg in args])

    def _view(self, x):
        """A Numba device-array view of CuPy array ``x``, cached by (pointer, shape, strides,
        dtype) so that a launch does not re-read ``__cuda_array_interface__``. The views do not
        own memory: the caller keeps ``x`` alive across the launch, as any kernel argument."""
        key = (x.data.ptr, x.shape, x.strides, x.dtype.char)
        view = self._views.get(key)
        if view is None:
            if len(self._views) >= _VIEW_CACHE_SIZE:
                self._views.clear()
            view = self._views[key] = self._cuda.from_cuda_array_interface(
                x.__cuda_array_interface__, owner=None, sync=False)
        return view

    def _stream(self):
        """The Numba stream for CuPy's current stream (cached by handle)."""
        handle = self.xp.cuda.get_current_stream().ptr
        stream = self._streams.get(handle)
        if stream is None:
            stream = self._streams[handle] = self._cuda.external_stream(handle) if handle else 0
        return stream

    # -- plumbing -------------------------------------------------------------------------
    @contextmanager
    def _allocating(self, shape, dtype):
        """Turn an out-of-memory error into a MemoryError naming what was asked for."""
        try:
            yield
        except MemoryError as exc:
            raise _out_of_memory(self, shape, dtype, exc) from exc

    def asarray(self, x, dtype=None):
        """A C-contiguous device copy; host arrays go over in chunks (see :mod:`.transfers`)."""
        shape = x.shape if hasattr(x, "shape") else np.shape(x)
        with self._allocating(shape, dtype if dtype is not None else getattr(x, "dtype", None)):
            if isinstance(x, self.xp.ndarray):
                return super().asarray(x, dtype)
            return transfers.upload(self.xp, x, dtype)

    def upload_rows(self, host, rows, out):
        """``out[...] = host[rows]`` through double-buffered pinned memory on a copy stream."""
        return self.batches.copy_rows(host, rows, out)

    def empty(self, shape, dtype):
        with self._allocating(shape, dtype):
            return super().empty(shape, dtype)

    def zeros(self, shape, dtype):
        with self._allocating(shape, dtype):
            return super().zeros(shape, dtype)

    def to_numpy(self, x):
        return self.xp.asnumpy(x)

    def device_array(self, x):
        """A CuPy array, or any ``__cuda_array_interface__`` exporter (a CUDA tensor), as a
        CuPy array sharing its memory (under ``cupy-sim``: NumPy arrays, used as they are)."""
        if isinstance(x, self.xp.ndarray) or hasattr(x, "__cuda_array_interface__"):
            return self.xp.asarray(x)
        return None

    def synchronize(self):
        self.xp.cuda.get_current_stream().synchronize()

    def asindex(self, index):
        return self.asarray(np.asarray(index), np.int64)

    def take_rows(self, x, index, out):
        """Gather ``out = x[index]``; a host ``index`` is bounds-checked here, a device one by
        the kernel (rows out of range come out NaN: no read outside ``x``)."""
        if isinstance(index, np.ndarray) and index.size and not (
                0 <= index.min() and index.max() < x.shape[0]):
            raise IndexError(f"take_rows: index must lie in [0, {x.shape[0]}), got values "
                             f"from {index.min()} to {index.max()}")
        if isinstance(index, np.ndarray):
            index = self.asindex(index)
        return self.kernels.take_rows(x, index, out)

    def dropout_mask(self, rng, p, out):
        """Inverted-dropout mask from a Philox stream keyed by one 64-bit draw of ``rng``."""
        return self.kernels.dropout_mask(_seed(rng), p, out)

    def gaussian_noise(self, x, rng, sigma, out):
        """``out = x + sigma * e``, ``e ~ N(0, 1)`` drawn on the device from a Philox stream
        keyed by one 64-bit draw of ``rng`` (nothing crosses from the host but the key)."""
        return self.kernels.gaussian_noise(_seed(rng), x, sigma, out)

    def matmul(self, a, b, out):
        """``out = a @ b`` on fastbp's cuBLAS handle, the compute type from
        :func:`~fastbp.backends.cublas.gemm_types` (bf16: both operands rounded first)."""
        types = gemm_types(out.dtype, self.precision)
        if types.operand == "R_16BF":
            a, b = self.kernels.to_bf16(a, 0), self.kernels.to_bf16(b, 1)
        if self.record.active:
            self.record.note((a, b, out))
        return self.gemm(a, b, out, types)

    # -- the core: what the reference returns, this backend keeps on the device -------------
    def output_delta_loss(self, z, a, y, loss, act, alpha, scale, delta_out, loss_acc):
        """``delta_out = scale * dL/dz``; ``loss_acc[0] += sum_i L_i`` on the device."""
        return self.kernels.output_delta_loss(z, a, y, loss, act, alpha, scale, delta_out,
                                              loss_acc)

    def loss_sum(self, z, a, y, loss):
        """``sum_i L_i`` as a 1-element device array (read it with :meth:`scalar`)."""
        return self.kernels.loss_sum(z, a, y, loss, self.zeros((1,), z.dtype))

    # -- CUDA graphs ------------------------------------------------------------------------
    def step_clock(self):
        """A new :class:`~fastbp.backends.graphs.StepClock` at 0: one per training run, shared
        by its step runners."""
        return graphs.StepClock(self.zeros((1,), np.int64))

    def step_runner(self, step_fn, clock):
        """A callable running one training step ``step_fn()`` per call, counted by ``clock``;
        captured into a CUDA graph on its second call and replayed after (see
        :class:`~fastbp.backends.graphs.StepRunner` for what ``step_fn`` may do)."""
        runner = graphs.StepRunner(self, step_fn, clock, capture=self.captures_steps)
        if not self.captures_steps:
            runner.reason = f"steps run eagerly: {self.gemm.reason}"
        return runner

    def capture_step(self, step_fn, clock):
        """``step_fn`` then the clock's tick captured into a CUDA graph (not run):
        ``(graph, every device array it uses)``."""
        return graphs.capture(self.xp, self.record, step_fn, lambda: self.kernels.tick(clock))

    def device_memory_free(self):
        """Free device memory plus what CuPy's pool holds free for reuse."""
        pool = self.xp.get_default_memory_pool()
        return self.xp.cuda.Device().mem_info[0] + pool.free_bytes()

    def describe(self):
        device = self.xp.cuda.Device()
        props = self.xp.cuda.runtime.getDeviceProperties(device.id)
        free, total = device.mem_info
        from cupy.cuda import nccl

        return {
            "device": f"{device.id}: {props['name'].decode()} (cc {props['major']}."
                      f"{props['minor']}, {free / 2**30:.1f} of {total / 2**30:.1f} GiB free)",
            "cupy": self.xp.__version__,
            "numba-cuda": _version("numba-cuda"),
            **self.gemm_info(),
            "cuda graphs": "whole steps" if self.captures_steps else self.gemm.reason,
            "nccl": ("available" if nccl.available
                     else "not found by CuPy (distributed='nccl' needs it: fastbp[nccl])"),
            "kernels": self.kernels.gpu.__name__,
        }

    def gemm_info(self) -> dict:
        """The precision in force and what the float32 GEMMs run as under it."""
        return {"precision": self.precision,
                "float32 gemm": self.gemm.describe(np.float32, self.precision)}


def _seed(rng):
    """One 64-bit draw of the host generator ``rng``: the key of a device Philox stream."""
    return rng.integers(0, 2**64, dtype=np.uint64)


def _out_of_memory(backend, shape, dtype, exc):
    """A MemoryError that names the shape, dtype and bytes asked for."""
    dtype = np.dtype(dtype if dtype is not None else np.float64)
    nbytes = math.prod(shape) * dtype.itemsize
    return MemoryError(
        f"{backend.name}: out of device memory allocating an array of shape {tuple(shape)} "
        f"{dtype} ({nbytes / 2**20:,.1f} MiB; for activations and batches the first axis is the "
        f"batch size): reduce batch_size or the layer sizes. ({exc})")


class CupySimBackend(CupyBackend):
    """:class:`CupyBackend` on NumPy arrays, its kernels run by Numba's CUDA simulator and its
    GEMMs by :class:`~fastbp.backends.cublas.CublasGemm` on the NumPy stand-in of cuBLAS
    (tests)."""

    name = "cupy-sim"
    device_memory_free = KernelBackend.device_memory_free  # host memory: no device to fill
    captures_steps = False

    def __init__(self):
        usable, reason = probe_sim()
        if not usable:
            raise RuntimeError(f"backend 'cupy-sim' is not usable here: {reason}")
        from numba import cuda

        from ..kernels import gpu

        self.xp = np
        self._fake_array = cuda.devicearray.FakeCUDAArray
        self.record = graphs.CaptureRecord()
        self.kernels = CudaKernels(gpu, SIM_GEOMETRY, self._launch, self.step_clock(), self.empty)
        self.cublas = HostCublas()
        self.gemm = CublasGemm(self.cublas, lambda: 0, lambda x: x.ctypes.data,
                               np.empty(1024, np.uint8), version="simulated")

    def _launch(self, kernel, grid, block, args):
        """Simulate ``kernel`` on the NumPy arrays themselves (wrapped, not copied).

        The simulator's block manager polls its Python threads at every ``syncthreads``; a short
        interpreter switch interval during the launch makes the row kernels ~10x faster.
        """
        if self.record.active:
            self.record.note([arg for arg in args if not np.isscalar(arg)])
        interval = sys.getswitchinterval()
        sys.setswitchinterval(_SIM_SWITCH_INTERVAL)
        try:
            kernel[grid, block](*[arg if np.isscalar(arg) else self._fake_array(arg)
                                  for arg in args])
        finally:
            sys.setswitchinterval(interval)

    asarray = KernelBackend.asarray

    def upload_rows(self, host, rows, out):
        out[...] = host[rows]
        return out

    def to_numpy(self, x):
        return np.asarray(x)

    def synchronize(self):
        """Simulated kernels run synchronously."""

    def step_runner(self, step_fn, clock):
        """The simulator has no CUDA graphs: every call runs the step eagerly, on the clock."""
        return graphs.StepRunner(self, step_fn, clock, capture=False)

    def describe(self):
        return {"simulator": probe_sim()[1], **self.gemm_info(),
                "kernels": self.kernels.gpu.__name__}
