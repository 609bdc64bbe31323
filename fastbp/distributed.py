"""Synchronous data parallelism over MPI (CPU ranks) or NCCL (GPU ranks).

Every rank holds the same model and the same data; each computes its slice of every global
batch, the flat gradient vector is summed across ranks with one in-place all-reduce, and
every rank applies the same update. Gradients are scaled by ``1 / global batch`` before the
sum, so uneven slices are exact, and weight decay is added on rank 0 only (it must be counted
once). The transport is always an existing engine: mpi4py, or NCCL through CuPy.

:class:`Communicator` is the interface the training loop uses; :class:`ThreadGroup` is an
in-process stand-in (one thread per rank) that exercises the same logic in tests and on
machines without MPI or GPUs.
"""

from __future__ import annotations

import os
import threading

import numpy as np

MODES = ("auto", "mpi", "nccl")
#: environment variables by which MPI launchers (MPICH/Hydra, Open MPI, PMIx, Slurm) give the
#: world size and the rank to the processes they start
LAUNCHER_SIZE_VARIABLES = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_SIZE", "MPI_LOCALNRANKS",
                           "SLURM_NTASKS")
LAUNCHER_RANK_VARIABLES = ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK", "SLURM_PROCID")
#: ... and the rank among the processes on this machine (MPICH/Hydra, Open MPI, Slurm, torchrun)
LAUNCHER_LOCAL_RANK_VARIABLES = ("MPI_LOCALRANKID", "OMPI_COMM_WORLD_LOCAL_RANK", "SLURM_LOCALID",
                                 "LOCAL_RANK")


class Communicator:
    """What the training loop needs from a group of ranks. Arrays are backend arrays."""

    rank = 0
    size = 1

    def allreduce(self, array):
        """In place: ``array = sum over ranks of array``."""
        raise NotImplementedError

    def broadcast(self, array, root=0):
        """In place: every rank's ``array`` becomes ``root``'s."""
        raise NotImplementedError

    def allgather_object(self, obj) -> list:
        """``[obj of rank 0, obj of rank 1, ...]`` on every rank (small host objects)."""
        raise NotImplementedError

    def broadcast_object(self, obj, root=0):
        """``root``'s ``obj`` on every rank (small host objects)."""
        return self.allgather_object(obj)[root]

    def allreduce_scalar(self, value: float) -> float:
        """Sum of a Python number over ranks, in rank order."""
        return float(sum(self.allgather_object(float(value))))


class MPICommunicator(Communicator):
    """mpi4py's COMM_WORLD; device arrays go through the host (the mpich wheel is not
    CUDA-aware)."""

    def __init__(self, backend):
        from mpi4py import MPI

        self.MPI, self.comm, self.backend = MPI, MPI.COMM_WORLD, backend
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()

    def _on_host(self, array, operation):
        host = self.backend.to_numpy(array)
        operation(host)
        if host is not array:
            self.backend.copy(self.backend.asarray(host), array)

    def allreduce(self, array):
        self._on_host(array, lambda h: self.comm.Allreduce(self.MPI.IN_PLACE, h, self.MPI.SUM))

    def broadcast(self, array, root=0):
        self._on_host(array, lambda h: self.comm.Bcast(h, root=root))

    def allgather_object(self, obj) -> list:
        return self.comm.allgather(obj)


class NCCLCommunicator(MPICommunicator):
    """NCCL all-reduce and broadcast on the device buffers, on CuPy's current stream (so they
    can be captured in a CUDA graph); MPI only bootstraps the NCCL id and moves host objects.
    One rank per GPU: the rank of local rank r uses device ``r % device count``."""

    def __init__(self, backend):
        super().__init__(backend)
        import cupy
        from cupy.cuda import nccl

        if not nccl.available:
            raise RuntimeError(
                "distributed='nccl': CuPy finds no NCCL library (cupy.cuda.nccl.available is "
                "False): pip install 'fastbp[nccl]' (the nvidia-nccl-cu12 wheel CuPy loads), "
                "or use distributed='mpi'")
        # the device was chosen from the launcher's local rank when the backend was created
        # (fastbp.distributed.device_for_rank), before any parameter was placed on it
        uid = self.comm.bcast(nccl.get_unique_id() if self.rank == 0 else None, root=0)
        self.cupy, self.nccl = cupy, nccl
        self.nccl_comm = nccl.NcclCommunicator(self.size, uid, self.rank)

    def _nccl_dtype(self, array):
        return {np.dtype("float32"): self.nccl.NCCL_FLOAT32,
                np.dtype("float64"): self.nccl.NCCL_FLOAT64}[np.dtype(array.dtype)]

    def allreduce(self, array):
        stream = self.cupy.cuda.get_current_stream().ptr
        self.nccl_comm.allReduce(array.data.ptr, array.data.ptr, array.size,
                                 self._nccl_dtype(array), self.nccl.NCCL_SUM, stream)

    def broadcast(self, array, root=0):
        stream = self.cupy.cuda.get_current_stream().ptr
        self.nccl_comm.bcast(array.data.ptr, array.size, self._nccl_dtype(array), root, stream)


