"""L-BFGS on the flattened parameter vector: the quasi-Newton "advanced optimiser" of the notes.

Full batch and deterministic (no dropout): SciPy's L-BFGS-B drives the iterations on the host
in float64, and each evaluation of ``J(theta)`` and ``dJ/dtheta`` is one forward and one
backward pass of the network on its backend, with the data already on the device.
:class:`LbfgsTrainer` is what ``fit(optimizer='lbfgs')`` runs: the minibatch trainer's
validation, history and callbacks around :func:`lbfgs_minimize`, one History entry per
iteration.
"""

from __future__ import annotations

import time

import numpy as np

from . import checks
from .history import History, format_logs
from .model import flatten_params, unflatten_params
from .trainer import Trainer
from .weights import weighted_loss_sum

INSTALL_HINT = "pip install scipy (or pip install 'fastbp[lbfgs]')"


def require_scipy_minimize():
    """``scipy.optimize.minimize``, or an ImportError saying what to install."""
    try:
        from scipy.optimize import minimize
    except ImportError:
        raise ImportError(f"optimizer='lbfgs' runs SciPy's L-BFGS-B, and SciPy is not "
                          f"installed: {INSTALL_HINT}") from None
    return minimize


def cost_and_gradient(net, X_dev, Y_dev, weight_decay, weights=None):
    """``f(theta) -> (J, dJ/dtheta)`` on the device data, for the full batch:
    ``J = mean_i L_i + (weight_decay/2) sum_l ||W_l||^2`` (float, float64 host vector);
    with host ``weights`` (N, 1) the mean is ``sum_i w_i L_i / sum_i w_i``."""
    backend, n = net.backend, X_dev.shape[0]
    on_device = None if weights is None else (backend.asarray(weights, net.dtype),
                                              backend.zeros((1,), net.dtype))

    def evaluate(theta):
        unflatten_params(net, theta)
        loss_acc = backend.zeros((1,), net.dtype)
        net.forward_device(X_dev)
        net.backward_device(Y_dev, 1.0 / n, weight_decay, loss_acc, on_device)
        if weights is None:
            mean = backend.scalar(loss_acc) / n
        else:
            top = net.layers[-1]
            mean = weighted_loss_sum(backend.to_numpy(top.z), backend.to_numpy(top.a),
                                     backend.to_numpy(Y_dev), weights, net.loss_fn.code)
            mean /= float(weights.sum())
        cost = mean + net.penalty(weight_decay)
        return cost, backend.to_numpy(net.grads).astype(np.float64)

    return evaluate


def lbfgs_minimize(net, X_dev, Y_dev, weight_decay=0.0, max_iter=100, callback=None,
                   weights=None, max_fun=None, gtol=None):
    """Minimise the full-batch cost ``J(theta)`` of ``net`` by L-BFGS-B; returns SciPy's
    ``OptimizeResult`` (``fun``: the final J, ``nit``: iterations, ``message``).

    ``X_dev``, ``Y_dev`` are the (preprocessed) features and target matrix on the network's
    backend. The best ``theta`` is written into ``net`` at the end. ``callback(iteration,
    logs)``, with ``logs = {"loss": J}``, runs after each iteration; returning True stops.
    ``weights``: host per-sample weights (N, 1) of the loss (:mod:`fastbp.weights`).
    At most ``max_iter`` iterations and ``max_fun`` evaluations of ``J``; converged when
    ``max_k |proj g_k| <= gtol`` (SciPy's ``maxfun`` and ``gtol``; None: SciPy's defaults).
    """
    minimize = require_scipy_minimize()
    weight_decay = checks.check_number(weight_decay, "weight_decay", low=0)
    max_iter = checks.check_number(max_iter, "max_iter", low=1, integer=True)
    limits = {"maxiter": max_iter, "maxfun": max_fun, "gtol": gtol}
    result = minimize(cost_and_gradient(net, X_dev, Y_dev, weight_decay, weights),
                      flatten_params(net).astype(np.float64), jac=True, method="L-BFGS-B",
                      options={k: v for k, v in limits.items() if v is not None},
                      callback=None if callback is None else iteration_callback(callback))
    unflatten_params(net, result.x)
    return result


def iteration_callback(callback):
    """SciPy's per-iteration hook calling ``callback(iteration, {"loss": J})``; True stops."""
    iteration = 0

    def hook(intermediate_result):
        nonlocal iteration
        iteration += 1
        if callback(iteration, {"loss": float(intermediate_result.fun)}):
            raise StopIteration

    return hook


class LbfgsTrainer(Trainer):
    """Full-batch L-BFGS on the flat parameter vector (SciPy drives; the backend evaluates
    ``J`` and ``dJ/dtheta``); one History entry per iteration."""

    def make_optimizer(self):
        return None  # SciPy's L-BFGS-B keeps its own state

    def run(self, checkpoint=None, resume=False) -> History:
        self.start = time.perf_counter()
        self.epoch_offset = 0
        self.callbacks = self.make_callbacks()
        for cb in self.callbacks:
            cb.on_train_begin(self)
        opts = self.opts
        result = lbfgs_minimize(self.net, self.X, self.Y, opts.weight_decay,
                                max_iter=opts.epochs, callback=self.iteration,
                                weights=self.weights, max_fun=opts.max_fun, gtol=opts.gtol)
        history = self.history
        history.solver_status, history.solver_message, history.solver_loss = (
            int(result.status), str(result.message), float(result.fun))
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
