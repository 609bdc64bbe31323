"""Whole training steps captured once as a CUDA graph and replayed: :class:`StepRunner`.

A replayed graph repeats the captured kernels on the captured pointers, with no Python in
between. Three things make that safe, and each has one place here:

* per-step values a graph must not freeze (Adam's ``t``, the dropout stream) are read on the
  device from a :class:`StepClock`;
* nothing may allocate while the step is captured (:func:`counting_allocations` refuses it:
  the pool would hand the temporary's memory out again while the graph keeps writing to it);
* every device array the captured work touches stays referenced as long as the graph lives:
  the backend reports each array it passes to a kernel or a GEMM while capturing
  (:class:`CaptureRecord`), and the runner keeps the list with the graph -- so a layer that
  drops its workspace for a batch size (it keeps a few) cannot free memory a replay writes.

GEMMs go through fastbp's own cuBLAS handle (:mod:`fastbp.backends.cublas`): CuPy's cuBLAS
wrappers refuse to run while a stream captures (cupy issue 6290).
"""

from __future__ import annotations

import warnings
from contextlib import contextmanager


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


class CaptureRecord:
    """The device arrays that captured work uses, appended by the backend while capturing."""

    def __init__(self):
        self.arrays = []
        self.active = False

    def note(self, arrays):
        """Keep ``arrays`` (the array arguments of one launch or GEMM) if capturing."""
        if self.active:
            self.arrays.extend(arrays)

    @contextmanager
    def recording(self):
        """Within the block, :meth:`note` keeps what it is given; yields the list."""
        self.arrays, self.active = [], True
        try:
            yield self.arrays
        finally:
            self.active = False


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
    is NOT changed by a replay, so keep such updates outside ``step_fn``. If the capture fails,
    ``reason`` says why, a warning is issued once, and the step keeps running eagerly.
    ``keep`` holds every device array the graph uses, for as long as the runner lives.
    """

    def __init__(self, backend, step_fn, clock, capture):
        self.backend = backend
        self.step_fn = step_fn
        self.clock = clock
        self.capture = capture
        self.graph = None
        self.keep = []
        self.calls = 0
        self.reason = None if capture else "this backend does not capture CUDA graphs"

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

    @property
    def captured(self) -> bool:
        """Whether calls replay a CUDA graph."""
        return self.graph is not None

    def _try_capture(self):
        try:
            self.graph, self.keep = self.backend.capture_step(self.step_fn, self.clock)
        except Exception as exc:
            self.reason = ("CUDA graph capture failed, running eagerly: "
                           f"{type(exc).__name__}: {exc}")
            warnings.warn(self.reason, RuntimeWarning, stacklevel=3)


def capture(cupy, record, step_fn, finish):
    """``step_fn()`` then ``finish()``, captured on a fresh non-blocking stream into a CUDA graph
    (not run); returns ``(graph, arrays it uses)``.

    Refused if the step allocates through CuPy while captured, or if the capture could not
    start or end cleanly (the stream is left usable either way).
    """
    stream = cupy.cuda.Stream(non_blocking=True)
    with stream, counting_allocations(cupy) as allocations, record.recording() as arrays:
        stream.begin_capture()
        try:
            step_fn()
            finish()
            if allocations:
                raise RuntimeError(f"the step allocated {sum(allocations)} bytes of device "
                                   f"memory while captured: preallocate its buffers")
        except BaseException:
            _end_capture_quietly(stream)
            raise
        graph = stream.end_capture()
    return graph, arrays


@contextmanager
def counting_allocations(cupy):
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
