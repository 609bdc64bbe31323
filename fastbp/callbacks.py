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
    """Counts epochs without an improvement of more than ``min_delta`` in ``monitor``.

    Keras's rule: ``best`` is the value of the last such improvement, and ``wait`` the epochs
    since (loss 1.0, 0.95, 0.90, 0.85 with ``min_delta=0.1``: no improvement at 0.95, one at
    0.85). With ``every_gain`` (scikit-learn's ``tol`` rule) ``best`` follows every gain,
    however small, and an improvement is more than ``min_delta`` below that. ``update(logs)``
    returns whether the value is the best seen yet (``best_value``), improvement or not.
    """

    def __init__(self, monitor, min_delta, mode, every_gain=False):
        if not isinstance(monitor, str) or not monitor:
            raise TypeError(f"monitor must be the name of a logged value such as 'val_loss', "
                            f"got {monitor!r}")
        self.monitor = monitor
        self.min_delta = checks.check_number(min_delta, "min_delta", low=0)
        self.sign = 1.0 if monitor_mode(monitor, mode) == "min" else -1.0
        self.every_gain = every_gain
        self.reset()

    def reset(self):
        self.best, self.seen, self.wait = math.inf, math.inf, 0

    def update(self, logs) -> bool:
        value = self.sign * monitored(logs, self.monitor)
        improved = value < self.best - self.min_delta
        self.wait = 0 if improved else self.wait + 1
        if improved or (self.every_gain and value < self.best):
            self.best = value
        is_best = value < self.seen
        self.seen = min(self.seen, value)
        return is_best

    @property
    def best_value(self) -> float:
        """The best value of ``monitor`` seen."""
        return self.sign * self.seen

    def state(self) -> dict:
        return {"best": finite_or_none(self.best), "seen": finite_or_none(self.seen),
                "wait": self.wait}

    def load_state(self, state: dict):
        self.best = none_as_inf(state.get("best"))
        self.seen = none_as_inf(state.get("seen", state.get("best")))
        self.wait = int(state.get("wait", 0))


def finite_or_none(value):
    return None if math.isinf(value) else value


def none_as_inf(value) -> float:
    return math.inf if value is None else float(value)


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


def callback_states(callbacks) -> list:
    """``[{"kind": class name, "state": ...}, ...]`` of ``callbacks``, for a checkpoint or
    the fit a partial_fit continues."""
    return [{"kind": type(cb).__name__, "state": cb.state()} for cb in callbacks]


def load_callback_states(callbacks, states):
    """Give each of ``callbacks`` its saved state from ``states`` (:func:`callback_states` of
    an earlier run, which may have had other callbacks): the ``i``-th callback of a kind takes
    the state of the ``i``-th of that kind; one without a match keeps its fresh count."""
    by_kind = {}
    for entry in states:
        by_kind.setdefault(entry["kind"], []).append(entry["state"])
    for cb in callbacks:
        kept = by_kind.get(type(cb).__name__)
        if kept:
            cb.load_state(kept.pop(0))
