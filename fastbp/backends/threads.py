"""Thread pools that never fight: which pool runs the Numba loops, decided at run time.

A CPU training step alternates two kinds of work: GEMMs on the BLAS library's threads and the
fused Numba loops on Numba's. The two never overlap, so the step is fast exactly when each
pool's threads get off the cores as soon as their work is done. The trap is OpenMP:

- libgomp (Numba's ``omp`` threading layer, and PyTorch's pool) keeps its threads spinning for
  ``GOMP_SPINCOUNT`` iterations after every parallel loop (300 000 by default, ~ms on a busy
  core; infinite with ``OMP_WAIT_POLICY=ACTIVE``), and it reads ``OMP_WAIT_POLICY`` and
  ``GOMP_SPINCOUNT`` once, in the constructor that runs when the library is loaded. There is no
  call to change them later.
- PyTorch's CPU wheel ships a ``libgomp.so.1`` and loads it when it is imported. Numba's
  ``omp`` layer then binds to that already-started copy, so an ``OMP_WAIT_POLICY=PASSIVE`` set
  after ``import torch`` comes too late: the spinning Numba threads steal the cores of the next
  GEMM (measured here, mid config: 100 ms per step instead of 38).

The fix that does not depend on import order is not to run fastbp's loops on OpenMP at all:
before Numba starts its threads, :func:`configure` selects the ``workqueue`` layer through
``numba.config.THREADING_LAYER`` (read when the first parallel loop launches, not at import).
Its threads sleep on a condition variable between loops, so nothing spins whoever loaded
libgomp first; measured here it is also as fast as passive OpenMP without PyTorch. Where the
choice is no longer ours -- the user named a layer (``NUMBA_THREADING_LAYER``), or Numba's
threads already run on OpenMP -- and that libgomp was started before fastbp could ask it to
wait passively, :func:`configure` runs the fused loops serially instead (one core streams them
about as fast as two right after a GEMM) and says so in the plan's reason (``fastbp info``).

PyTorch's libgomp is another matter when fastbp itself imports torch for its bf16 GEMMs
(:class:`fastbp.backends.gemm.TorchBf16Gemm`) while Numba's loops run off OpenMP: that pool then
runs nothing but those GEMMs, and the passive policy fastbp set for Numba's OpenMP only makes
its threads sleep after every GEMM and be woken for the next, a few fused passes later.
:func:`torch_spins_as_by_default` lets torch's libgomp load with its own default instead (spin
300 000 iterations, ~3 ms, then sleep), as in a process without fastbp: measured on an AMD EPYC
Zen 5, 2 vCPUs, bf16 steps took 1.0-1.4 ms against 1.9-2.2 passive (small) and 9.1-9.2 against
10.2-12.9 (mid), in alternating runs.

Both are run-time calls -- Numba's threading-layer setting and MKL's own threading API (see
:mod:`fastbp.backends.gemm`) -- not environment variables read once when a library loads.
"""

from __future__ import annotations

import contextlib
import os

import numba

from ..kernels import kernel, openmp

#: the layer fastbp selects when the choice is still open
PREFERRED_LAYER = "workqueue"
#: the plan of the layer fastbp selected itself, once it has
_CHOSEN = None


def passive_policy_is_ours() -> bool:
    """Whether ``OMP_WAIT_POLICY=PASSIVE`` is the one :mod:`fastbp.kernels.openmp` set (the user
    chose no policy)."""
    return not openmp.GOMP_STATE.user_policy and os.environ.get("OMP_WAIT_POLICY") == "PASSIVE"


@contextlib.contextmanager
def torch_spins_as_by_default():
    """``import torch`` inside this block loads its libgomp without fastbp's passive policy --
    unless the user chose a policy, a libgomp is loaded already, or Numba's loops run (or are
    to run) on OpenMP, whose threads must not spin beside the BLAS threads."""
    layer = threading_layer() or requested_layer()
    if layer == "omp" or not passive_policy_is_ours() or openmp.libgomp_loaded():
        yield
        return
    del os.environ["OMP_WAIT_POLICY"]
    try:
        yield
    finally:
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"


def threading_layer() -> str | None:
    """The Numba threading layer in use, or None before the first parallel loop."""
    try:
        return numba.threading_layer()
    except ValueError:  # no parallel loop has run yet in this process
        return None


def requested_layer() -> str:
    """The layer Numba will load: its config value (``default``: TBB, OpenMP, workqueue)."""
    return str(numba.config.THREADING_LAYER)


def omp_spins() -> bool:
    """Whether a libgomp in this process spins after loops: it was loaded before
    :mod:`fastbp.kernels.openmp` could set ``OMP_WAIT_POLICY`` and nobody chose a policy first."""
    return openmp.GOMP_STATE.loaded_early and not openmp.GOMP_STATE.user_policy


class ThreadPlan:
    """What :func:`configure` decided: the layer, whether the fused loops may run parallel,
    and why."""

    def __init__(self, layer: str, parallel: bool, reason: str):
        self.layer, self.parallel, self.reason = layer, parallel, reason

    def as_dict(self) -> dict:
        return {"threading_layer": self.layer, "parallel_loops": self.parallel,
                "threads_reason": self.reason}


def requested_layer_now() -> str:
    """:func:`requested_layer` once Numba has applied the ``NUMBA_*`` variables set since it
    last read them (fastbp's own ``NUMBA_CACHE_DIR`` among them): its compiler re-reads the
    environment whenever that changed, which would reset a layer chosen in between to the
    default just before the first parallel loop starts the threads. A layer already asked
    for, in code or by the environment, is returned as it is."""
    if requested_layer() == "default":
        numba.core.config.reload_config()
    return requested_layer()


def configure() -> ThreadPlan:
    """Choose where the Numba loops run, before they first run; returns the :class:`ThreadPlan`.

    Called by the Numba backend's probe and whenever one is made (idempotent)."""
    global _CHOSEN
    started = threading_layer()
    if _CHOSEN is not None and started in (None, _CHOSEN.layer) \
            and requested_layer() == _CHOSEN.layer:
        plan = _CHOSEN
    elif started is None and requested_layer_now() == "default":
        numba.config.THREADING_LAYER = PREFERRED_LAYER
        plan = _CHOSEN = ThreadPlan(
            PREFERRED_LAYER, True, "fastbp chose workqueue: its threads sleep between loops, "
                                   "OpenMP's spin for as long as the libgomp loaded first says")
    else:
        layer = started or requested_layer()
        chosen_by = "already running" if started else "NUMBA_THREADING_LAYER"
        if layer == "omp" and omp_spins():
            plan = ThreadPlan(layer, False,
                              f"omp layer ({chosen_by}) on a libgomp started before fastbp "
                              f"(e.g. by torch) that spins: fused loops run serially")
        else:
            plan = ThreadPlan(layer, True, f"{layer} layer ({chosen_by})")
    kernel.set_parallel(plan.parallel)
    return plan
