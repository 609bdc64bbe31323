"""Loss names -> kernel codes, the output activations each may follow, and what targets it takes.

Per sample, with ``a = a_L``: mse ``1/2 sum_k (a_k - y_k)^2``; binary_cross_entropy
``-sum_k [y_k log a_k + (1-y_k) log(1-a_k)]``; cross_entropy ``-sum_k y_k log a_k``; hinge
(multi-class SVM) ``sum_{j != c} max(0, z_j - z_c + 1)``. The cost is
``J = mean_i L_i + (weight_decay/2) sum_l ||W_l||^2`` (biases are not regularised).
"""

from dataclasses import dataclass

from .kernels import codes


@dataclass(frozen=True)
class Loss:
    """A loss, the output activations it is defined on, and the kind of target it wants."""

    name: str
    code: int
    outputs: tuple  # valid output activation names
    task: str  # "classification" (one class per sample), "binary" (0/1 per output), "regression"


LOSSES = {
    "mse": Loss("mse", codes.MSE,
                ("identity", "sigmoid", "tanh", "relu", "leaky_relu", "elu", "softmax"),
                "regression"),
    "binary_cross_entropy": Loss("binary_cross_entropy", codes.BINARY_CROSS_ENTROPY,
                                 ("sigmoid",), "binary"),
    "cross_entropy": Loss("cross_entropy", codes.CROSS_ENTROPY, ("softmax",), "classification"),
    "hinge": Loss("hinge", codes.HINGE, ("identity",), "classification"),
}


def make_loss(name, output_name: str) -> Loss:
    """The :class:`Loss` for ``name``, checked against the output activation it follows."""
    if not isinstance(name, str):
        raise TypeError(f"loss must be a loss name (str), got {type(name).__name__}")
    if name not in LOSSES:
        raise ValueError(f"loss must be one of {list(LOSSES)}, got {name!r}")
    loss = LOSSES[name]
    if output_name not in loss.outputs:
        raise ValueError(
            f"output={output_name!r} cannot be paired with loss={name!r}: "
            f"{name} needs output in {list(loss.outputs)}")
    return loss
