"""Device buffers that outlive a fit: the trainer's weight snapshots and batch buffers.

Every fit needs a snapshot of the weights at the start of each epoch (restored if training
diverges), one for ``keep_best``, and fixed batch buffers when it shuffles, adds noise or
replays captured steps. Made anew by each fit, their first touch is paid again every time: on
a VM each fresh 4 KiB page costs a fault, ~10 us here (measured on an AMD EPYC, 2 vCPUs: the
snapshot of the bench's large net, 40 MB, took 100-127 ms to write fresh and 4 ms into a page
already mapped; its 1-epoch fits run two steps of ~100 ms). So the network keeps them, and a fit
that follows one of the same shapes allocates none.

A buffer is written whole before it is read in every fit, so nothing of one fit reaches the
next through it. A fit starts by dropping the buffers the fit before it did not ask for: a
process that fits many batch sizes holds at most two fits' worth. The cost: a fitted network
holds one parameter vector more (two after ``keep_best``) and its batch buffers.
"""

from __future__ import annotations


class FitBuffers:
    """Named device buffers on ``backend``, kept from one fit to the next."""

    def __init__(self, backend):
        self.backend = backend
        self.kept: dict[tuple, object] = {}
        self.used: set[tuple] = set()

    def get(self, name: str, shape: tuple, dtype):
        """The buffer ``name`` of ``shape`` and ``dtype`` (contents undefined: write it whole
        before reading it)."""
        key = (name, tuple(shape), str(dtype))
        self.used.add(key)
        if key not in self.kept:
            self.kept[key] = self.backend.empty(tuple(shape), dtype)
        return self.kept[key]

    def start_fit(self):
        """Begin a fit: drop the buffers the last fit did not ask for (the rest wait to be
        asked for again)."""
        self.kept = {key: buffer for key, buffer in self.kept.items() if key in self.used}
        self.used = set()
