"""The fit loop: minibatches, shuffling, optimizers, weight decay, dropout, early stopping.

An epoch is one pass over the training set in batches of ``batch_size`` (``None``: the whole
set, batch gradient descent; ``1``: stochastic). Each step runs on the backend:
forward, ``delta_L``, the delta recursion and gradients, one optimizer call. The epoch's loss
accumulates on the device and is read once at the end of the epoch.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

from tqdm.auto import tqdm

from . import checks, host
from .checkpoint import Position, deferred_signals
from .checkpoint import load as checkpoint_load
from .checkpoint import save as checkpoint_save
from .distributed import make_communicator, rank_slice
from .optim import OPTIMIZERS, make_optimizer

#: a training set that would take more than this share of the device's free memory stays on
#: the host and is streamed to the device batch by batch
DEVICE_SHARE = 0.5
#: GEMM precisions a fit may ask for ("tf32": float32 GEMMs on TF32 tensor cores, GPU only;
#: "bf16": bf16 GEMM inputs, float32 accumulation, weights and optimizer state)
PRECISIONS = ("highest", "tf32", "bf16")


@dataclass
class History:
    """What happened, one entry per finished epoch."""

    epoch: list = field(default_factory=list)
    train_loss: list = field(default_factory=list)
    val_loss: list = field(default_factory=list)
    val_score: list = field(default_factory=list)  # accuracy, or R^2 for regression
    seconds: list = field(default_factory=list)
    best_epoch: int | None = None
    stopped_early: bool = False

    @property
    def val_accuracy(self) -> list:
        """The validation accuracy per epoch (R^2 for a regression network)."""
        return self.val_score

    def as_dict(self) -> dict:
        return dict(self.__dict__)

    def plot(self, path):
        """Training and validation cost per epoch on one figure, the best epoch marked."""
        from .plots import plot_history

        plot_history(self, path)

    def __len__(self):
        return len(self.epoch)


@dataclass
class FitOptions:
    """The validated options of :func:`fit`."""

    epochs: int
    batch_size: int | None
    lr: float
    optimizer: str
    momentum: float
    weight_decay: float
    dropout: float
    input_noise: float
    validation_split: float
    early_stopping: int | None
    shuffle: bool
    verbose: int
    callbacks: list
    precision: str


def check_options(epochs=10, batch_size=32, lr=0.01, optimizer="sgd", momentum=0.9,
                  weight_decay=0.0, dropout=0.0, input_noise=0.0, validation_data=None,
                  validation_split=0.0,
                  early_stopping=None, shuffle=True, verbose=1, callbacks=None,
                  precision="highest") -> FitOptions:
    """Validate every option of :func:`fit` (``validation_data`` is checked with the data)."""
    number = checks.check_number
    callbacks = list(callbacks or [])
    for cb in callbacks:
        if not callable(cb):
            raise TypeError(f"callbacks must be callables f(epoch, logs), got {cb!r}")
    options = FitOptions(
        epochs=number(epochs, "epochs", low=1, integer=True),
        batch_size=number(batch_size, "batch_size", low=1, integer=True, allow_none=True),
        lr=number(lr, "lr", low=0, low_open=True),
        optimizer=checks.check_choice(optimizer, "optimizer", OPTIMIZERS + ("lbfgs",)),
        momentum=number(momentum, "momentum", low=0, high=1, high_open=True),
        weight_decay=number(weight_decay, "weight_decay", low=0),
        dropout=number(dropout, "dropout", low=0, high=1, high_open=True),
        input_noise=number(input_noise, "input_noise", low=0),
        validation_split=number(validation_split, "validation_split", low=0, high=1,
                                high_open=True),
        early_stopping=number(early_stopping, "early_stopping", low=1, integer=True,
                              allow_none=True),
        shuffle=bool(shuffle),
        verbose=number(verbose, "verbose", low=0, high=2, integer=True),
        callbacks=callbacks,
        precision=checks.check_choice(precision, "precision", PRECISIONS))
    if validation_data is not None and options.validation_split:
        raise ValueError("give validation_data or validation_split, not both")
    has_validation = validation_data is not None or options.validation_split > 0
    if options.early_stopping and not has_validation:
        raise ValueError("early_stopping needs validation_data or validation_split > 0")
    return options


def fit(net, X, y, validation_data=None, checkpoint=None, resume=False, distributed=None,
        **options) -> History:
    """Train ``net`` on ``(X, y)``; returns the :class:`History`.

    Options (all validated before the model is touched): ``epochs=10``, ``batch_size=32``
    (``None`` for full batch), ``lr=0.01``, ``optimizer='sgd'|'momentum'|'adam'|'lbfgs'``
    (L-BFGS: full batch, ``epochs`` iterations, SciPy's driver; see :mod:`fastbp.lbfgs`),
    ``momentum=0.9``, ``weight_decay=0.0`` (L2, biases excluded), ``dropout=0.0`` (inverted
    dropout on hidden units), ``input_noise=0.0`` (std of Gaussian noise added to each
    training batch's inputs), ``validation_data=(X_val, y_val)`` or ``validation_split``
    (a seeded random fraction held out), ``early_stopping=None`` (patience in epochs on the
    validation loss; the best weights are restored), ``shuffle=True``, ``verbose=1`` (0 silent,
    1 progress bar and a line per epoch, 2 lines only), ``callbacks`` (``f(epoch, logs)``;
    returning True stops training), ``precision='highest'|'tf32'|'bf16'`` (TF32 tensor-core GEMMs
    for float32 on the cupy backend; bf16: GEMMs on bf16 inputs, float32 accumulation,
    float32 weights, optimizer state and loss, see :mod:`fastbp.backends.mixed`; float32 stays
    exact by default).

    ``checkpoint="run.ckpt"`` writes a checkpoint atomically after every epoch and, on Ctrl-C
    or SIGTERM, after the step in flight; ``resume=True`` continues from it (a missing file
    starts afresh). ``distributed="auto"|"mpi"|"nccl"`` trains data-parallel across the ranks
    of ``mpiexec`` (see :mod:`fastbp.distributed`); ``batch_size`` is then the global batch.

    If the loss becomes NaN or inf, the weights of the last finite epoch are restored and a
    FloatingPointError says so.
    """
    opts = check_options(validation_data=validation_data, **options)
    check_checkpoint(checkpoint, resume)
    check_backend_options(opts, net.backend, checkpoint, distributed)
    if opts.precision == "bf16" and str(net.dtype) != "float32":
        raise ValueError(f"precision='bf16' trains float32 networks (float32 master weights, "
                         f"bf16 GEMM inputs); this one is {net.dtype}")
    comm = make_communicator(distributed, net.backend)
    if comm is not None:
        start_identically(net, comm)
        opts.verbose = opts.verbose if comm.rank == 0 else 0
    X, Y, val = split_data(net, X, y, validation_data, opts.validation_split)
    net.fit_preprocessor(X)
    if net.preprocessor is not None:
        X = net.preprocessor.transform(X)
        val = val and (net.preprocessor.transform(val[0]), val[1])
    if opts.optimizer == "lbfgs":
        return LbfgsTrainer(net, opts, X, Y, val).run()
    trainer = (DistributedTrainer(net, opts, X, Y, val, comm) if comm is not None
               else Trainer(net, opts, X, Y, val))
    return trainer.run(checkpoint, resume)


def check_backend_options(opts, backend, checkpoint, distributed):
    """Options that depend on the backend, or exclude each other."""
    if opts.precision not in backend.precisions:
        why = getattr(backend, "unavailable_precisions", {}).get(opts.precision)
        raise ValueError(f"precision={opts.precision!r} is not offered by backend "
                         f"{backend.name!r} (it offers {list(backend.precisions)})"
                         + (f": {why}" if why else ""))
    if opts.optimizer == "lbfgs":
        clashes = {"dropout": opts.dropout > 0, "input_noise": opts.input_noise > 0,
                   "checkpoint": checkpoint is not None, "distributed": distributed is not None}
        named = [name for name, clash in clashes.items() if clash]
        if named:
            raise ValueError(f"optimizer='lbfgs' is full-batch and deterministic; it does not "
                             f"combine with {', '.join(named)}")


def check_checkpoint(checkpoint, resume):
    """A checkpoint is a path; ``resume`` needs one."""
    if checkpoint is not None and not isinstance(checkpoint, (str, os.PathLike)):
        raise TypeError(f"checkpoint must be a file path, got {type(checkpoint).__name__}")
    if resume and checkpoint is None:
        raise ValueError("resume=True needs checkpoint='path' to resume from")


def start_identically(net, comm):
    """Every rank starts from rank 0's weights and random state (shuffles, splits)."""
    comm.broadcast(net.params)
    net.rng.bit_generator.state = comm.broadcast_object(net.rng.bit_generator.state)


def split_data(net, X, y, validation_data, validation_split):
    """Validated host ``X``, ``Y`` (target matrix) and ``(X_val, Y_val)`` or None."""
    X = checks.check_features(X, net.sizes[0], "X")
    Y = net.targets(y, X.shape[0], "y")
    if validation_data is not None:
        if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
            raise ValueError("validation_data must be a pair (X_val, y_val)")
        X_val = checks.check_features(validation_data[0], net.sizes[0], "X_val")
        return X, Y, (X_val, net.targets(validation_data[1], X_val.shape[0], "y_val"))
    if not validation_split:
        return X, Y, None
    n_val = int(round(validation_split * X.shape[0]))
    if n_val < 1 or n_val >= X.shape[0]:
        raise ValueError(f"validation_split={validation_split} leaves {n_val} validation and "
                         f"{X.shape[0] - n_val} training samples of {X.shape[0]}; both need one")
    order = net.rng.permutation(X.shape[0])
    val_idx, train_idx = order[:n_val], order[n_val:]
    return X[train_idx], Y[train_idx], (X[val_idx], Y[val_idx])


class Trainer:
    """One call of :func:`fit`: device data, buffers, optimizer and the epoch loop."""

    def __init__(self, net, opts: FitOptions, X, Y, val):
        self.net, self.opts = net, opts
        self.backend = be = net.backend
        self.n = X.shape[0]
        self.batch_size = min(opts.batch_size or self.n, self.n)
        self.X, self.Y = self.place_data(X, Y)
        self.val = val
        self.optimizer = self.make_optimizer()
        self.loss_acc = be.zeros((1,), net.dtype)
        self.last_good = be.empty((net.n_params,), net.dtype)
        self.best = None
        self.batches: dict[int, tuple] = {}
        self.history = History()
        self.clock = be.step_clock()
        self.runners: dict[int, object] = {}
        self.noise_buffers: dict[int, object] = {}
        self.current = None

    def make_optimizer(self):
        net, opts = self.net, self.opts
        return make_optimizer(opts.optimizer, self.backend, net.n_params, net.dtype, opts.lr,
                              opts.momentum)

    def place_data(self, X, Y):
        """The training set on the device, where every batch is gathered from -- unless it
        would take more than :data:`DEVICE_SHARE` of the device's free memory: then it stays on
        the host and each batch is gathered there and copied over (:meth:`batch`)."""
        free = self.backend.device_memory_free()
        itemsize = 4 if self.net.dtype == "float32" else 8
        self.streamed = free is not None and (X.size + Y.size) * itemsize > DEVICE_SHARE * free
        if self.streamed:
            return X, Y
        return self.backend.asarray(X, self.net.dtype), self.backend.asarray(Y, self.net.dtype)

    @property
    def steps_per_epoch(self) -> int:
        return -(-self.n // self.batch_size)

    def run(self, checkpoint=None, resume=False) -> History:
        opts, net = self.opts, self.net
        position = checkpoint_load(checkpoint, self) if resume else Position(0)
        net.set_dropout(opts.dropout)
        precision = self.backend.precision
        self.backend.set_precision(opts.precision)
        bar = tqdm(total=opts.epochs * self.steps_per_epoch, unit="step", leave=False,
                   initial=position.epoch * self.steps_per_epoch
                   + position.next_row // self.batch_size,
                   disable=opts.verbose != 1, dynamic_ncols=True)
        try:
            with deferred_signals(checkpoint is not None) as stop:
                self.epochs(position, bar, stop, checkpoint)
        finally:
            bar.close()
            net.set_dropout(0.0)
            self.backend.set_precision(precision)
        if self.best is not None:
            self.backend.copy(self.best, net.params)
        return self.history

    def epochs(self, position, bar, stop, checkpoint):
        """Run the epochs after ``position``, checkpointing at the end of each."""
        opts = self.opts
        for epoch in range(position.epoch + 1, opts.epochs + 1):
            logs = self.run_epoch(epoch, bar, stop, checkpoint, position)
            position = Position(epoch)
            if opts.verbose:
                bar.write(format_logs(epoch, opts.epochs, logs, self.net.task))
            done = self.should_stop(epoch, logs)
            if checkpoint is not None and self.is_writer:
                checkpoint_save(checkpoint, self, position)
            if done:
                break

    @property
    def is_writer(self) -> bool:
        """Whether this process writes checkpoints (rank 0 only)."""
        return True

    def run_epoch(self, epoch, bar, stop, checkpoint, position) -> dict:
        """One pass over the training set (or its rest, when resuming mid-epoch)."""
        be, net, opts = self.backend, self.net, self.opts
        start = time.perf_counter()
        be.copy(net.params, self.last_good)
        self.set_loss_so_far(position.loss_so_far)
        if position.mid_epoch:
            order = position.order
        else:
            order = net.rng.permutation(self.n) if opts.shuffle else None
        device_order = self.index(order)
        for lo in range(position.next_row, self.n, self.batch_size):
            hi = min(lo + self.batch_size, self.n)
            self.step(device_order, lo, hi)
            bar.update(1)
            if checkpoint is not None and self.stop_requested(stop):
                position = Position(epoch - 1, hi, order, self.loss_so_far())
                if self.is_writer:
                    checkpoint_save(checkpoint, self, position)
                stop.raise_it()
        train_loss = self.epoch_loss()
        if train_loss != train_loss or abs(train_loss) == float("inf"):
            be.copy(self.last_good, net.params)
            raise FloatingPointError(
                f"training diverged in epoch {epoch}: the loss became {train_loss}; the weights "
                f"of the last finite epoch were restored. Try a smaller lr (now {opts.lr}).")
        logs = {"loss": train_loss, **self.validate()}
        logs["seconds"] = time.perf_counter() - start
        self.record(epoch, logs)
        return logs

    def index(self, order):
        """The shuffle order where :meth:`batch` reads it (on the device, or on the host when
        the data are streamed)."""
        if order is None or self.streamed:
            return order
        return self.backend.asindex(order)

    def stop_requested(self, stop) -> bool:
        return stop.signum is not None

    def loss_so_far(self) -> float:
        """The loss summed over this epoch's rows so far (a device read)."""
        return self.backend.scalar(self.loss_acc)

    def set_loss_so_far(self, value):
        """Start the epoch's loss sum at ``value`` (0, or a mid-epoch checkpoint's sum)."""
        self.backend.copy(self.backend.asarray([value], self.net.dtype), self.loss_acc)

    def step(self, order, lo, hi):
        """One minibatch: gather it, then forward, backward, update through the step runner
        (on a GPU, a CUDA graph replayed for every batch of this size)."""
        self.current = self.noisy(*self.batch(order, lo, hi))
        self.optimizer.advance()
        self.runner(hi - lo)()

    def noisy(self, Xb, Yb):
        """The batch with ``input_noise`` Gaussian noise added to its inputs (into a buffer of
        its own: ``Xb`` may be a view of the training set)."""
        if not self.opts.input_noise:
            return Xb, Yb
        n = Xb.shape[0]
        if n not in self.noise_buffers:
            self.noise_buffers[n] = self.backend.empty(Xb.shape, self.net.dtype)
        noisy = self.backend.gaussian_noise(Xb, self.net.rng, self.opts.input_noise,
                                            self.noise_buffers[n])
        return noisy, Yb

    def runner(self, n):
        """The backend's runner of one training step on a batch of ``n`` rows."""
        if n not in self.runners:
            net, opts = self.net, self.opts

            def compute():
                Xb, Yb = self.current
                net.forward_device(Xb, training=True)
                net.backward_device(Yb, 1.0 / n, opts.weight_decay, self.loss_acc)
                self.optimizer.apply(net.params, net.grads)

            self.runners[n] = self.backend.step_runner(compute, self.clock)
        return self.runners[n]

    def epoch_loss(self) -> float:
        """``mean_i L_i`` over the epoch plus the weight-decay penalty (one device read)."""
        return self.loss_so_far() / self.n + self.net.penalty(self.opts.weight_decay)

    def batch(self, order, lo, hi):
        """Rows ``lo:hi`` of the (shuffled) training set on the device: views when the order
        is kept, unless the backend replays captured steps, which need fixed buffers."""
        if order is None and not self.backend.captures_steps and not self.streamed:
            return self.X[lo:hi], self.Y[lo:hi]
        Xb, Yb = self.batch_buffers(hi - lo)
        if self.streamed:  # gather on the host, one copy to the device
            rows = slice(lo, hi) if order is None else order[lo:hi]
            self.backend.copy(self.backend.asarray(self.X[rows], self.net.dtype), Xb)
            self.backend.copy(self.backend.asarray(self.Y[rows], self.net.dtype), Yb)
        elif order is None:
            self.backend.copy(self.X[lo:hi], Xb)
            self.backend.copy(self.Y[lo:hi], Yb)
        else:
            self.backend.take_rows(self.X, order[lo:hi], Xb)
            self.backend.take_rows(self.Y, order[lo:hi], Yb)
        return Xb, Yb

    def batch_buffers(self, n):
        """The fixed device buffers of a batch of ``n`` rows."""
        if n not in self.batches:
            be, net = self.backend, self.net
            self.batches[n] = (be.empty((n, self.X.shape[1]), net.dtype),
                               be.empty((n, self.Y.shape[1]), net.dtype))
        return self.batches[n]

    def validate(self) -> dict:
        """Validation loss and score (accuracy, or R^2 for regression), if there is a set."""
        if not self.val:
            return {}
        X_val, Y_val = self.val
        loss_sum, outputs = self.evaluate(X_val, Y_val)
        val_loss = loss_sum / X_val.shape[0] + self.net.penalty(self.opts.weight_decay)
        return {"val_loss": val_loss, "val_score": host.score(outputs, Y_val, self.net.task)}

    def evaluate(self, X, Y):
        """``(sum_i L_i, outputs)`` of the network on host data."""
        return self.net.evaluate(X, Y)

    def record(self, epoch, logs):
        h = self.history
        h.epoch.append(epoch)
        h.train_loss.append(logs["loss"])
        h.val_loss.append(logs.get("val_loss"))
        h.val_score.append(logs.get("val_score"))
        h.seconds.append(logs["seconds"])

    def should_stop(self, epoch, logs) -> bool:
        """Early stopping on the validation loss (keeping the best weights), or a callback."""
        stop = any(bool(cb(epoch, logs)) for cb in self.opts.callbacks)
        patience = self.opts.early_stopping
        if not patience:
            return stop
        h = self.history
        if h.best_epoch is None or logs["val_loss"] < h.val_loss[h.best_epoch - 1]:
            h.best_epoch = epoch
            if self.best is None:
                self.best = self.backend.empty((self.net.n_params,), self.net.dtype)
            self.backend.copy(self.net.params, self.best)
        elif epoch - h.best_epoch >= patience:
            h.stopped_early = True
            return True
        return stop


class LbfgsTrainer(Trainer):
    """Full-batch L-BFGS on the flat parameter vector (SciPy drives; the backend evaluates
    ``J`` and ``dJ/dtheta``); one History entry per iteration."""

    def make_optimizer(self):
        return None  # SciPy's L-BFGS-B keeps its own state

    def run(self, checkpoint=None, resume=False) -> History:
        from .lbfgs import lbfgs_minimize

        self.start = time.perf_counter()
        lbfgs_minimize(self.net, self.X, self.Y, self.opts.weight_decay,
                       max_iter=self.opts.epochs, callback=self.iteration)
        if self.best is not None:
            self.backend.copy(self.best, self.net.params)
        return self.history

    def iteration(self, iteration, logs) -> bool:
        """After each L-BFGS iteration: validate, record, print, early-stop or callbacks."""
        logs = {**logs, **self.validate(), "seconds": time.perf_counter() - self.start}
        self.start = time.perf_counter()
        self.record(iteration, logs)
        if self.opts.verbose:
            print(format_logs(iteration, self.opts.epochs, logs, self.net.task))
        return self.should_stop(iteration, logs)


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
        if my_hi > my_lo:
            Xb, Yb = self.noisy(*self.batch(order, my_lo, my_hi))
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

    def set_loss_so_far(self, value):
        super().set_loss_so_far(value if self.comm.rank == 0 else 0.0)

    def epoch_loss(self) -> float:
        return self.loss_so_far() / self.n + self.net.penalty(self.opts.weight_decay)

    def evaluate(self, X, Y):
        lo, hi = rank_slice(0, X.shape[0], self.comm.rank, self.comm.size)
        total, outputs = super().evaluate(X[lo:hi], Y[lo:hi]) if hi > lo else (0.0, None)
        parts = [p for p in self.comm.allgather_object(outputs) if p is not None]
        return self.comm.allreduce_scalar(total), host.concat_rows(parts)


def format_logs(epoch, epochs, logs, task) -> str:
    """``epoch  3/20  loss 0.1234  val_loss 0.2345  val_acc 0.9700  0.12s``"""
    parts = [f"epoch {epoch:>{len(str(epochs))}}/{epochs}", f"loss {logs['loss']:.4f}"]
    if "val_loss" in logs:
        score = "val_r2" if task == "regression" else "val_acc"
        parts += [f"val_loss {logs['val_loss']:.4f}", f"{score} {logs['val_score']:.4f}"]
    parts.append(f"{logs['seconds']:.2f}s")
    return "  ".join(parts)