class ThreadGroup:
    """``size`` in-process ranks (one thread each) sharing a barrier: the test stand-in for
    MPI and NCCL. Sums run in rank order, exactly like a two-rank MPI all-reduce."""

    def __init__(self, size: int):
        self.size = size
        self.barrier = threading.Barrier(size)
        self.slots = [None] * size

    def communicator(self, rank: int, backend) -> Communicator:
        return ThreadCommunicator(self, rank, backend)


class ThreadCommunicator(Communicator):
    """One rank of a :class:`ThreadGroup`."""

    def __init__(self, group: ThreadGroup, rank: int, backend):
        self.group, self.rank, self.size, self.backend = group, rank, group.size, backend

    def allgather_object(self, obj) -> list:
        g = self.group
        g.slots[self.rank] = obj
        g.barrier.wait()
        gathered = list(g.slots)
        g.barrier.wait()
        return gathered

    def allreduce(self, array):
        parts = self.allgather_object(self.backend.to_numpy(array).copy())
        total = parts[0].copy()
        for part in parts[1:]:
            total += part
        self.backend.copy(self.backend.asarray(total), array)

    def broadcast(self, array, root=0):
        source = self.allgather_object(self.backend.to_numpy(array).copy())[root]
        self.backend.copy(self.backend.asarray(source), array)


def launcher_size() -> int:
    """The world size an MPI launcher announced in the environment (1 if none)."""
    return first_number(LAUNCHER_SIZE_VARIABLES, default=1)


def launcher_rank() -> int:
    """This process's rank as the launcher announced it (0 if none)."""
    return first_number(LAUNCHER_RANK_VARIABLES, default=0)


def launcher_local_rank() -> int | None:
    """This process's rank on its machine as the launcher announced it (the world rank where a
    launcher gives only that); None outside a launcher."""
    local = first_number(LAUNCHER_LOCAL_RANK_VARIABLES, default=None)
    if local is not None:
        return local
    return first_number(LAUNCHER_RANK_VARIABLES, default=None)


def device_for_rank(local_rank: int | None, count: int, current: int) -> int:
    """The GPU a rank uses: ``local_rank % count`` (one rank per GPU, in order; a launcher that
    shows each rank one GPU gives ``count == 1``: device 0); outside a launcher the ``current``
    device (as the user chose it)."""
    if count < 1:
        raise RuntimeError("no CUDA GPU answers: CuPy sees 0 devices")
    return current if local_rank is None else local_rank % count


def first_number(names, default):
    for name in names:
        if os.environ.get(name, "").isdigit():
            return int(os.environ[name])
    return default


def make_communicator(mode, backend) -> Communicator | None:
    """The communicator for ``distributed=mode``; None for a single process.

    ``"auto"`` reads the launcher's environment *before* importing mpi4py: no launcher (or a
    world of one) means single-process; else NCCL for the cupy backend and MPI otherwise.
    A :class:`Communicator` instance is used as given (the in-process stand-in).
    """
    if mode is None or isinstance(mode, Communicator):
        return mode
    if mode not in MODES:
        raise ValueError(f"distributed must be None, one of {list(MODES)} or a Communicator, "
                         f"got {mode!r}")
    if mode == "auto":
        if launcher_size() <= 1:
            return None
        mode = "nccl" if backend.name == "cupy" else "mpi"
    if mode == "nccl" and backend.name != "cupy":
        raise ValueError(f"distributed='nccl' needs backend='cupy', not {backend.name!r}")
    try:
        return (NCCLCommunicator if mode == "nccl" else MPICommunicator)(backend)
    except ImportError as exc:
        raise ImportError(f"distributed={mode!r} needs mpi4py and an MPI library "
                          f"(pip install 'fastbp[mpi]'): {exc}") from None


def rank_slice(lo: int, hi: int, rank: int, size: int) -> tuple[int, int]:
    """This rank's contiguous share of rows ``lo:hi`` (sizes differ by at most one)."""
    n = hi - lo
    return lo + rank * n // size, lo + (rank + 1) * n // size
