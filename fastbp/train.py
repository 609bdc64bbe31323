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

from . import checks, host, preprocess
from . import checkpoint as checkpoints
from .callbacks import EarlyStopping, as_callback
from .checkpoint import Position, deferred_signals
from .checkpoint import save as checkpoint_save
from .files import check_writable
from .distributed import make_communicator, rank_slice
from .metrics import make_metrics
from .optim import OPTIMIZERS, make_optimizer
from .schedules import make_schedule
from .sparse import is_row_source, take
from .weights import check_class_weight, check_sample_weight, row_weights, weighted_loss_sum

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
    lr: list = field(default_factory=list)  # the learning rate each epoch ran with
    metrics: dict = field(default_factory=dict)  # "val_<metric>" -> one value per epoch
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
    class_weight: object = None
    lr_schedule: object = "constant"
    metrics: list = field(default_factory=list)
    beta1: float = 0.9
    beta2: float = 0.999
    epsilon: float = 1e-8
    continue_training: bool = False


def check_options(epochs=50, batch_size=32, lr=0.001, optimizer="adam", momentum=0.9,
                  weight_decay=0.0, dropout=0.0, input_noise=0.0, validation_data=None,
                  validation_split=0.0,
                  early_stopping=None, shuffle=True, verbose=1, callbacks=None,
                  precision="highest", class_weight=None, lr_schedule="constant", metrics=None,
                  beta1=0.9, beta2=0.999, epsilon=1e-8, continue_training=False) -> FitOptions:
    """Validate every option of :func:`fit` (``validation_data`` is checked with the data)."""
    number = checks.check_number
    callbacks = [as_callback(cb) for cb in (callbacks or [])]
    make_schedule(lr_schedule)
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
        precision=checks.check_choice(precision, "precision", PRECISIONS),
        class_weight=check_class_weight(class_weight),
        lr_schedule=lr_schedule,
        metrics=metric_specs(metrics),
        beta1=number(beta1, "beta1", low=0, high=1, high_open=True),
        beta2=number(beta2, "beta2", low=0, high=1, high_open=True),
        epsilon=number(epsilon, "epsilon", low=0, low_open=True),
        continue_training=bool(continue_training))
    if validation_data is not None and options.validation_split:
        raise ValueError("give validation_data or validation_split, not both")
    has_validation = validation_data is not None or options.validation_split > 0
    if options.early_stopping and not has_validation:
        raise ValueError("early_stopping needs validation_data or validation_split > 0")
    return options


def metric_specs(metrics) -> list:
    """``metrics=`` as a validated list of names and callables."""
    specs = [] if metrics is None else [metrics] if isinstance(metrics, str) or callable(
        metrics) else list(metrics)
    make_metrics(specs)
    return specs


