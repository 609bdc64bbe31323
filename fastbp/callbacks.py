"""Callbacks: code that runs at the edges of every epoch, sees the training run and steers it.

A callback receives the run (the :class:`~fastbp.trainer.Trainer`): ``run.net`` (the model),
``run.history``, ``run.lr`` (read it, or assign it to change the learning rate from the next
step on), ``run.initial_lr``, ``run.epochs_done``, ``run.samples_seen`` and
``run.keep_best(epoch)`` (remember the current weights; they are restored when training ends).
``on_epoch_end`` returning True stops training after that epoch. A callback that counts
across epochs says what it counts in ``state()`` (JSON numbers) and takes it back in
``load_state(state)``: a checkpoint saves it, so that a resumed run stops, or lowers the rate,
where the uninterrupted run would have.

A plain function ``f(epoch, logs)`` is a callback too (:class:`FunctionCallback`); ``logs``
holds ``loss``, ``seconds``, ``lr`` and, with a validation set, ``val_loss``, ``val_score``
and ``val_<metric>`` for every metric asked for.
"""

from __future__ import annotations

import math

from . import checks


class Callback:
    """Does nothing; subclasses override the hooks they need."""

    def on_train_begin(self, run):
        """Before the first epoch of a fit (or partial_fit)."""

    def on_epoch_end(self, epoch, logs, run) -> bool:
        """After epoch ``epoch`` (1-based, counted over continued fits); True stops."""
        return False

    def state(self) -> dict:
        """What a checkpoint saves of this callback, as JSON numbers (none: ``{}``)."""
        return {}

    def load_state(self, state: dict):
        """Take back what :meth:`state` gave, on resuming (after :meth:`on_train_begin`)."""


class FunctionCallback(Callback):
    """``f(epoch, logs)`` as a callback; its truthy return value stops training."""

    def __init__(self, function):
        self.function = function

    def on_epoch_end(self, epoch, logs, run) -> bool:
        return bool(self.function(epoch, logs))

    def __repr__(self):
        return f"FunctionCallback({getattr(self.function, '__name__', self.function)!r})"


def as_callback(cb) -> Callback:
    """A :class:`Callback`, or a callable ``f(epoch, logs)`` wrapped in one."""
    if isinstance(cb, Callback):
        return cb
    if callable(cb):
        return FunctionCallback(cb)
    raise TypeError(f"callbacks must be Callback objects or callables f(epoch, logs), "
                    f"got {cb!r}")


def monitor_mode(monitor: str, mode: str) -> str:
    """'min' or 'max': ``mode``, or for 'auto' 'min' when the name ends in 'loss'."""
    checks.check_choice(mode, "mode", ("auto", "min", "max"))
    if mode != "auto":
        return mode
    return "min" if monitor.endswith("loss") else "max"


def monitored(logs, monitor):
    """``logs[monitor]``, or a ValueError listing what the logs hold."""
    value = logs.get(monitor)
    if value is None:
        raise ValueError(f"monitor={monitor!r} is not in this run's logs; they hold "
                         f"{sorted(k for k, v in logs.items() if v is not None)}")
    return value


class Plateau:
    """Counts epochs without an improvement of at least ``min_delta`` in ``monitor``.

    ``update(value)`` returns whether ``value`` is the best so far (strictly); ``wait`` is the
    number of epochs since the last improvement by more than ``min_delta``.
    """

    def __init__(self, monitor, min_delta, mode):
        if not isinstance(monitor, str) or not monitor:
            raise TypeError(f"monitor must be the name of a logged value such as 'val_loss', "
                            f"got {monitor!r}")
        self.monitor = monitor
        self.min_delta = checks.check_number(min_delta, "min_delta", low=0)
        self.sign = 1.0 if monitor_mode(monitor, mode) == "min" else -1.0
        self.reset()

    def reset(self):
        self.best, self.wait = math.inf, 0

    def update(self, logs) -> bool:
        value = self.sign * monitored(logs, self.monitor)
        self.wait = 0 if value < self.best - self.min_delta else self.wait + 1
        is_best = value < self.best
        self.best = min(self.best, value)
        return is_best

    @property
    def best_value(self) -> float:
        return self.sign * self.best

    def state(self) -> dict:
        return {"best": None if math.isinf(self.best) else self.best, "wait": self.wait}

    def load_state(self, state: dict):
        best = state.get("best")
        self.best = math.inf if best is None else float(best)
        self.wait = int(state.get("wait", 0))


class WatchesPlateau(Callback):
    """A callback steered by a :class:`Plateau` (``self.plateau``): counted afresh at every
    fit, and saved in checkpoints."""

    def on_train_begin(self, run):
        self.plateau.reset()

    def state(self) -> dict:
        return self.plateau.state()

    def load_state(self, state: dict):
        self.plateau.load_state(state)


class EarlyStopping(WatchesPlateau):
    """Stop when ``monitor`` has not improved by more than ``min_delta`` for ``patience``
    epochs in a row (``math.inf``: never); with ``restore_best`` the weights of the best epoch
    (by ``monitor``) are put back at the end.

    ``mode`` 'min' / 'max' / 'auto' (min for names ending in 'loss'). ``on_plateau(run)``, if
    given, is asked first when patience runs out: returning True (it lowered the learning
    rate, say) resets the count and training goes on -- scikit-learn's ``adaptive`` rate.
    """

    def __init__(self, monitor="val_loss", min_delta=0.0, patience=10, mode="auto",
                 restore_best=True, on_plateau=None):
        self.plateau = Plateau(monitor, min_delta, mode)
        self.patience = (math.inf if patience == math.inf
                         else checks.check_number(patience, "patience", low=1, integer=True))
        self.restore_best = bool(restore_best)
        self.on_plateau = on_plateau

    def on_epoch_end(self, epoch, logs, run) -> bool:
        if self.plateau.update(logs) and self.restore_best:
            run.keep_best(epoch)
        if self.plateau.wait < self.patience:
            return False
        if self.on_plateau is not None and self.on_plateau(run):
            self.plateau.wait = 0
            return False
        run.history.stopped_early = True
        return True

    @property
    def best(self) -> float:
        """The best value of ``monitor`` seen."""
        return self.plateau.best_value

    def __repr__(self):
        p = self.plateau
        return (f"EarlyStopping(monitor={p.monitor!r}, min_delta={p.min_delta}, "
                f"patience={self.patience}, restore_best={self.restore_best})")
