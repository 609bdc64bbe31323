"""The GPU backend: CuPy arrays, cuBLAS GEMMs, and the Numba CUDA kernels of ``kernels/gpu.py``.

``cupy`` keeps parameters, optimizer state, activations and the resident training set on an
NVIDIA GPU: every GEMM is ``cupy.matmul(..., out=)`` (cuBLAS), every fused pass one kernel of
:mod:`fastbp.kernels.gpu` launched on CuPy's current stream, and no method synchronises with the
host except the ones that return host values (``to_numpy``, ``scalar``, ``all_finite``). Losses
accumulate in a 1-element device array; the training loop reads it once per epoch.

``cupy-sim`` is the same class with NumPy as its array namespace and the kernels executed by
Numba's CUDA simulator, thread by thread, on the CPU (no streams, no graphs). It exists so that the
GPU code is tested where there is no GPU; it needs ``NUMBA_ENABLE_CUDASIM=1`` in the environment
before numba is first imported, and ``auto`` never picks it.

Both import CuPy and Numba lazily, so probing them is cheap where they cannot run.
"""

from __future__ import annotations

import importlib.metadata
import math
import sys
import warnings
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from ..backend import KernelBackend
from ..kernels.codes import HINGE, IDENTITY, MATCHED_PAIRS, MSE, SOFTMAX

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
        return False, f"no CUDA GPU answers (no NVIDIA driver or GPU here?): {exc}"
    if count == 0:
        return False, "no CUDA GPU answers: CuPy sees 0 devices"
    try:
        if _simulator_enabled():
            return False, f"{SIMULATOR_FLAG}=1 replaced numba.cuda by its simulator in this process"
        _run_tiny_kernel(cupy)
    except Exception as exc:
        return False, (f"a CUDA GPU answers but a Numba CUDA kernel did not run "
                       f"({type(exc).__name__}: {exc}); pip install 'numba-cuda[cu12]' "
                       f"'cuda-toolkit[nvvm,nvrtc]==12.*'")
    props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
    return True, (f"{props['name'].decode()} (cc {props['major']}.{props['minor']}), "
                  f"cupy {cupy.__version__}, numba-cuda {_version('numba-cuda')}")


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
        return False, f"{exc.name or exc} is not installed (pip install 'fastbp[gpu]')"
    if not _simulator_enabled():
        return False, f"the Numba CUDA simulator is off: {_HOW_TO_SIMULATE}"
    return True, f"Numba CUDA simulator (numba {numba.__version__}, " \
                 f"numba-cuda {_version('numba-cuda')})"


