"""Host-to-device copies of training data that neither pin the whole set nor stall the GPU.

* :func:`upload`: a resident training set goes over in chunks of :data:`CHUNK_BYTES`, and
  CuPy's pinned-memory pool is emptied after, so that a 20 GB set does not leave 20 GB of
  page-locked host memory cached in the pool (``cupy.asarray`` stages a whole array through it).
* :class:`PinnedBatches`: a set streamed batch by batch is gathered on the host into one of two
  pinned buffers and copied on a copy stream of its own. The host gathers batch ``k + 1`` while
  the GPU still computes step ``k`` (nothing waits for the GPU except a buffer's copy from two
  batches ago); the compute stream waits for the copy by an event, and the copy waits for the
  steps already queued (they may still read the device batch buffer it overwrites).
"""

from __future__ import annotations

import numpy as np

#: bytes per host-to-device chunk of a resident upload
CHUNK_BYTES = 64 * 2**20


def upload(cupy, host, dtype):
    """``host`` (a NumPy array, or anything ``numpy.asarray`` takes) as a new C-contiguous
    device array of ``dtype``, copied in chunks of rows; the pinned pool is freed after."""
    host = np.asarray(host)
    dtype = np.dtype(dtype if dtype is not None else host.dtype)
    out = cupy.empty(host.shape, dtype)
    if host.ndim == 0 or host.size == 0:
        out[...] = cupy.asarray(host.astype(dtype))
        return out
    row_bytes = max(1, host[0].size * dtype.itemsize)
    step = max(1, CHUNK_BYTES // row_bytes)
    for lo in range(0, host.shape[0], step):
        out[lo:lo + step].set(np.ascontiguousarray(host[lo:lo + step], dtype=dtype))
    cupy.get_default_pinned_memory_pool().free_all_blocks()
    return out


class PinnedBatches:
    """Copies of host rows into fixed device buffers through two pinned host buffers per
    batch shape and a copy stream (see the module docstring)."""

    def __init__(self, cupy, empty_pinned=None):
        if empty_pinned is None:
            import cupyx

            empty_pinned = cupyx.empty_pinned
        self.cupy = cupy
        self.empty_pinned = empty_pinned
        self.copy_stream = cupy.cuda.Stream(non_blocking=True)
        self._slots = {}

    def _next_slot(self, shape, dtype):
        """``(pinned buffer, event of its last copy)``, the two of a shape taken in turn."""
        key = (tuple(shape), np.dtype(dtype).char)
        if key not in self._slots:
            self._slots[key] = [[(self.empty_pinned(shape, dtype), self.cupy.cuda.Event())
                                 for _ in range(2)], 0]
        pair, turn = self._slots[key]
        self._slots[key][1] = 1 - turn
        return pair[turn]

    def copy_rows(self, host, rows, out):
        """``out[...] = host[rows]`` (``rows``: a slice or an index array), asynchronously;
        work queued after it on the current stream sees the new rows."""
        buffer, copied = self._next_slot(out.shape, out.dtype)
        copied.synchronize()  # this buffer's previous copy (two batches ago) is done
        buffer[...] = host[rows]
        compute = self.cupy.cuda.get_current_stream()
        self.copy_stream.wait_event(compute.record())
        out.set(buffer, stream=self.copy_stream)
        copied.record(self.copy_stream)
        compute.wait_event(copied)
        return out
