"""Central-difference gradient check over the flattened parameter vector ``theta``.

For every component: ``dJ/dtheta_i ~ (J(theta + eps e_i) - J(theta - eps e_i)) / (2 eps)``,
compared with backpropagation. Runs in float64 on a copy of the network (same backend), so
the network itself is untouched. Far too slow for training: use it on small nets and data.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from . import checks
from .model import flatten_params, unflatten_params


@dataclass
class GradCheckResult:
    """The verdict of a gradient check and its worst component.

    The relative error of component ``i`` is ``|g_bp - g_fd| / max(|g_bp|, |g_fd|, atol/rtol)``:
    relative where the gradient is large, ``|g_bp - g_fd| / (atol/rtol)`` where it is below
    ``atol/rtol`` -- so a gradient that is 0 up to rounding (backprop 0, numeric 2e-10) passes
    on the absolute tolerance ``atol`` instead of scoring a meaningless relative error of 1.
    The check passes (``passed``, and ``bool(result)``) when ``max_rel_error <= rtol``;
    ``layer``, ``param``, ``index``, ``backprop`` and ``numeric`` locate the worst component.
    """

    passed: bool
    max_abs_error: float
    max_rel_error: float
    layer: int  # 1-based layer index
    param: str  # "W", "b" or "alpha" (a PReLU slope)
    index: tuple  # position inside that array (a maxout W: (row, piece * n_out + unit))
    backprop: float
    numeric: float
    rtol: float
    atol: float

    def __bool__(self):
        return self.passed

    def __str__(self):
        verdict = "passed" if self.passed else "FAILED"
        return (f"gradient check {verdict} (rtol {self.rtol:g}, atol {self.atol:g}): max "
                f"absolute error {self.max_abs_error:.3e}, max relative error "
                f"{self.max_rel_error:.3e}; worst at {self.param}_{self.layer}"
                f"{list(self.index)}: backprop {self.backprop:.6e}, numeric {self.numeric:.6e}")


def gradient_check(net, X, y, eps=1e-6, weight_decay=0.0, rtol=1e-5,
                   atol=1e-8) -> GradCheckResult:
    """Compare backprop with central differences on every parameter; see the module doc and
    :class:`GradCheckResult` for the verdict."""
    eps = checks.check_number(eps, "eps", low=0, low_open=True)
    rtol = checks.check_number(rtol, "rtol", low=0)
    atol = checks.check_number(atol, "atol", low=0)
    twin = net.copy(dtype="float64")
    theta = flatten_params(twin)
    analytic = np.concatenate([g.ravel() for grads in twin.gradients(X, y, weight_decay)
                               for g in grads])
    numeric = np.array([central_difference(twin, theta, i, eps, X, y, weight_decay)
                        for i in range(theta.size)])
    error = np.abs(analytic - numeric)
    floor = max(atol / rtol if rtol else 0.0, np.finfo(np.float64).tiny)
    relative = error / np.maximum(np.maximum(np.abs(analytic), np.abs(numeric)), floor)
    worst = int(relative.argmax())
    layer, param, index = locate(net.param_layout, worst)
    return GradCheckResult(bool(relative[worst] <= rtol), float(error.max()),
                           float(relative[worst]), layer, param, index, float(analytic[worst]),
                           float(numeric[worst]), rtol, atol)


def central_difference(net, theta, i, eps, X, y, weight_decay):
    """``(J(theta + eps e_i) - J(theta - eps e_i)) / (2 eps)``; leaves ``theta`` as it was."""
    original = theta[i]
    theta[i] = original + eps
    unflatten_params(net, theta)
    plus = net.loss(X, y, weight_decay)
    theta[i] = original - eps
    unflatten_params(net, theta)
    minus = net.loss(X, y, weight_decay)
    theta[i] = original
    return (plus - minus) / (2 * eps)


def locate(layout, flat_index):
    """``(layer, name, index)`` of a position in ``theta``, for a network's ``param_layout``
    (per layer ``[(name, shape), ...]``, e.g. ``W_1, b_1, W_2, b_2, alpha_2, ...``)."""
    offset = 0
    for layer, spec in enumerate(layout, start=1):
        for name, shape in spec:
            size = math.prod(shape)
            if flat_index < offset + size:
                return layer, name, tuple(int(i) for i in np.unravel_index(flat_index - offset,
                                                                           shape))
            offset += size
    raise IndexError(flat_index)