def fit(net, X, y, validation_data=None, checkpoint=None, resume=False, distributed=None,
        sample_weight=None, **options) -> History:
    """Train ``net`` on ``(X, y)``; returns the :class:`History`.

    Options (all validated before the model is touched): ``epochs=50``, ``batch_size=32``
    (``None`` for full batch), ``lr=0.001``,
    ``optimizer='adam'|'sgd'|'momentum'|'nesterov'|'lbfgs'`` (default adam)
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

    scikit-learn's and Keras' training features: ``sample_weight`` (one weight per row of
    ``X``) and ``class_weight='balanced'|{class: weight}`` weight the loss
    (:mod:`fastbp.weights`); ``optimizer='nesterov'``; ``beta1``, ``beta2``, ``epsilon`` of
    Adam; ``lr_schedule='constant'|'invscaling'|'adaptive'|'step'|'cosine'|'plateau'``, a
    :class:`~fastbp.schedules.Schedule` or ``f(epoch) -> lr`` (:mod:`fastbp.schedules`);
    ``callbacks`` may be :class:`~fastbp.callbacks.Callback` objects, which see the run and
    can change its learning rate, such as :class:`~fastbp.callbacks.EarlyStopping` with
    ``monitor``, ``min_delta`` and ``restore_best``; ``metrics=['accuracy', 'f1', 'roc_auc',
    'top_5_accuracy', 'r2', f]`` adds ``val_<name>`` to the logs and ``History.metrics``.

    What a second fit continues: the weights and the fitted preprocessor, always. It starts a
    new optimizer (moments, velocity and Adam's step count at zero), a new schedule at ``lr``
    and a new History, with epochs counted from 1. ``continue_training=True`` (what
    :meth:`~fastbp.MLP.partial_fit` passes) continues the optimizer state, the learning rate
    and the epoch and sample counts of the previous fit instead, when its optimizer and
    hyper-parameters match.

    ``checkpoint="run.ckpt"`` writes a checkpoint atomically after every epoch and, on Ctrl-C
    or SIGTERM, after the step in flight; ``resume=True`` continues from it (a missing file
    starts afresh) if it is of the same run -- same model, data and trajectory-changing
    options, else a ValueError names the difference; ``resume="new_lr"`` continues with this
    call's ``lr`` (see :mod:`fastbp.checkpoint`). ``distributed="auto"|"mpi"|"nccl"`` trains
    data-parallel across the ranks of ``mpiexec`` (see :mod:`fastbp.distributed`); ``batch_size`` is then the global batch.

    If the loss becomes NaN or inf -- in any epoch, and at the weights of the last update
    (on the last batch, or the validation set) -- the weights of the last finite epoch are
    restored and a FloatingPointError says so.
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
    if distributed is not None and (sample_weight is not None or opts.class_weight):
        raise ValueError("sample_weight and class_weight do not combine with distributed "
                         "training yet")
    with checkpoints.exclusive(checkpoint, checkpoint is not None
                               and (comm is None or comm.rank == 0)):
        return fit_checked(net, opts, X, y, sample_weight, validation_data, checkpoint, resume,
                           comm)


def fit_checked(net, opts, X, y, sample_weight, validation_data, checkpoint, resume,
                comm) -> History:
    """:func:`fit` after its options are checked: the data checked, the checkpoint read and
    validated (before anything changes), the split, the weights, the preprocessor, the
    trainer."""
    X, Y = check_data(net, X, y)
    if sample_weight is not None:
        sample_weight = check_sample_weight(sample_weight, X.shape[0])
    validation = check_validation_data(net, validation_data)
    run_id = (None if checkpoint is None
              else checkpoints.fingerprint(opts, X, Y, validation, host_data(net.backend),
                                           sample_weight))
    saved = (checkpoints.read(checkpoint, net, opts, run_id, X.shape[0], resume)
             if resume else None)
    X, Y, sample_weight, val, split_order = split_data(
        net, X, Y, sample_weight, validation, opts.validation_split,
        saved and saved.split_order)
    weights = row_weights(sample_weight, opts.class_weight, Y, net.task)
    net.fit_preprocessor(X, None if weights is None else weights[:, 0])
    if net.preprocessor is not None:
        X, val = preprocessed(net.preprocessor, X), val and (
            preprocessed(net.preprocessor, val[0]), val[1])
    if opts.optimizer == "lbfgs" and is_row_source(X):
        raise ValueError("optimizer='lbfgs' is full-batch and needs dense X; sparse input "
                         "trains with the minibatch optimizers")
    if opts.optimizer == "lbfgs":
        return LbfgsTrainer(net, opts, X, Y, val, weights).run()
    trainer = (DistributedTrainer(net, opts, X, Y, val, comm) if comm is not None
               else Trainer(net, opts, X, Y, val, weights))
    trainer.fingerprint, trainer.split_order = run_id, split_order
    return trainer.run(checkpoint, saved)


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
    """A checkpoint is a path where a file can be written; ``resume`` needs one."""
    if checkpoint is not None and not isinstance(checkpoint, (str, os.PathLike)):
        raise TypeError(f"checkpoint must be a file path, got {type(checkpoint).__name__}")
    if checkpoints.check_resume(resume) and checkpoint is None:
        raise ValueError(f"resume={resume!r} needs checkpoint='path' to resume from")
    if checkpoint is not None:
        check_writable(checkpoint, "checkpoint")


def start_identically(net, comm):
    """Every rank starts from rank 0's weights and random state (shuffles, splits)."""
    comm.broadcast(net.params)
    net.rng.bit_generator.state = comm.broadcast_object(net.rng.bit_generator.state)


def check_data(net, X, y):
    """Validated ``X`` and ``Y`` (target matrix), on the host or, where the caller's arrays
    already are, on the backend's device; a sparse row source stays one."""
    X = (check_row_source(X, net.sizes[0], "X") if is_row_source(X)
         else checks.check_features(X, net.sizes[0], "X", net.backend, net.dtype))
    return X, net.targets(y, X.shape[0], "y")


