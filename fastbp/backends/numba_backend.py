"""The CPU backend: BLAS GEMMs through NumPy, every elementwise pass one compiled Numba loop.

It is the NumPy backend with the kernel module swapped for :mod:`fastbp.kernels.cpu`: the GEMMs
(``np.matmul(out=)`` on NumPy's BLAS), the host RNG draws behind dropout masks and the minibatch
gathers are the same calls, so both CPU backends train the same model from the same seed.

Compiled kernels are cached on disk (``cache=True``: under ``NUMBA_CACHE_DIR``, by default a
per-user folder, see :mod:`fastbp.kernels.cache`), so only the first process ever compiles them (about 3-7 s for a network's
kernels); later processes load them in about 0.1 s, plus 0.3 s to import Numba.

Threads: the GEMMs use the BLAS pool (``OPENBLAS_NUM_THREADS``), the fused loops Numba's
(``NUMBA_NUM_THREADS``, only for arrays of at least ``cpu.PARALLEL_MIN_WORK`` elements); the two
alternate, never overlap. What decides the speed is how idle threads wait: OpenMP threads that
spin after a loop steal the cores of the next GEMM, so :mod:`fastbp.kernels.cpu` sets
``OMP_WAIT_POLICY=PASSIVE`` unless the user set it (or ``GOMP_SPINCOUNT``) first.
"""

import os

import numba
import numpy as np

from ..kernels import cpu
from .numpy_backend import NumpyBackend


class NumbaBackend(NumpyBackend):
    """NumPy arrays and BLAS GEMMs, fused passes by the :mod:`fastbp.kernels.cpu` loops."""

    name = "numba"
    kernels = cpu

    def describe(self):
        return {"numba": numba.__version__, "numpy": np.__version__,
                "kernels": cpu.__name__, "threading_layer": threading_layer(),
                "threads": numba.get_num_threads(),
                "parallel_min_work": cpu.PARALLEL_MIN_WORK,
                "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "libgomp default (spin)")}


def threading_layer() -> str:
    """The Numba threading layer in use (``omp``, ``tbb`` or ``workqueue``), once one runs."""
    try:
        return numba.threading_layer()
    except ValueError:  # no parallel loop has run yet in this process
        return f"not started yet (NUMBA_THREADING_LAYER={numba.config.THREADING_LAYER})"


def probe() -> tuple[bool, str]:
    """Compile (or load from the cache) and run one kernel, large enough to start the thread
    team: ``(usable, reason)``."""
    try:
        p = np.ones(cpu.PARALLEL_MIN_WORK, dtype=np.float32)
        cpu.sgd_update(p, np.full_like(p, 2.0), 0.25)
        if not (p == 0.5).all():
            return False, f"numba {numba.__version__} computed 1 - 0.25 * 2 = {p.min()}"
    except Exception as exc:  # a broken LLVM or threading layer must not take fastbp down
        return False, (f"numba {numba.__version__} failed to run a kernel: "
                       f"{type(exc).__name__}: {exc}")
    return True, (f"numba {numba.__version__}, {numba.get_num_threads()} threads "
                  f"({threading_layer()})")
