"""Data-parallel training across the ranks of ``mpiexec``: the :class:`DistributedTrainer`
over the communicators of :mod:`fastbp.distributed`.

Every rank starts from rank 0's weights and random state, so the shuffles are identical. Each
rank computes its slice of every global batch of ``B`` rows; the gradient it computes is scaled
by ``1 / B``, so one all-reduce (a sum) of the flat gradient vectors gives the global batch's
gradient exactly, and every rank makes the same update.
"""

from __future__ import annotations

from . import host
from .distributed import rank_slice
from .trainer import Trainer


def start_identically(net, comm):
    """Every rank starts from rank 0's weights and random state (shuffles, splits)."""
    comm.broadcast(net.params)
    net.rng.bit_generator.state = comm.broadcast_object(net.rng.bit_generator.state)


class DistributedTrainer(Trainer):
    """Data parallel: each rank computes its slice of every global batch, one in-place
    all-reduce of the flat gradient vector per step, the same update everywhere.

    The data stay on the host (a memory-mapped ``.npy`` works): each rank gathers only the rows
    of its slices. ``delta_L`` is scaled by ``1 / global batch``, so the summed gradient is the
    global batch's exactly; the last rank (never empty) adds the weight decay, once.
    """

    def __init__(self, net, opts, X, Y, val, comm):
        self.comm = comm
        super().__init__(net, opts, X, Y, val)
        self.no_grads = self.backend.zeros((net.n_params,), net.dtype)
        # dropout masks differ per rank, from a stream 2^127 draws along per rank; the
        # shuffles (net.rng, untouched here) stay identical on every rank
        self.mask_rng = type(net.rng)(net.rng.bit_generator.jumped(comm.rank + 1))

    def place_data(self, X, Y):
        self.streamed = True
        return X, Y

    @property
    def is_writer(self) -> bool:
        return self.comm.rank == 0

    def step(self, order, lo, hi):
        net, comm = self.net, self.comm
        my_lo, my_hi = rank_slice(lo, hi, comm.rank, comm.size)
        self.current = None
        if my_hi > my_lo:
            Xb, Yb = self.current = self.noisy(*self.batch(order, my_lo, my_hi)[:2])
            net.forward_device(Xb, training=True, rng=self.mask_rng)
            decay = self.opts.weight_decay if comm.rank == comm.size - 1 else 0.0
            net.backward_device(Yb, 1.0 / (hi - lo), decay, self.loss_acc)
        else:
            self.backend.copy(self.no_grads, net.grads)
        comm.allreduce(net.grads)
        self.optimizer.step(net.params, net.grads)

    def stop_requested(self, stop) -> bool:
        """A signal on any rank stops every rank after the same step."""
        return self.comm.allreduce_scalar(stop.signum is not None) > 0

    def loss_so_far(self) -> float:
        return self.comm.allreduce_scalar(self.backend.scalar(self.loss_acc))

    def loss_after_last_update(self) -> float:
        local = super().loss_after_last_update() if self.current is not None else 0.0
        return self.comm.allreduce_scalar(local)

    def set_loss_so_far(self, value):
        super().set_loss_so_far(value if self.comm.rank == 0 else 0.0)

    def epoch_loss(self) -> float:
        return self.loss_so_far() / self.n + self.net.penalty(self.opts.weight_decay)

    def evaluate(self, X, Y):
        lo, hi = rank_slice(0, X.shape[0], self.comm.rank, self.comm.size)
        total, outputs = super().evaluate(X[lo:hi], Y[lo:hi]) if hi > lo else (0.0, None)
        parts = [p for p in self.comm.allgather_object(outputs) if p is not None]
        return self.comm.allreduce_scalar(total), host.concat_rows(parts)