def check_validation_data(net, validation_data):
    """Validated ``(X_val, Y_val)``, or None."""
    if validation_data is None:
        return None
    if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
        raise ValueError("validation_data must be a pair (X_val, y_val)")
    X_val = checks.check_features(validation_data[0], net.sizes[0], "X_val", net.backend,
                                  net.dtype)
    return X_val, net.targets(validation_data[1], X_val.shape[0], "y_val")


def check_row_source(X, n_features, name):
    """A row source (sparse input) with ``n_features`` columns and a sample."""
    if X.shape[1] != n_features or X.shape[0] == 0:
        raise ValueError(f"{name} must have {n_features} features (columns) and a sample, "
                         f"got shape {X.shape}")
    return X


def host_data(backend):
    """A function giving the host bytes of training data to fingerprint: a row source's
    sparse arrays, or a (device) array's host copy."""
    return lambda X: X.raw_bytes() if is_row_source(X) else backend.to_numpy(X)


def preprocessed(preprocessor, X):
    """``X`` through the fitted preprocessor: now (on X's device), or batch by batch for a
    row source."""
    return (X.transformed(preprocessor) if is_row_source(X)
            else preprocess.transform(preprocessor, X))


def split_data(net, X, Y, sample_weight, validation, validation_split, order=None):
    """``(X_train, Y_train, their sample_weight or None, (X_val, Y_val) or None, split order
    or None)``: ``validation`` if given, else a random ``validation_split`` held out by the
    permutation ``order`` (drawn from the model's generator unless a resumed checkpoint gives
    it)."""
    if validation is not None or not validation_split:
        return X, Y, sample_weight, validation, None
    n_val = int(round(validation_split * X.shape[0]))
    if n_val < 1 or n_val >= X.shape[0]:
        raise ValueError(f"validation_split={validation_split} leaves {n_val} validation and "
                         f"{X.shape[0] - n_val} training samples of {X.shape[0]}; both need one")
    order = net.rng.permutation(X.shape[0]) if order is None else order
    val_idx, train_idx = order[:n_val], order[n_val:]
    kept_weights = None if sample_weight is None else sample_weight[train_idx]
    return (take(X, train_idx), Y[train_idx], kept_weights, (take(X, val_idx), Y[val_idx]),
            order)


@dataclass
class TrainingState:
    """What a continued fit (``continue_training=True``, :meth:`MLP.partial_fit`) picks up:
    the optimizer with its device state and learning rate, and how far training has come."""

    key: tuple
    optimizer: object
    epochs_done: int = 0
    samples_seen: int = 0


