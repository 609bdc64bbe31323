"""libgomp's wait policy, as the Numba CPU kernels need it.

Numba's OpenMP layer spins after each parallel loop, and OpenBLAS after each GEMM; a training
step alternates the two, so spinning threads take each other's cores. libgomp reads
``OMP_WAIT_POLICY`` once, when it is loaded: this module sets a passive policy when it is
imported (unless the user chose one) and records whether that came too late
(:data:`GOMP_STATE`), for ``fastbp.backends.threads`` to pick a threading layer by.
"""

import os
import re


class GompState:
    """What libgomp will do after a parallel loop, as far as this process can know it.

    ``user_policy``: ``OMP_WAIT_POLICY`` or ``GOMP_SPINCOUNT`` was set before fastbp looked;
    ``loaded_early``: a libgomp was already loaded (PyTorch ships and loads one), so it read
    its environment before :func:`wait_passively` could set the policy.
    """

    def __init__(self):
        self.user_policy = "OMP_WAIT_POLICY" in os.environ or "GOMP_SPINCOUNT" in os.environ
        self.loaded_early = libgomp_loaded()


#: the file names of a libgomp whose symbols Numba's OpenMP layer binds to; a vendored copy
#: renamed by auditwheel (``libgomp-<hash>.so.1``, scikit-learn's) stays private to its user
SHARED_LIBGOMP = re.compile(r"/libgomp\.so(\.\d+)*$")


def libgomp_loaded() -> bool:
    """Whether a shared libgomp is mapped into this process (Linux ``/proc/self/maps``):
    PyTorch loads its ``libgomp.so.1`` with global symbols when it is imported."""
    try:
        with open("/proc/self/maps") as maps:
            return any(SHARED_LIBGOMP.search(line.rstrip()) for line in maps)
    except OSError:  # not Linux: no libgomp to worry about
        return False


def wait_passively():
    """Make OpenMP threads sleep, not spin, between parallel loops, unless the user chose.

    Numba's OpenMP layer spins after each loop, and OpenBLAS after each GEMM; a training step
    alternates the two, so the spinners took each other's cores and steps ran 30x slower
    (measured on 2 cores). libgomp reads the policy once, when it is loaded, so this runs at
    import -- and is too late where another library loaded libgomp first, which
    :data:`GOMP_STATE` records (``fastbp.backends.threads`` then keeps the loops off OpenMP).
    """
    if not GOMP_STATE.user_policy:
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"


GOMP_STATE = GompState()
wait_passively()
