"""The minibatch loop: shuffling, optimizers, weight decay, dropout, early stopping.

An epoch is one pass over the training set in batches of ``batch_size`` (``None``: the whole
set, batch gradient descent; ``1``: stochastic). Each step runs on the backend:
forward, ``delta_L``, the delta recursion and gradients, one optimizer call. The epoch's loss
accumulates on the device and is read once at the end of the epoch.
"""

from __future__ import annotations

import math
import pickle
import time
from dataclasses import dataclass, field

from tqdm.auto import tqdm

from . import checks, host
from . import checkpoint as checkpoints
from .callbacks import EarlyStopping, callback_states, load_callback_states
from .checkpoint import Position, deferred_signals
from .checkpoint import save as checkpoint_save
from .fit_options import FitOptions, continued_options
from .history import History, format_logs
from .metrics import make_metrics
from .optim import WeightDecay, make_optimizer
from .schedules import make_schedule
from .sparse import is_row_source
from .weights import weighted_loss_sum

#: a training set that would take more than this share of the device's free memory stays on
#: the host and is streamed to the device batch by batch
DEVICE_SHARE = 0.5


@dataclass
class TrainingState:
    """What a continued fit (``continue_training=True``, :meth:`MLP.partial_fit`) picks up:
    the optimizer with its device state and learning rate, and how far training has come."""

    key: tuple
    optimizer: object
    epochs_done: int = 0
    samples_seen: int = 0
    #: the step options of the fit it came from, the defaults of a partial_fit
    #: (:func:`fastbp.fit_options.continued_options`)
    options: dict = field(default_factory=dict)
    #: that fit's callbacks' counts (:func:`fastbp.callbacks.callback_states`), which a
    #: continued fit's callbacks of the same kinds take up
    callback_states: list = field(default_factory=list)

    def __getstate__(self):
        """Pickled without the options that do not pickle (a schedule that is a lambda, say):
        a partial_fit of the copy takes those from its arguments or fit's defaults."""
        return dict(self.__dict__, options={name: value for name, value in self.options.items()
                                            if pickles(value)})

    def bind(self, backend):
        """After unpickling (:mod:`fastbp.pickling`): the optimizer's host state onto
        ``backend``, which the key then names."""
        self.optimizer.bind(backend)
        self.key = self.key[:-1] + (backend.name,)


def pickles(value) -> bool:
    try:
        pickle.dumps(value)
    except Exception:  # lambdas, local functions, open handles: whatever refuses
        return False
    return True


