"""Learning-rate schedules: callbacks that set ``run.lr`` for the next epoch.

``lr_0`` is the ``lr`` passed to fit, ``e`` the 1-based number of the coming epoch (counted
over continued fits), ``t`` the training samples seen so far:

- ``constant``: ``lr_0``;
- ``invscaling`` (scikit-learn's): ``lr_0 / (t + 1) ** power_t``, updated after each epoch;
- ``adaptive`` (scikit-learn's): ``lr_0`` while the stopping rule sees progress; when it sees
  none, ``lr /= 5`` instead of stopping, until ``lr <= 1e-6`` (see :meth:`Adaptive.lower`);
- ``step``: ``lr_0 * gamma ** ((e - 1) // step_size)``;
- ``cosine``: ``min_lr + (lr_0 - min_lr) (1 + cos(pi * min(e - 1, period) / period)) / 2``;
- ``plateau`` (reduce on plateau): ``lr *= factor`` after ``patience`` epochs in which
  ``monitor`` did not improve by more than ``min_delta``, never below ``min_lr``;
- a callable ``f(e) -> lr``.
"""

from __future__ import annotations

import math

from . import checks
from .callbacks import Callback, Plateau, WatchesPlateau


class Schedule(Callback):
    """Sets ``run.lr = lr_at(e, run)`` before every epoch ``e``."""

    def lr_at(self, epoch, run) -> float:
        raise NotImplementedError

    def on_train_begin(self, run):
        run.lr = self.checked(self.lr_at(run.epochs_done + 1, run))

    def on_epoch_end(self, epoch, logs, run) -> bool:
        run.lr = self.checked(self.lr_at(epoch + 1, run))
        return False

    def lower(self, run) -> bool:
        """Asked by the stopping rule on a plateau; True if the rate was lowered instead."""
        return False

    def checked(self, lr) -> float:
        return checks.check_number(lr, f"the learning rate from {self!r}", low=0, low_open=True)

    def __repr__(self):
        return f"{type(self).__name__}()"


class Constant(Schedule):
    """``lr_0`` throughout (or whatever a callback last set)."""

    def on_train_begin(self, run):
        pass

    def on_epoch_end(self, epoch, logs, run) -> bool:
        return False


class InvScaling(Schedule):
    """``lr_0 / (t + 1) ** power_t`` with ``t`` the samples seen (scikit-learn's rule)."""

    def __init__(self, power_t=0.5):
        self.power_t = checks.check_number(power_t, "power_t", low=0)

    def on_train_begin(self, run):
        if run.samples_seen:
            super().on_train_begin(run)

    def lr_at(self, epoch, run):
        return run.initial_lr / (run.samples_seen + 1) ** self.power_t

    def __repr__(self):
        return f"InvScaling(power_t={self.power_t})"


class Adaptive(Constant):
    """Keep the rate; on a plateau of the stopping rule divide it by ``factor`` (5) instead of
    stopping, unless it is at most ``min_lr`` (1e-6) already."""

    def __init__(self, factor=5.0, min_lr=1e-6):
        self.factor = checks.check_number(factor, "factor", low=1, low_open=True)
        self.min_lr = checks.check_number(min_lr, "min_lr", low=0)

    def __repr__(self):
        return f"Adaptive(factor={self.factor}, min_lr={self.min_lr})"

    def lower(self, run) -> bool:
        if run.lr <= self.min_lr:
            return False
        run.lr = run.lr / self.factor
        return True


class StepDecay(Schedule):
    """``lr_0 * gamma ** ((e - 1) // step_size)``."""

    def __init__(self, step_size=10, gamma=0.1):
        self.step_size = checks.check_number(step_size, "step_size", low=1, integer=True)
        self.gamma = checks.check_number(gamma, "gamma", low=0, high=1, low_open=True)

    def lr_at(self, epoch, run):
        return run.initial_lr * self.gamma ** ((epoch - 1) // self.step_size)

    def __repr__(self):
        return f"StepDecay(step_size={self.step_size}, gamma={self.gamma})"


class Cosine(Schedule):
    """Half a cosine from ``lr_0`` at epoch 1 to ``min_lr`` after ``period`` epochs."""

    def __init__(self, period=100, min_lr=0.0):
        self.period = checks.check_number(period, "period", low=1, integer=True)
        self.min_lr = checks.check_number(min_lr, "min_lr", low=0)

    def lr_at(self, epoch, run):
        progress = min(epoch - 1, self.period) / self.period
        cosine = (1 + math.cos(math.pi * progress)) / 2
        return self.min_lr + (run.initial_lr - self.min_lr) * cosine

    def checked(self, lr):  # the cosine may reach min_lr = 0 at its end
        return max(lr, 1e-12)

    def __repr__(self):
        return f"Cosine(period={self.period}, min_lr={self.min_lr})"


class ReduceOnPlateau(WatchesPlateau, Schedule):
    """``lr *= factor`` when ``monitor`` stalls for ``patience`` epochs (not below
    ``min_lr``)."""

    def __init__(self, monitor="val_loss", factor=0.1, patience=10, min_delta=1e-4,
                 min_lr=0.0, mode="auto"):
        self.plateau = Plateau(monitor, min_delta, mode)
        self.factor = checks.check_number(factor, "factor", low=0, high=1, low_open=True,
                                          high_open=True)
        self.patience = checks.check_number(patience, "patience", low=1, integer=True)
        self.min_lr = checks.check_number(min_lr, "min_lr", low=0)

    def on_epoch_end(self, epoch, logs, run) -> bool:
        self.plateau.update(logs)
        if self.plateau.wait >= self.patience:
            run.lr = max(run.lr * self.factor, self.min_lr)
            self.plateau.wait = 0
        return False

    def __repr__(self):
        p = self.plateau
        return (f"ReduceOnPlateau(monitor={p.monitor!r}, factor={self.factor}, "
                f"patience={self.patience}, min_delta={p.min_delta}, min_lr={self.min_lr}, "
                f"mode={'min' if p.sign > 0 else 'max'!r})")


class FromFunction(Schedule):
    """``lr = f(e)`` for every epoch ``e``."""

    def __init__(self, function):
        self.function = function

    def lr_at(self, epoch, run):
        return self.function(epoch)

    def __repr__(self):
        return f"FromFunction({getattr(self.function, '__name__', self.function)!r})"


#: the names ``fit(lr_schedule=...)`` takes
SCHEDULES = {"constant": Constant, "invscaling": InvScaling, "adaptive": Adaptive,
             "step": StepDecay, "cosine": Cosine, "plateau": ReduceOnPlateau}


def make_schedule(spec) -> Schedule:
    """A :class:`Schedule` from a name of :data:`SCHEDULES` (default parameters), a Schedule,
    or a callable of the epoch."""
    if isinstance(spec, Schedule):
        return spec
    if isinstance(spec, str):
        return SCHEDULES[checks.check_choice(spec, "lr_schedule", SCHEDULES)]()
    if callable(spec):
        return FromFunction(spec)
    raise TypeError(f"lr_schedule must be one of {list(SCHEDULES)}, a Schedule or a callable "
                    f"f(epoch) -> lr, got {spec!r}")
