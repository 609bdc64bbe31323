"""The CPU backend: GEMMs by the chosen provider, every elementwise pass one compiled Numba loop.

It is the NumPy backend with the kernel module swapped for :mod:`fastbp.kernels.cpu`: the GEMMs
(NumPy's BLAS or MKL, see :mod:`fastbp.backends.gemm`), the host RNG draws behind dropout masks
and the minibatch gathers are the same calls, so both CPU backends train the same model from the
same seed.

Compiled kernels are cached on disk (``cache=True``: under ``NUMBA_CACHE_DIR``, by default a
per-user folder, see :mod:`fastbp.kernels.cache`), so only the first process ever compiles
them (about 3-7 s for a network's kernels); later processes load them in about 0.1 s, plus
0.3 s to import Numba.

Threads: the GEMMs use the provider's pool, the fused loops Numba's (``NUMBA_NUM_THREADS``,
only for arrays of at least ``kernel.PARALLEL_MIN_WORK`` elements); the two alternate, never
overlap. Which pool runs the loops is decided when the backend is made, whatever was imported
before (:mod:`fastbp.backends.threads`).
"""

import functools
import math

import numba
import numpy as np

from ..kernels import cpu, kernel
from . import threads
from .numpy_backend import NumpyBackend


class NumbaBackend(NumpyBackend):
    """NumPy arrays and the provider's GEMMs, fused passes by the :mod:`fastbp.kernels.cpu`
    loops."""

    name = "numba"
    kernels = cpu

    def __init__(self):
        super().__init__()
        self.thread_plan = threads.configure()

    def take_rows(self, x, index, out):
        if x.ndim != 2:
            return super().take_rows(x, index, out)
        return self.kernels.take_rows(x, index, out)

    def upload_rows(self, host, rows, out):
        """A shuffled batch of a host matrix gathered and converted in one pass, without the
        temporary copy ``host[rows]`` makes (uint8 MNIST rows: every batch of a fit)."""
        if isinstance(host, np.ndarray) and host.ndim == 2 and isinstance(rows, np.ndarray):
            return self.kernels.take_rows(host, rows, out)
        return super().upload_rows(host, rows, out)

    def standardize_rows(self, x, mean, std):
        if x.ndim != 2:
            return super().standardize_rows(x, mean, std)
        return self.kernels.standardize_rows(x, mean, std)

    def decayed_adam_update(self, p, g, m, v, lr, beta1, beta2, eps, t, lam, weights):
        """The decay added inside Adam's one sweep (a sweep of its own over the weights cost
        4.6% of an MNIST-shaped epoch)."""
        starts, ends = weight_spans(weights)
        self.kernels.decayed_adam_update(p, g, m, v, lr, beta1, beta2, eps, t, lam, starts,
                                         ends, self._mirror(p))

    def first_run_notice(self):
        """That the loops compile before the first steps, when the one every step runs first
        has no compiled code (a fresh install, or new code): a few seconds, once."""
        if cpu.FIRST_LOOP.compiled() is not False:  # compiled, or unknown
            return None
        return ("compiling the Numba loops for this machine: the first steps take a few "
                f"seconds, once (cached in {numba.config.CACHE_DIR})")

    def describe(self):
        return {"numba": numba.__version__, "numpy": np.__version__,
                "kernels": cpu.__name__, **self.thread_plan.as_dict(),
                "threading_layer_running": threading_layer(),
                "threads": numba.get_num_threads(),
                "parallel_min_work": kernel.PARALLEL_MIN_WORK, **self.gemms.describe()}


@functools.lru_cache(maxsize=64)
def weight_spans(weights) -> tuple[np.ndarray, np.ndarray]:
    """The ``(starts, ends)`` (int64) in the flat vector of the weight matrices given as
    ``((offset, shape), ...)`` (a network's, the same every step)."""
    starts = np.array([offset for offset, _ in weights], dtype=np.int64)
    ends = starts + np.array([math.prod(shape) for _, shape in weights], dtype=np.int64)
    starts.flags.writeable = ends.flags.writeable = False  # shared by every later call
    return starts, ends


def threading_layer() -> str:
    """The Numba threading layer in use (``omp``, ``tbb`` or ``workqueue``), once one runs."""
    layer = threads.threading_layer()
    return layer or f"not started yet (will load {threads.requested_layer()})"


def probe() -> tuple[bool, str]:
    """Choose the threading layer (:func:`threads.configure`: before anything starts Numba's
    threads), then compile (or load from the cache) and run one small kernel: ``(usable,
    reason)``."""
    try:
        plan = threads.configure()
        p = np.ones(8, dtype=np.float32)
        cpu.sgd_update(p, np.full_like(p, 2.0), 0.25)
        if not (p == 0.5).all():
            return False, f"numba {numba.__version__} computed 1 - 0.25 * 2 = {p.min()}"
    except Exception as exc:  # a broken LLVM must not take fastbp down
        return False, (f"numba {numba.__version__} failed to run a kernel: "
                       f"{type(exc).__name__}: {exc}")
    return True, (f"numba {numba.__version__}, {numba.config.NUMBA_NUM_THREADS} threads "
                  f"({plan.layer})")
