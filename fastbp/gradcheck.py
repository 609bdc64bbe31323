"""Central-difference gradient check over the flattened parameter vector ``theta``.

For every component: ``dJ/dtheta_i ~ (J(theta + eps e_i) - J(theta - eps e_i)) / (2 eps)``,
compared with backpropagation. Runs in float64 on a copy of the network (same backend), so
the network itself is untouched. Far too slow for training: use it on small nets and data.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .model import flatten_params, unflatten_params


@dataclass
class GradCheckResult:
    """The worst relative error ``|g_bp - g_fd| / max(|g_bp| + |g_fd|, tiny)`` and where."""

    max_rel_error: float
    layer: int  # 1-based layer index
    param: str  # "W", "b" or "alpha" (a PReLU slope)
    index: tuple  # position inside that array (a maxout W: (row, piece * n_out + unit))
    backprop: float
    numeric: float

    def __str__(self):
        return (f"max relative error {self.max_rel_error:.3e} at {self.param}_{self.layer}"
                f"{list(self.index)}: backprop {self.backprop:.6e}, numeric {self.numeric:.6e}")


def gradient_check(net, X, y, eps=1e-6, weight_decay=0.0) -> GradCheckResult:
    """Compare backprop with central differences on every parameter; see the module doc."""
    twin = net.copy(dtype="float64")
    theta = flatten_params(twin)
    analytic = np.concatenate([g.ravel() for grads in twin.gradients(X, y, weight_decay)
                               for g in grads])
    numeric = np.array([central_difference(twin, theta, i, eps, X, y, weight_decay)
                        for i in range(theta.size)])
    rel = np.abs(analytic - numeric) / np.maximum(np.abs(analytic) + np.abs(numeric), 1e-12)
    worst = int(rel.argmax())
    layer, param, index = locate(net.param_layout, worst)
    return GradCheckResult(float(rel[worst]), layer, param, index, float(analytic[worst]),
                           float(numeric[worst]))


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
