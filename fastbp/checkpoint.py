"""Training checkpoints that resume exactly: weights, optimizer state, RNG state, position.

A checkpoint is written atomically (see :mod:`fastbp.files`) at the end of every epoch and,
on Ctrl-C / SIGTERM, after the step in flight. It holds everything the next step depends on,
so a run resumed from it ends bit-identical to one that was never interrupted:

- the flat parameter vector and the optimizer's state vectors and step count;
- the model's host RNG state (shuffles, dropout masks);
- the epoch and, for a mid-epoch checkpoint, that epoch's shuffle order, the next row and the
  loss summed so far;
- the history, and the model config (a checkpoint of another architecture is refused).
"""

from __future__ import annotations

import os
import signal
import threading
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from .files import atomic_savez, read_savez

FORMAT = "fastbp-checkpoint"
VERSION = 1
#: config entries that must match between the checkpoint and the network resuming from it
ARCHITECTURE_KEYS = ("sizes", "activation", "output", "loss", "dtype", "leaky_slope",
                     "elu_alpha", "maxout_pieces", "preprocess")


@dataclass
class Position:
    """Where training stands: ``epoch`` finished epochs, or inside epoch ``epoch + 1`` at row
    ``next_row`` of ``order`` with ``loss_so_far`` summed over the rows done."""

    epoch: int
    next_row: int = 0
    order: np.ndarray | None = None
    loss_so_far: float = 0.0

    @property
    def mid_epoch(self) -> bool:
        return self.next_row > 0


def save(path, trainer, position: Position):
    """Write ``trainer``'s state at ``position`` to ``path``."""
    net, be = trainer.net, trainer.backend
    opt_arrays, opt_scalars = trainer.optimizer.state()
    arrays = {"params": be.to_numpy(net.params)}
    arrays.update({f"opt_{k}": be.to_numpy(v) for k, v in opt_arrays.items()})
    if position.order is not None:
        arrays["order"] = np.asarray(position.order)
    if trainer.best is not None:
        arrays["best"] = be.to_numpy(trainer.best)
    meta = {
        "format": FORMAT, "version": VERSION, "config": net.config,
        "optimizer": trainer.opts.optimizer, "optimizer_scalars": opt_scalars,
        "rng_state": net.rng.bit_generator.state, "epoch": position.epoch,
        "next_row": position.next_row, "loss_so_far": position.loss_so_far,
        "history": trainer.history.as_dict(),
    }
    atomic_savez(path, arrays, meta)


def load(path, trainer) -> Position:
    """Restore ``trainer`` (a fresh model and optimizer) from ``path``; returns the position.

    A missing file is a fresh start (so a job can always pass ``resume=True``).
    """
    if not os.path.exists(path):
        return Position(0)
    meta, arrays = read_savez(path, "fastbp checkpoint")
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path!r} is not a fastbp checkpoint (format {meta.get('format')!r})")
    check_compatible(path, meta, trainer)
    net = trainer.net
    net.set_flat_params(arrays["params"])
    trainer.optimizer.load_state({k[4:]: v for k, v in arrays.items() if k.startswith("opt_")},
                                 meta["optimizer_scalars"])
    net.rng.bit_generator.state = meta["rng_state"]
    for key, value in meta["history"].items():
        setattr(trainer.history, key, value)
    if "best" in arrays:
        trainer.best = net.backend.asarray(arrays["best"], net.dtype)
    return Position(meta["epoch"], meta["next_row"], arrays.get("order"), meta["loss_so_far"])


def check_compatible(path, meta, trainer):
    """Refuse a checkpoint of another architecture or optimizer, naming the difference."""
    saved, current = meta["config"], trainer.net.config
    for key in ARCHITECTURE_KEYS:
        if saved.get(key) != current.get(key):
            raise ValueError(f"checkpoint {path!r} is of another architecture: {key} is "
                             f"{saved.get(key)!r} there, {current.get(key)!r} here")
    if meta["optimizer"] != trainer.opts.optimizer:
        raise ValueError(f"checkpoint {path!r} was written with optimizer="
                         f"{meta['optimizer']!r}, this fit uses {trainer.opts.optimizer!r}")


class StopRequest:
    """Records a Ctrl-C / SIGTERM so training can stop after the step in flight."""

    def __init__(self):
        self.signum = None

    def __call__(self, signum, _frame):
        self.signum = signum

    def raise_it(self):
        """The exception the signal would have raised: KeyboardInterrupt or SystemExit."""
        if self.signum == signal.SIGINT:
            raise KeyboardInterrupt("training interrupted; checkpoint written")
        raise SystemExit(128 + self.signum)


@contextmanager
def deferred_signals(enabled: bool):
    """While active (and ``enabled``, in the main thread), SIGINT and SIGTERM only set the
    returned :class:`StopRequest`; the previous handlers come back afterwards."""
    request = StopRequest()
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield request
        return
    previous = {s: signal.signal(s, request) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield request
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
