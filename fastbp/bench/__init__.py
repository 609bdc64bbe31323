"""``fastbp bench``: every backend timed on identical work, side by side.

The package: :mod:`.cases` (what to time), :mod:`.floor` (the GEMMs of a step),
:mod:`.runners` (the columns), :mod:`.torch_peer` (PyTorch), :mod:`.measure` (the interleaved
rounds), :mod:`.report` (machine, JSON, table), :mod:`.figures` (plots), :mod:`.command`
(the flags and ``run``).

What one measurement is
-----------------------
A *round* is one epoch of :meth:`fastbp.MLP.fit` over ``steps`` batches of synthetic data
(random normal features, random class labels; ReLU hidden layers, softmax + cross-entropy,
plain SGD, shuffle off, no validation, ``verbose=0``), the same host arrays for every backend.
Its time is the epoch's wall time as ``fit`` records it (``History.seconds``): from the first
batch to the read of the epoch's loss, which is a device synchronisation, so queued GPU work is
inside the timed region; what a ``fit`` call does once (checking ``X`` and ``y``, copying them to
the device) is not charged to the steps. ms/step is that time over ``steps``.

Beside the backends, on the same shapes:

- the **GEMM floor**: ``backend.matmul`` of exactly the step's GEMMs -- ``a_{l-1} @ W_l`` and
  ``a_{l-1}.T @ delta_l`` for every layer, ``delta_l @ W_l.T`` for every layer but the first,
  in the step's order and sharing buffers as the step does (:func:`.floor.step_gemms`) --
  ``steps`` times, then ``synchronize()``; on NumPy's BLAS for the host backends and on CuPy
  (cuBLAS) for the GPU one. A step that runs these GEMMs cannot beat it;
- **PyTorch** (``--compare-torch``): ``nn.Sequential`` of ``Linear``/``ReLU``,
  ``CrossEntropyLoss``, ``optim.SGD``, eager, on the GPU when one answers (TF32 off), else on the
  CPU with as many threads as NumPy's BLAS, in a worker process of its own (its OpenMP threads
  would otherwise share this process, and the wait policy Numba's kernels set, with ours);
  it times its own epoch, ending with ``torch.cuda.synchronize()`` on a GPU.

Every runner first runs ``warmup`` rounds (compiling Numba kernels, filling caches and memory
pools), then ``repeats`` rounds, the runners taking turns round-robin -- and the turn order
rotating each repeat -- so that the drift of a shared machine falls on all of them alike.
Every round waits :data:`.measure.SETTLE_SECONDS` first, so that the pools of the last one
(OpenBLAS's threads spin ~0.1 s after a call) are asleep when it starts.

GFLOP/s counts the nominal ``6 N sum_l n_{l-1} n_l`` flops of a step (three GEMMs per layer,
batch ``N``). "% floor" is the GEMM floor's time over the runner's: 100% would be a step that
costs nothing but its GEMMs.
"""

from __future__ import annotations

from .command import configure_parser, run

__all__ = ["configure_parser", "run"]
