"""One loop source, compiled twice: in parallel for large work, serially for small.

:class:`Kernel` wraps each fused loop of :mod:`fastbp.kernels.cpu`; :data:`PARALLEL_MIN_WORK`
and :func:`set_parallel` decide which of its two builds a call runs. Both are cached by Numba
under names that carry the digest of the per-element helpers they compile in.
"""

import hashlib
import pathlib
import types

from numba import njit

from . import codes, floatbits, scalar

#: elements below which a loop runs serially. Waking Numba's thread team costs 0.1-0.3 ms on a
#: VM's idle vCPUs, and right after a GEMM the operands stream from L3 or memory, where one core
#: moves them about as fast as two. Measured in training steps (interleaved fits, 2 vCPUs, Intel
#: Xeon with AMX): all serial against a 2^19 threshold, mid bf16 10.97 against 12.13 ms, mid
#: 20.3 against 20.7, MNIST-shaped Adam 3.97 against 4.13, small 1.87 against 1.94, large bf16
#: 90 against 93 (noise); alone, a 2^22-element SGD sweep is where two threads start to win.
PARALLEL_MIN_WORK = 1 << 22


def source_digest(*modules) -> str:
    """A short digest of the source files of ``modules``."""
    digest = hashlib.sha1()
    for module in modules:
        digest.update(pathlib.Path(module.__file__).read_bytes())
    return digest.hexdigest()[:10]


#: Numba re-validates cached code against the stamp of this file only, not of the helpers it
#: compiled in; naming every cached loop after the source of scalar.py, codes.py and
#: floatbits.py makes an edit there compile afresh instead of loading stale code
DEPENDENCIES = source_digest(scalar, codes, floatbits)


def renamed(fn, suffix):
    """A copy of function ``fn`` named ``<name>_<suffix>`` (the name keys Numba's cache)."""
    copy = types.FunctionType(fn.__code__, fn.__globals__, f"{fn.__name__}_{suffix}")
    copy.__qualname__ = f"{fn.__qualname__}_{suffix}"
    return copy


#: the compile options of every loop, serial and parallel (see :class:`Kernel`)
LOOP_OPTIONS = dict(nogil=True, error_model="numpy")


class Kernel:
    """One loop compiled twice from ``fn``: with ``parallel=True``, and serially (``prange``
    is then ``range``), under distinct names so the two never share a cache entry.
    ``kernel(work, *args)`` runs the parallel one when ``work >= PARALLEL_MIN_WORK``.

    Both follow NumPy's error model (``x / 0`` is inf or nan), as parallel loops always do:
    under Python's, every float division checks its divisor and raises, and that branch keeps
    LLVM from vectorising the loop (Adam's serial step ran 4.6x slower)."""

    def __init__(self, fn, **options):
        self.py_func = fn
        options = {**LOOP_OPTIONS, **options}
        self.parallel = njit(parallel=True, cache=True, **options)(
            renamed(fn, f"parallel_{DEPENDENCIES}"))
        self.serial = njit(cache=True, **options)(renamed(fn, f"serial_{DEPENDENCIES}"))

    @classmethod
    def with_options(cls, **options):
        """A decorator: :class:`Kernel` with these njit options on top of :data:`LOOP_OPTIONS`
        (``fastmath={"reassoc"}`` for a sum whose order may change, say)."""
        return lambda fn: cls(fn, **options)

    @staticmethod
    def runs_parallel(work) -> bool:
        """Whether a call on ``work`` elements runs the parallel build."""
        return PARALLEL_ENABLED and work >= PARALLEL_MIN_WORK

    def compiled(self):
        """Whether the serial build has compiled code, in this process or in Numba's on-disk
        cache valid for its source (Numba's index, stamp check included); None when that cache
        cannot be read (its index is Numba's private API)."""
        if self.serial.overloads:
            return True
        try:
            return bool(self.serial._cache._cache_file._load_index())
        except Exception:  # a Numba whose cache internals moved: unknown, not a guess
            return None

    def __call__(self, work, *args):
        return (self.parallel if self.runs_parallel(work) else self.serial)(*args)


#: whether loops of at least PARALLEL_MIN_WORK elements run on Numba's threads
PARALLEL_ENABLED = True


def set_parallel(enabled: bool):
    """Run large loops on Numba's threads (the default), or every loop serially."""
    global PARALLEL_ENABLED
    PARALLEL_ENABLED = bool(enabled)
