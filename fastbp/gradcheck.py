"""Central-difference gradient check over the flattened parameter vector ``theta``.

For every component: ``dJ/dtheta_i ~ (J(theta + eps e_i) - J(theta - eps e_i)) / (2 eps)``,
compared with backpropagation. Runs in float64 on a copy of the network (same backend), so
the network itself is untouched. Far too slow for training: use it on small nets and data.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class GradCheckResult:
    """The worst relative error ``|g_bp - g_fd| / max(|g_bp| + |g_fd|, tiny)`` and where."""

    max_rel_error: float
    layer: int  # 1-based layer index
    param: str  # "W" or "b"
    index: tuple  # position inside W_l or b_l
    backprop: float
    numeric: float

    def __str__(self):
        return (f"max relative error {self.max_rel_error:.3e} at {self.param}_{self.layer}"
                f"{list(self.index)}: backprop {self.backprop:.6e}, numeric {self.numeric:.6e}")


def gradient_check(net, X, y, eps=1e-6, weight_decay=0.0) -> GradCheckResult:
    """Compare backprop with central differences on every parameter; see the module doc."""
    twin = net.copy(dtype="float64")
    theta = twin.get_flat_params()
    analytic = np.concatenate([np.concatenate([dW.ravel(), db])
                               for dW, db in twin.gradients(X, y, weight_decay)])
    numeric = np.empty_like(theta)
    for i in range(theta.size):
        numeric[i] = central_difference(twin, theta, i, eps, X, y, weight_decay)
    twin.set_flat_params(theta)
    rel = np.abs(analytic - numeric) / np.maximum(np.abs(analytic) + np.abs(numeric), 1e-12)
    worst = int(rel.argmax())
    layer, param, index = locate(net.sizes, worst)
    return GradCheckResult(float(rel[worst]), layer, param, index, float(analytic[worst]),
                           float(numeric[worst]))


def central_difference(net, theta, i, eps, X, y, weight_decay):
    """``(J(theta + eps e_i) - J(theta - eps e_i)) / (2 eps)``."""
    original = theta[i]
    theta[i] = original + eps
    net.set_flat_params(theta)
    plus = net.loss(X, y, weight_decay)
    theta[i] = original - eps
    net.set_flat_params(theta)
    minus = net.loss(X, y, weight_decay)
    theta[i] = original
    return (plus - minus) / (2 * eps)


def locate(sizes, flat_index):
    """``(layer, 'W' | 'b', index)`` of a position in ``theta = W_1, b_1, W_2, b_2, ...``."""
    offset = 0
    for layer, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:]), start=1):
        if flat_index < offset + n_in * n_out:
            return layer, "W", tuple(int(i) for i in divmod(flat_index - offset, n_out))
        offset += n_in * n_out
        if flat_index < offset + n_out:
            return layer, "b", (flat_index - offset,)
        offset += n_out
    raise IndexError(flat_index)