@dataclass(frozen=True)
class Geometry:
    """Launch sizes. Every kernel is correct for any of them (block sizes powers of two, within
    ``gpu.ROW_THREADS`` and ``gpu.TILE_*``); they only trade parallelism for per-thread work."""

    threads: int  # threads of an elementwise block
    blocks: int  # most blocks of any launch (grid-stride loops cover the rest)
    row_threads: int  # threads of a row block
    tile: tuple[int, int]  # (columns, row stripes) of a column-sum block

    def elementwise(self, size):
        return min(-(-size // self.threads), self.blocks), self.threads

    def rows(self, n_rows):
        return min(n_rows, self.blocks), self.row_threads

    def columns(self, n_cols):
        return min(-(-n_cols // self.tile[0]), self.blocks), self.tile


#: the simulator runs a Python thread per CUDA thread and pays dearly for every barrier: few
#: threads, grid-stride loops do the rest, a thread per row (the tests run wider rows too)
SIM_GEOMETRY = Geometry(threads=4, blocks=2, row_threads=1, tile=(4, 1))


def gpu_geometry(multiprocessors: int) -> Geometry:
    """256-thread elementwise blocks, up to 32 per SM; a warp per row; 32 x 8 column tiles."""
    return Geometry(threads=256, blocks=32 * multiprocessors, row_threads=32, tile=(32, 8))


class CudaKernels:
    """The vocabulary of :mod:`fastbp.kernels.reference`, each pass one launch of
    :mod:`fastbp.kernels.gpu`, on device arrays.

    ``launch(kernel, grid, block, args)`` is the backend's way to launch on its arrays; ``clock``
    is the :class:`StepClock` that Adam's ``t`` and the dropout stream are read from (a clock
    that never ticks, except while a :class:`StepRunner` runs a step).
    Differences from the reference: ``output_delta_loss`` and ``loss_sum`` ADD their loss sum into
    a 1-element device array ``loss_acc`` instead of returning it; ``dropout_mask`` takes a 64-bit
    seed, not a generator.
    """

    def __init__(self, gpu, geometry, launch, clock):
        self.gpu = gpu
        self.geometry = geometry
        self.launch = launch
        self.clock = clock

    def _launch(self, kernel, config, *args):
        grid, block = config
        if grid:  # else an empty array: nothing to do
            self.launch(kernel, grid, block, args)

    def _elementwise(self, kernel, x, *args):
        self._launch(kernel, self.geometry.elementwise(x.size), x, *args)

    def bias_act_forward(self, z, b, act, alpha, a_out):
        """In place ``z += b``, then ``a_out = g(z)`` (softmax: one block per row)."""
        if act == SOFTMAX:
            self._launch(self.gpu.bias_softmax, self.geometry.rows(z.shape[0]), z, b, a_out)
        else:
            self._elementwise(self.gpu.bias_act, z, b, a_out, act, z.dtype.type(alpha))
        return a_out

    def act_backward(self, delta, z, a, act, alpha, mask=None):
        """In place ``delta *= mask * g'(z)``."""
        use_mask = mask is not None
        self._elementwise(self.gpu.act_backward, delta, z, a, mask if use_mask else delta,
                          act, delta.dtype.type(alpha), use_mask)
        return delta

    def output_delta_loss(self, z, a, y, loss, act, alpha, scale, delta_out, loss_acc):
        """``delta_out = scale * dL/dz`` and ``loss_acc[0] += sum_i L_i``, one block per row."""
        if (act, loss) not in MATCHED_PAIRS and loss not in (MSE, HINGE):
            raise ValueError(f"loss code {loss} has no output delta with activation code {act}; "
                             f"valid: the matched pairs {sorted(MATCHED_PAIRS)}, mse or hinge")
        f = z.dtype.type
        self._launch(self.gpu.output_delta_loss, self.geometry.rows(z.shape[0]),
                     z, a, y, delta_out, loss_acc, loss, act, f(alpha), f(scale), True)
        return delta_out

    def loss_sum(self, z, a, y, loss, loss_acc):
        """``loss_acc[0] += sum_i L_i`` (the output pass without its delta)."""
        f = z.dtype.type
        self._launch(self.gpu.output_delta_loss, self.geometry.rows(z.shape[0]),
                     z, a, y, z, loss_acc, loss, IDENTITY, f(0), f(1), False)
        return loss_acc

    def bias_grad(self, delta, db_out):
        """``db = sum over the batch of delta`` (a parallel column reduction)."""
        self._launch(self.gpu.column_sum, self.geometry.columns(delta.shape[1]), delta, db_out)
        return db_out

    def add_weight_decay(self, dW, W, lam):
        """``dW += lam * W``."""
        self._elementwise(self.gpu.add_weight_decay, dW, W, dW.dtype.type(lam))
        return dW

    def sgd_update(self, p, g, lr):
        self._elementwise(self.gpu.sgd_update, p, g, p.dtype.type(lr))

    def momentum_update(self, p, g, v, lr, mu):
        f = p.dtype.type
        self._elementwise(self.gpu.momentum_update, p, g, v, f(lr), f(mu))

    def adam_update(self, p, g, m, v, lr, beta1, beta2, eps, t):
        """Adam at step ``t``, counted on by the clock in a graph's replays."""
        f = p.dtype.type
        self._elementwise(self.gpu.adam_update, p, g, m, v, f(lr), f(beta1), f(beta2), f(eps),
                          int(t) - self.clock.host, self.clock.counter)

    def dropout_mask(self, seed, p, out):
        """``out = [u >= p] / (1 - p)``, ``u`` the Philox word of (seed, clock, element) / 2^32."""
        if not 0 <= p < 1:
            raise ValueError(f"dropout probability must be in [0, 1), got {p!r}")
        seed = np.uint64(seed)
        matrix = _matrix(out)
        self._elementwise(self.gpu.dropout_mask, matrix, np.uint64(math.ceil(p * 2.0**32)),
                          out.dtype.type(1.0 / (1.0 - p)), seed & np.uint64(0xFFFFFFFF),
                          seed >> np.uint64(32), self.clock.counter)
        return out

    def take_rows(self, x, index, out):
        """Gather ``out = x[index]`` along the first axis."""
        self._launch(self.gpu.take_rows, self.geometry.elementwise(out.size), _matrix(x), index,
                     _matrix(out))
        return out

    def tick(self, clock):
        """``clock.counter[0] += 1`` on the device (no host mirror: see :class:`StepRunner`)."""
        self._launch(self.gpu.tick, (1, 1), clock.counter)


class StepClock:
    """Training steps counted on the device (``counter[0]``) and mirrored on the host
    (``host``, the value ``counter[0]`` has once the work launched so far has run).

    Per-step values that a CUDA graph must not freeze are read from it on the device: Adam's step
    is ``t - host + counter[0]`` with ``t`` and ``host`` as they were at launch (``t`` itself
    eagerly, counting on in replays) and the dropout stream is keyed by ``counter[0]``. One clock
    serves every step of a training run, whichever graph or eager call runs it.
    """

    def __init__(self, counter):
        self.counter = counter
        self.host = 0


def _matrix(x):
    """``x`` as a 2-D array (a column for 1-D ``x``), a view."""
    return x if x.ndim == 2 else x.reshape(x.shape[0], -1)


class CupyBackend(KernelBackend):
    """CuPy arrays on the current CUDA device, cuBLAS GEMMs, fused Numba CUDA kernels."""

    name = "cupy"
    #: GEMM precision: "highest" (IEEE in the arrays' dtype) or "tf32" (float32 GEMMs on TF32
    #: tensor cores: 10-bit mantissa products, float32 accumulation)
    precision = "highest"
    #: "tf32": float32 GEMMs on TF32 tensor cores (float64 GEMMs, and cupy-sim's NumPy GEMMs,
    #: stay as they are)
    precisions = ("highest", "tf32")
    captures_steps = True

    def __init__(self):
        import cupy
        from numba import cuda

        from ..kernels import gpu

        self.xp = cupy
        self._cuda = cuda
        self._views = {}
        self._streams = {}
        device = cupy.cuda.Device()
        cuda.select_device(device.id)
        # small grids are deliberate here (a 10-class output layer is one block)
        warnings.filterwarnings("ignore", message=r"Grid size \d+ will likely result in GPU "
                                "under-utilization")
        geometry = gpu_geometry(device.attributes["MultiProcessorCount"])
        self.kernels = CudaKernels(gpu, geometry, self._launch, self.step_clock())

    # -- how kernels see arrays and streams --------------------------------------------------
    def _launch(self, kernel, grid, block, args):
        """``kernel`` on CuPy's current stream, device arrays passed as cached Numba views."""
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
        shape = x.shape if hasattr(x, "shape") else np.shape(x)
        with self._allocating(shape, dtype if dtype is not None else getattr(x, "dtype", None)):
            return super().asarray(x, dtype)

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
        return self.kernels.take_rows(x, index, out)

    def dropout_mask(self, rng, p, out):
        """Inverted-dropout mask from a Philox stream keyed by one 64-bit draw of ``rng``."""
        return self.kernels.dropout_mask(rng.integers(0, 2**64, dtype=np.uint64), p, out)

    def matmul(self, a, b, out):
        if self.precision == "tf32" and out.dtype == np.float32:
            with _cublas_compute_type(np.float32, "TF32"):
                return self.xp.matmul(a, b, out=out)
        return self.xp.matmul(a, b, out=out)

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
        """A new :class:`StepClock` at 0: one per training run, shared by its step runners."""
        return StepClock(self.zeros((1,), np.int64))

    def step_runner(self, step_fn, clock):
        """A callable running one training step ``step_fn()`` per call, counted by ``clock``;
        captured into a CUDA graph on its second call and replayed after (see
        :class:`StepRunner` for what ``step_fn`` may do)."""
        return StepRunner(self, step_fn, clock, capture=True)

    def _capture(self, step_fn, clock):
        """``step_fn`` then the clock's tick, captured into a CUDA graph (not run).

        Refused if the step allocates through CuPy while captured: the graph would keep writing
        to memory the pool hands out again once the temporary is freed.
        """
        stream = self.xp.cuda.Stream(non_blocking=True)
        with stream, _counting_allocations(self.xp) as allocations:
            stream.begin_capture()
            try:
                step_fn()
                self.kernels.tick(clock)
                if allocations:
                    raise RuntimeError(f"the step allocated {sum(allocations)} bytes of device "
                                       f"memory while captured: preallocate its buffers")
            except BaseException:
                _end_capture_quietly(stream)
                raise
            return stream.end_capture()

    def device_memory_free(self):
        """Free device memory plus what CuPy's pool holds free for reuse."""
        pool = self.xp.get_default_memory_pool()
        return self.xp.cuda.Device().mem_info[0] + pool.free_bytes()

    def describe(self):
        device = self.xp.cuda.Device()
        props = self.xp.cuda.runtime.getDeviceProperties(device.id)
        free, total = device.mem_info
        return {
            "device": f"{props['name'].decode()} (cc {props['major']}.{props['minor']}, "
                      f"{free / 2**30:.1f} of {total / 2**30:.1f} GiB free)",
            "cupy": self.xp.__version__,
            "numba-cuda": _version("numba-cuda"),
            "precision": self.precision,
            "kernels": self.kernels.gpu.__name__,
        }


class StepRunner:
    """Runs a training step ``step_fn()`` per call, with ``clock`` as the kernels' step clock,
    and ticks the clock once per call.

    With ``capture`` (a GPU): the first call runs eagerly (compiling the kernels, filling the
    memory pool), the second captures the step into a CUDA graph and launches it, later calls
    replay the graph: one launch, no Python. ``step_fn`` must therefore be replayable: device work
    on buffers that stay the same every step (no allocation, no host synchronisation), with what
    changes from step to step reaching it through device memory: gather (or copy) the batch into
    fixed buffers BEFORE calling the runner. Adam's ``t`` and the dropout masks move on by
    themselves (see :class:`StepClock`); host state that ``step_fn`` changes in Python (``t += 1``)
    is NOT changed by a replay, so keep such updates outside ``step_fn``. If the capture fails
    (a CuPy build that refuses cuBLAS while capturing, say), ``reason`` says why, a warning is
    issued once, and the step keeps running eagerly.
    """

    def __init__(self, backend, step_fn, clock, capture):
        self.backend = backend
        self.step_fn = step_fn
        self.clock = clock
        self.capture = capture
        self.graph = None
        self.calls = 0
        self.reason = None

    def __call__(self):
        kernels = self.backend.kernels
        outer, kernels.clock = kernels.clock, self.clock
        try:
            if self.graph is None and self.capture and self.calls == 1:
                self._try_capture()
            if self.graph is not None:
                self.graph.launch(self.backend.xp.cuda.get_current_stream())
            else:
                self.step_fn()
                kernels.tick(self.clock)
        finally:
            kernels.clock = outer
        self.clock.host += 1
        self.calls += 1

    def _try_capture(self):
        try:
            self.graph = self.backend._capture(self.step_fn, self.clock)
        except Exception as exc:
            self.reason = f"CUDA graph capture failed, running eagerly: {type(exc).__name__}: {exc}"
            warnings.warn(self.reason, RuntimeWarning, stacklevel=3)


@contextmanager
def _counting_allocations(cupy):
    """Within the block, the sizes of CuPy's device allocations are appended to the list
    yielded."""
    allocate = cupy.cuda.get_allocator()
    sizes = []

    def counted(size):
        sizes.append(size)
        return allocate(size)

    cupy.cuda.set_allocator(counted)
    try:
        yield sizes
    finally:
        cupy.cuda.set_allocator(allocate)


def _end_capture_quietly(stream):
    """End a capture that failed (its graph is invalid) so that the stream is usable again."""
    try:
        stream.end_capture()
    except Exception:  # the capture was already invalidated: nothing to keep
        pass


@contextmanager
def _cublas_compute_type(dtype, name):
    """Within the block, CuPy's GEMMs on ``dtype`` use cuBLAS compute type ``COMPUTE_TYPE_<name>``."""
    from cupy._core import _routines_linalg as linalg

    previous = linalg.get_compute_type(dtype)
    linalg.set_compute_type(dtype, getattr(linalg, f"COMPUTE_TYPE_{name}"))
    try:
        yield
    finally:
        linalg.set_compute_type(dtype, previous)


def _out_of_memory(backend, shape, dtype, exc):
    """A MemoryError that names the shape, dtype and bytes asked for."""
    dtype = np.dtype(dtype if dtype is not None else np.float64)
    nbytes = math.prod(shape) * dtype.itemsize
    return MemoryError(
        f"{backend.name}: out of device memory allocating an array of shape {tuple(shape)} "
        f"{dtype} ({nbytes / 2**20:,.1f} MiB; for activations and batches the first axis is the "
        f"batch size): reduce batch_size or the layer sizes. ({exc})")


class CupySimBackend(CupyBackend):
    """:class:`CupyBackend` on NumPy arrays, its kernels run by Numba's CUDA simulator (tests)."""

    name = "cupy-sim"
    device_memory_free = KernelBackend.device_memory_free  # host memory: no device to fill

    def __init__(self):
        usable, reason = probe_sim()
        if not usable:
            raise RuntimeError(f"backend 'cupy-sim' is not usable here: {reason}")
        from numba import cuda

        from ..kernels import gpu

        self.xp = np
        self._fake_array = cuda.devicearray.FakeCUDAArray
        self.kernels = CudaKernels(gpu, SIM_GEOMETRY, self._launch, self.step_clock())

    def _launch(self, kernel, grid, block, args):
        """Simulate ``kernel`` on the NumPy arrays themselves (wrapped, not copied).

        The simulator's block manager polls its Python threads at every ``syncthreads``; a short
        interpreter switch interval during the launch makes the row kernels ~10x faster.
        """
        interval = sys.getswitchinterval()
        sys.setswitchinterval(_SIM_SWITCH_INTERVAL)
        try:
            kernel[grid, block](*[arg if np.isscalar(arg) else self._fake_array(arg)
                                  for arg in args])
        finally:
            sys.setswitchinterval(interval)

    def to_numpy(self, x):
        return np.asarray(x)

    def synchronize(self):
        """Simulated kernels run synchronously."""

    matmul = KernelBackend.matmul

    captures_steps = False

    def step_runner(self, step_fn, clock):
        """The simulator has no CUDA graphs: every call runs the step eagerly, on the clock."""
        return StepRunner(self, step_fn, clock, capture=False)

    def describe(self):
        return {"simulator": probe_sim()[1], "kernels": self.kernels.gpu.__name__}