class Trainer:
    """One call of :func:`~fastbp.train.fit`: device data, buffers, optimizer and the epoch
    loop; also the ``run`` that callbacks see (``net``, ``history``, ``lr``, ``keep_best``,
    ...). ``val`` is ``(X_val, Y_val, their sample weights (N_val,) or None)`` or None."""

    def __init__(self, net, opts: FitOptions, X, Y, val, weights=None, standardizer=None):
        self.net, self.opts = net, opts
        self.backend = be = net.backend
        self.n = X.shape[0]
        self.batch_size = min(opts.batch_size or self.n, self.n)
        self.X, self.Y = self.place_data(X, Y)
        #: ``(mean, std)`` on the device when each gathered batch is standardised (``X`` raw)
        self.batch_moments = None if standardizer is None else (
            be.asarray(standardizer.mean, net.dtype), be.asarray(standardizer.std, net.dtype))
        self.val = val
        self.weights = weights
        self.weight_column = None if weights is None else self.place_weights(weights)
        self.weight_total = be.zeros((1,), net.dtype)
        self.weighted_sum = 0.0
        self.initial_lr = opts.lr
        self.state = self.continued_state()
        self.optimizer = self.state.optimizer
        self.decay = WeightDecay.of(net.param_layout, opts.weight_decay)
        self.loss_acc = be.zeros((1,), net.dtype)
        self.buffers = net.fit_buffers
        self.buffers.start_fit()
        #: the weights at the start of this epoch, and at the start of the one before, which
        #: its finite loss vouched for (see :meth:`restore_last_good`)
        self.last_good = self.buffers.get("last_good", (net.n_params,), net.dtype)
        self.vouched = self.buffers.get("vouched", (net.n_params,), net.dtype)
        self.epochs_started = 0
        self.bar_clock_started = False  # the progress bar's clock starts after a first step
        self.best = None
        self.history = History()
        self.clock = be.step_clock()
        self.runners: dict[int, object] = {}
        self.current = None
        self.fingerprint = self.split_order = None

    def make_optimizer(self):
        net, opts = self.net, self.opts
        return make_optimizer(opts.optimizer, self.backend, net.n_params, net.dtype, opts.lr,
                              opts.momentum, opts.beta1, opts.beta2, opts.epsilon)

    def state_key(self) -> tuple:
        """What must match for a fit to continue the previous one's optimizer (the backend's
        name last, where :meth:`TrainingState.bind` renames it)."""
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
            self.best = self.buffers.get("best", (self.net.n_params,), self.net.dtype)
        self.backend.copy(self.net.params, self.best)
        self.history.best_epoch = epoch - self.epoch_offset

    def make_callbacks(self) -> list:
        """The user's callbacks, the learning-rate schedule, then ``early_stopping``."""
        opts = self.opts
        schedule = make_schedule(opts.lr_schedule)
        callbacks = list(opts.callbacks) + [schedule]
        if opts.early_stopping:  # 'adaptive' lowers the rate where this would stop
            callbacks.append(EarlyStopping("val_loss", patience=opts.early_stopping,
                                           on_plateau=schedule.lower))
        return callbacks

    def place_weights(self, weights):
        """The ``(N, 1)`` weight column where the batches are gathered from."""
        dtype = self.net.dtype
        return weights.astype(dtype) if self.streamed else self.backend.asarray(weights, dtype)

    def place_data(self, X, Y):
        """The training set on the device, where every batch is gathered from -- unless it
        would take more than :data:`DEVICE_SHARE` of the device's free memory, or is a row
        source, or integer features (see :func:`fastbp.train.check_data`) on a backend with
        no device of its own: then it stays on the host and each batch is gathered there and
        copied over into the model's dtype (:meth:`batch`). A device takes integer features
        converted chunk by chunk as they are copied over."""
        free = self.backend.device_memory_free()
        itemsize = 4 if self.net.dtype == "float32" else 8
        self.streamed = is_row_source(X) or (free is None and X.dtype.kind in "biu") or (
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
        load_callback_states(self.callbacks, self.state.callback_states)  # [] unless continued
        if saved is not None:
            checkpoints.restore_callbacks(saved, self)
        net.set_dropout(opts.dropout)
        precision = self.backend.precision
        self.backend.set_precision(opts.precision)
        notice = opts.verbose and self.backend.first_run_notice()
        if notice:
            tqdm.write(notice)
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
        self.state.options = continued_options(opts)
        self.state.callback_states = callback_states(self.callbacks)
        net.training_state = self.state
        return self.history

    def epochs(self, position, bar, stop, checkpoint):
        """Run the epochs after ``position``, checkpointing at the end of each (none when a
        resumed run had stopped early already: it is over)."""
        opts = self.opts
        if self.history.stopped_early:
            return
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
            if checkpoint is not None and self.stop_requested(stop):
                stop.raise_it()  # asked during the epoch's last step or its validation
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
        # the last epoch's start becomes the vouched-for weights (a swap, not a copy)
        self.vouched, self.last_good = self.last_good, self.vouched
        be.copy(net.params, self.last_good)
        self.epochs_started += 1
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
            self.count_step(bar)
            if checkpoint is not None and hi < self.n and self.stop_requested(stop):
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

    def count_step(self, bar):
        """Advance the progress bar by a step. The first step of a fit (which compiles the
        Numba loops on a first run: seconds, where the next steps take milliseconds) is left
        out of its clock, so the rate and the time left describe the steps to come (it read
        "3.44s/step, 42:21 left" over a 3-second Quick start)."""
        if not self.bar_clock_started:
            bar.unpause()
            self.bar_clock_started = True
        bar.update(1)

    def check_finite(self, epoch, what, value):
        """Raise FloatingPointError if ``value`` is NaN or inf, restoring the weights of the
        last finite epoch."""
        if value != value or abs(value) == float("inf"):
            self.restore_last_good()
            raise FloatingPointError(
                f"training diverged in epoch {epoch}: the {what} became {value}; the weights "
                f"of the last finite epoch were restored. Try a smaller lr (now "
                f"{self.lr}).")

    def restore_last_good(self):
        """Put back the weights this epoch started from -- unless their own loss on the last
        batch is not finite either (the previous epoch's last update, which no loss had seen,
        was the one that diverged): then those the previous epoch started from (in the first
        epoch there is none: its start is all there is)."""
        self.backend.copy(self.last_good, self.net.params)
        if self.epochs_started > 1 and self.current is not None \
                and not math.isfinite(self.loss_after_last_update()):
            self.backend.copy(self.vouched, self.net.params)

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
        out = self.buffers.get("noise", Xb.shape, self.net.dtype)
        noisy = self.backend.gaussian_noise(Xb, self.net.rng, self.opts.input_noise, out)
        return noisy, Yb

    def runner(self, n):
        """The backend's runner of one training step on a batch of ``n`` rows."""
        if n not in self.runners:
            net, opts = self.net, self.opts

            def compute():
                Xb, Yb = self.current
                weights = self.current_weights
                net.forward_device(Xb, training=True)
                net.backward_device(Yb, 1.0 / n, 0.0, self.loss_acc,  # decay: in the update
                                    None if weights is None else (weights, self.weight_total))
                self.optimizer.apply(net.params, net.grads, self.decay)

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
        if order is None and not self.backend.captures_steps and not self.streamed \
                and self.batch_moments is None:
            gathered = [source[lo:hi] for source in sources]
        else:
            gathered = list(self.batch_buffers(hi - lo))
            for source, out in zip(sources, gathered):
                self.gather(source, order, lo, hi, out)
            if self.batch_moments is not None:  # the set's standardiser, on this batch
                self.backend.standardize_rows(gathered[0], *self.batch_moments)
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
        widths = [self.X.shape[1], self.Y.shape[1]] + [1] * (self.weights is not None)
        return tuple(self.buffers.get(name, (n, width), self.net.dtype)
                     for name, width in zip(("X", "Y", "weights"), widths))

    def validate(self) -> dict:
        """Validation loss and score (accuracy, or R^2 for regression; weighted by the
        validation rows' sample weights where they have them), if there is a set."""
        if not self.val:
            return {}
        X_val, Y_val, val_weights = self.val
        loss_sum, outputs = self.evaluate(X_val, Y_val)
        val_loss = loss_sum / X_val.shape[0] + self.net.penalty(self.opts.weight_decay)
        task = self.net.task
        logs = {"val_loss": val_loss,
                "val_score": host.score(outputs, Y_val, task, val_weights)}
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