class Trainer:
    """One call of :func:`fit`: device data, buffers, optimizer and the epoch loop; also the
    ``run`` that callbacks see (``net``, ``history``, ``lr``, ``keep_best``, ...)."""

    def __init__(self, net, opts: FitOptions, X, Y, val, weights=None):
        self.net, self.opts = net, opts
        self.backend = be = net.backend
        self.n = X.shape[0]
        self.batch_size = min(opts.batch_size or self.n, self.n)
        self.X, self.Y = self.place_data(X, Y)
        self.val = val
        self.weights = weights
        self.weight_column = None if weights is None else self.place_weights(weights)
        self.weight_total = be.zeros((1,), net.dtype)
        self.weighted_sum = 0.0
        self.initial_lr = opts.lr
        self.state = self.continued_state()
        self.optimizer = self.state.optimizer
        self.loss_acc = be.zeros((1,), net.dtype)
        self.last_good = be.empty((net.n_params,), net.dtype)
        self.best = None
        self.batches: dict[int, tuple] = {}
        self.history = History()
        self.clock = be.step_clock()
        self.runners: dict[int, object] = {}
        self.noise_buffers: dict[int, object] = {}
        self.current = None
        self.fingerprint = self.split_order = None

    def make_optimizer(self):
        net, opts = self.net, self.opts
        return make_optimizer(opts.optimizer, self.backend, net.n_params, net.dtype, opts.lr,
                              opts.momentum, opts.beta1, opts.beta2, opts.epsilon)

    def state_key(self) -> tuple:
        """What must match for a fit to continue the previous one's optimizer."""
        net, opts = self.net, self.opts
        return (opts.optimizer, opts.momentum, opts.beta1, opts.beta2, opts.epsilon, opts.lr,
                net.n_params, net.dtype, net.backend.name)

    def continued_state(self) -> TrainingState:
        """The previous fit's state when continuing it, else a fresh optimizer at epoch 0."""
        previous = getattr(self.net, "training_state", None)
        if self.opts.continue_training and previous is not None \
                and previous.key == self.state_key():
            return previous
        return TrainingState(self.state_key(), self.make_optimizer())

    # -- what callbacks see and steer ------------------------------------------------------
    @property
    def lr(self) -> float:
        """The learning rate of the coming steps; assigning it changes them."""
        return self.optimizer.lr if self.optimizer is not None else self.initial_lr

    @lr.setter
    def lr(self, value):
        value = checks.check_number(value, "lr", low=0, low_open=True)
        if self.optimizer is None or value == self.optimizer.lr:
            return
        self.optimizer.lr = value
        if self.backend.captures_steps:
            self.runners.clear()  # captured steps hold the old rate: capture them again

    @property
    def epochs_done(self) -> int:
        """Epochs finished, over this fit and the fits it continues."""
        return self.state.epochs_done

    @property
    def samples_seen(self) -> int:
        """Training samples stepped on, over this fit and the fits it continues."""
        return self.state.samples_seen

    def keep_best(self, epoch):
        """Remember the current weights as the best; they are put back when training ends."""
        if self.best is None:
            self.best = self.backend.empty((self.net.n_params,), self.net.dtype)
        self.backend.copy(self.net.params, self.best)
        self.history.best_epoch = epoch - self.epoch_offset

    def make_callbacks(self) -> list:
        """The user's callbacks, the learning-rate schedule, then ``early_stopping``."""
        opts = self.opts
        callbacks = list(opts.callbacks) + [make_schedule(opts.lr_schedule)]
        if opts.early_stopping:
            callbacks.append(EarlyStopping("val_loss", patience=opts.early_stopping))
        return callbacks

    def place_weights(self, weights):
        """The ``(N, 1)`` weight column where the batches are gathered from."""
        dtype = self.net.dtype
        return weights.astype(dtype) if self.streamed else self.backend.asarray(weights, dtype)

    def place_data(self, X, Y):
        """The training set on the device, where every batch is gathered from -- unless it
        would take more than :data:`DEVICE_SHARE` of the device's free memory: then it stays on
        the host and each batch is gathered there and copied over (:meth:`batch`)."""
        free = self.backend.device_memory_free()
        itemsize = 4 if self.net.dtype == "float32" else 8
        self.streamed = is_row_source(X) or (
            free is not None and (X.size + Y.size) * itemsize > DEVICE_SHARE * free)
        if self.streamed:
            return X, Y
        return self.backend.asarray(X, self.net.dtype), self.backend.asarray(Y, self.net.dtype)

    @property
    def steps_per_epoch(self) -> int:
        return -(-self.n // self.batch_size)

    def run(self, checkpoint=None, saved=None) -> History:
        """Train from the start, or from ``saved`` (a validated checkpoint, committed here)."""
        opts, net = self.opts, self.net
        position = checkpoints.restore(saved, self) if saved is not None else Position(0)
        self.epoch_offset = self.state.epochs_done  # epochs of the fits this one continues
        self.state.epochs_done += position.epoch
        self.callbacks = self.make_callbacks()
        for cb in self.callbacks:
            cb.on_train_begin(self)
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
        net.training_state = self.state
        return self.history

    def epochs(self, position, bar, stop, checkpoint):
        """Run the epochs after ``position``, checkpointing at the end of each."""
        opts = self.opts
        for epoch in range(position.epoch + 1, opts.epochs + 1):
            logs = self.run_epoch(epoch, bar, stop, checkpoint, position)
            position = Position(epoch)
            if opts.verbose:
                bar.write(format_logs(epoch, opts.epochs, logs, self.net.task))
            self.state.epochs_done += 1
            done = self.should_stop(epoch + self.epoch_offset, logs)
            kept = done or epoch == opts.epochs or checkpoint is not None  # returned or saved
            if kept and "val_loss" not in logs:  # the validation loss has seen the update
                self.check_finite(epoch, "loss after the last update",
                                  self.loss_after_last_update())
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
        self.host_order = order
        for lo in range(position.next_row, self.n, self.batch_size):
            hi = min(lo + self.batch_size, self.n)
            self.step(device_order, lo, hi)
            self.state.samples_seen += hi - lo
            bar.update(1)
            if checkpoint is not None and self.stop_requested(stop):
                position = Position(epoch - 1, hi, order, self.loss_so_far())
                if self.is_writer:
                    checkpoint_save(checkpoint, self, position)
                stop.raise_it()
        train_loss = self.epoch_loss()
        self.check_finite(epoch, "loss", train_loss)
        logs = {"loss": train_loss, **self.validate(), "lr": self.lr}
        if "val_loss" in logs:
            self.check_finite(epoch, "validation loss (after the last update)", logs["val_loss"])
        logs["seconds"] = time.perf_counter() - start
        self.record(epoch, logs)
        return logs

    def check_finite(self, epoch, what, value):
        """Raise FloatingPointError if ``value`` is NaN or inf, restoring the weights of the
        last finite epoch."""
        if value != value or abs(value) == float("inf"):
            self.backend.copy(self.last_good, self.net.params)
            raise FloatingPointError(
                f"training diverged in epoch {epoch}: the {what} became {value}; the weights "
                f"of the last finite epoch were restored. Try a smaller lr (now "
                f"{self.lr}).")

    def loss_after_last_update(self) -> float:
        """``sum_i L_i`` over the last batch at the weights its update produced: the one update
        no later loss has seen."""
        Xb, Yb = self.current
        net = self.net
        net.forward_device(Xb)
        top = net.layers[-1]
        return self.backend.scalar(self.backend.loss_sum(top.z, top.a, Yb, net.loss_fn.code))

    def index(self, order):
        """The shuffle order where :meth:`batch` reads it (on the device, or on the host when
        the data are streamed)."""
        if order is None or self.streamed:
            return order
        return self.backend.asindex(order)

    def stop_requested(self, stop) -> bool:
        return stop.signum is not None

    def loss_so_far(self) -> float:
        """The loss summed over this epoch's rows so far (a device read); with weights,
        ``sum_i w_i L_i``."""
        if self.weights is not None:
            return self.weighted_sum
        return self.backend.scalar(self.loss_acc)

    def set_loss_so_far(self, value):
        """Start the epoch's loss sum at ``value`` (0, or a mid-epoch checkpoint's sum)."""
        self.weighted_sum = value
        self.backend.copy(self.backend.asarray([value], self.net.dtype), self.loss_acc)

    def step(self, order, lo, hi):
        """One minibatch: gather it, then forward, backward, update through the step runner
        (on a GPU, a CUDA graph replayed for every batch of this size)."""
        *self.current, self.current_weights = self.batch(order, lo, hi)
        self.current = self.noisy(*self.current)
        self.optimizer.advance()
        self.runner(hi - lo)()
        if self.weights is not None:
            self.tally_weighted_loss(lo, hi)

    def tally_weighted_loss(self, lo, hi):
        """``sum_i w_i L_i`` of the batch just stepped on, on the host: the kernels sum the
        losses unweighted, so the per-sample losses come from the reference kernels (a copy
        of the output layer's ``z``, ``a`` per batch; CPU backends share the memory)."""
        be, top = self.backend, self.net.layers[-1]
        rows = slice(lo, hi) if self.host_order is None else self.host_order[lo:hi]
        self.weighted_sum += weighted_loss_sum(
            be.to_numpy(top.z), be.to_numpy(top.a), be.to_numpy(self.current[1]),
            self.weights[rows], self.net.loss_fn.code)

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
                weights = self.current_weights
                net.forward_device(Xb, training=True)
                net.backward_device(Yb, 1.0 / n, opts.weight_decay, self.loss_acc,
                                    None if weights is None else (weights, self.weight_total))
                self.optimizer.apply(net.params, net.grads)

            self.runners[n] = self.backend.step_runner(compute, self.clock)
        return self.runners[n]

    def epoch_loss(self) -> float:
        """``mean_i L_i`` over the epoch plus the weight-decay penalty (one device read);
        with weights ``sum_i w_i L_i / sum_i w_i``."""
        total = self.n if self.weights is None else float(self.weights.sum())
        return self.loss_so_far() / total + self.net.penalty(self.opts.weight_decay)

    def batch(self, order, lo, hi):
        """Rows ``lo:hi`` of the (shuffled) training set on the device, ``(Xb, Yb, wb)`` with
        ``wb`` None when unweighted: views when the order is kept, unless the backend replays
        captured steps, which need fixed buffers."""
        sources = [self.X, self.Y] + ([] if self.weights is None else [self.weight_column])
        if order is None and not self.backend.captures_steps and not self.streamed:
            gathered = [source[lo:hi] for source in sources]
        else:
            gathered = list(self.batch_buffers(hi - lo))
            for source, out in zip(sources, gathered):
                self.gather(source, order, lo, hi, out)
        return (*gathered[:2], gathered[2] if len(gathered) > 2 else None)

    def gather(self, source, order, lo, hi, out):
        """``out = source[order[lo:hi]]`` (or rows ``lo:hi``) into a fixed device buffer."""
        if self.streamed:  # gather on the host, one copy to the device
            rows = slice(lo, hi) if order is None else order[lo:hi]
            self.backend.upload_rows(source, rows, out)
        elif order is None:
            self.backend.copy(source[lo:hi], out)
        else:
            self.backend.take_rows(source, order[lo:hi], out)

    def batch_buffers(self, n):
        """The fixed device buffers of a batch of ``n`` rows (inputs, targets, weights)."""
        if n not in self.batches:
            be, net = self.backend, self.net
            widths = [self.X.shape[1], self.Y.shape[1]] + [1] * (self.weights is not None)
            self.batches[n] = tuple(be.empty((n, width), net.dtype) for width in widths)
        return self.batches[n]

    def validate(self) -> dict:
        """Validation loss and score (accuracy, or R^2 for regression), if there is a set."""
        if not self.val:
            return {}
        X_val, Y_val = self.val
        loss_sum, outputs = self.evaluate(X_val, Y_val)
        val_loss = loss_sum / X_val.shape[0] + self.net.penalty(self.opts.weight_decay)
        task = self.net.task
        logs = {"val_loss": val_loss, "val_score": host.score(outputs, Y_val, task)}
        for name, metric in make_metrics(self.opts.metrics).items():
            logs[f"val_{name}"] = metric(outputs, Y_val, task)
        return logs

    def evaluate(self, X, Y):
        """``(sum_i L_i, outputs)`` of the network on host data."""
        return self.net.evaluate_prepared(X, Y)

    def record(self, epoch, logs):
        h = self.history
        h.epoch.append(epoch)
        h.train_loss.append(logs["loss"])
        h.val_loss.append(logs.get("val_loss"))
        h.val_score.append(logs.get("val_score"))
        h.seconds.append(logs["seconds"])
        h.lr.append(logs.get("lr"))
        for name in make_metrics(self.opts.metrics):
            h.metrics.setdefault(f"val_{name}", []).append(logs.get(f"val_{name}"))

    def should_stop(self, epoch, logs) -> bool:
        """Every callback's ``on_epoch_end`` (schedules and early stopping among them); True
        if any asks to stop."""
        stops = [bool(cb.on_epoch_end(epoch, logs, self)) for cb in self.callbacks]
        return any(stops)


class LbfgsTrainer(Trainer):
    """Full-batch L-BFGS on the flat parameter vector (SciPy drives; the backend evaluates
    ``J`` and ``dJ/dtheta``); one History entry per iteration."""

    def make_optimizer(self):
        return None  # SciPy's L-BFGS-B keeps its own state

    def run(self, checkpoint=None, resume=False) -> History:
        from .lbfgs import lbfgs_minimize

        self.start = time.perf_counter()
        self.epoch_offset = 0
        self.callbacks = self.make_callbacks()
        for cb in self.callbacks:
            cb.on_train_begin(self)
        lbfgs_minimize(self.net, self.X, self.Y, self.opts.weight_decay,
                       max_iter=self.opts.epochs, callback=self.iteration,
                       weights=self.weights)
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


def format_logs(epoch, epochs, logs, task) -> str:
    """``epoch  3/20  loss 0.1234  val_loss 0.2345  val_acc 0.9700  0.12s``"""
    parts = [f"epoch {epoch:>{len(str(epochs))}}/{epochs}", f"loss {logs['loss']:.4f}"]
    if "val_loss" in logs:
        score = "val_r2" if task == "regression" else "val_acc"
        parts += [f"val_loss {logs['val_loss']:.4f}", f"{score} {logs['val_score']:.4f}"]
    parts.append(f"{logs['seconds']:.2f}s")
    return "  ".join(parts)
