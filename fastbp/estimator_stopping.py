"""scikit-learn's stopping rule and verbose lines for the estimators' stochastic solvers.

scikit-learn's MLP counts the epochs in a row without an improvement by more than ``tol``
(``_no_improvement_count``) against ``best_loss_`` -- or with early stopping against
``best_validation_score_`` -- and carries the count and the best over warm starts and
``partial_fit`` calls; after ``n_iter_no_change + 1`` such epochs it stops, or with the
'adaptive' rate divides the rate by 5. :class:`ScikitLearnStopping` is that rule: an
:class:`~fastbp.callbacks.EarlyStopping` that starts from the estimator's count and best,
and with ``verbose`` prints scikit-learn's lines (``Iteration N, loss = ...``,
``Validation score: ...`` and why it stopped or lowered the rate).

The loss it watches, prints and keeps (``losses``, the estimator's ``loss_curve_``) is
scikit-learn's: with ``K`` regression outputs scikit-learn's squared error averages over them,
``1/(2K) sum_k (y_k - yhat_k)^2``, where fastbp's sums, while its gradient is fastbp's (the
delta ``yhat - y`` is not divided by ``K``). :func:`scikit_learn_loss` converts.
"""

from __future__ import annotations

import math

from .callbacks import EarlyStopping
from .schedules import Adaptive


class ScikitLearnStopping(EarlyStopping):
    """scikit-learn's stopping rule over one fit, starting from ``best`` (the best loss or
    validation score of the fits it continues; None: none) and ``count`` epochs without
    improvement; ``schedule`` the learning-rate schedule ('adaptive' lowers the rate)."""

    def __init__(self, early_stopping, tol, n_iter_no_change, schedule=None, verbose=False,
                 best=None, count=0, output_share=1.0):
        adaptive = isinstance(schedule, Adaptive)
        super().__init__("val_score" if early_stopping else "loss", min_delta=tol,
                         patience=n_iter_no_change + 1, restore_best=early_stopping,
                         on_plateau=self.lower_rate if adaptive else None)
        self.plateau.every_gain = True  # scikit-learn's tol rule
        self.schedule, self.verbose = schedule, verbose
        self.tol, self.n_iter_no_change = tol, n_iter_no_change
        self.start_best, self.start_count = best, count
        self.iteration = 0
        #: ``1/K`` for ``K`` regression outputs, else 1 (:func:`scikit_learn_loss`)
        self.output_share = output_share
        #: scikit-learn's training loss of every epoch of this fit
        self.losses = []

    def on_train_begin(self, run):
        super().on_train_begin(run)
        if self.start_best is not None:
            self.plateau.best = self.plateau.seen = self.plateau.sign * self.start_best
            self.plateau.wait = self.start_count
        self.iteration = 0

    @property
    def count(self) -> int:
        """Epochs in a row without an improvement by more than ``tol`` (scikit-learn's
        ``_no_improvement_count``)."""
        return self.plateau.wait

    def on_epoch_end(self, epoch, logs, run) -> bool:
        self.iteration += 1  # scikit-learn counts the epochs of this call
        loss = scikit_learn_loss(logs["loss"], self.output_share, run.net, run.opts.weight_decay)
        self.losses.append(loss)
        logs = {**logs, "loss": loss}
        self.say(f"Iteration {self.iteration}, loss = {loss:.8f}")
        if self.plateau.monitor == "val_score":
            self.say(f"Validation score: {logs['val_score']:f}")
        stop = super().on_epoch_end(epoch, logs, run)
        if stop:
            too_small = " Learning rate too small." if self.on_plateau is not None else ""
            self.say(f"{self.no_improvement()}{too_small} Stopping.")
        return stop

    def lower_rate(self, run) -> bool:
        """The 'adaptive' rate on a plateau: divided by 5 unless it is too small already."""
        lowered = self.schedule.lower(run)
        if lowered:
            self.say(f"{self.no_improvement()} Setting learning rate to {run.lr:f}")
        return lowered

    def no_improvement(self) -> str:
        what = "Validation score" if self.plateau.monitor == "val_score" else "Training loss"
        epochs = self.n_iter_no_change
        epochs = epochs if epochs == math.inf else int(epochs)
        return (f"{what} did not improve more than tol={self.tol:f} for {epochs} "
                f"consecutive epochs.")

    def say(self, line):
        if self.verbose:
            print(line)


def scikit_learn_loss(loss, output_share, net, weight_decay) -> float:
    """scikit-learn's value of fastbp's ``loss`` (the mean loss plus the penalty of ``net``'s
    weights): the data term times ``output_share`` (``1/K``), the penalty as it is."""
    if output_share == 1.0:
        return loss
    penalty = net.penalty(weight_decay)
    return (loss - penalty) * output_share + penalty
