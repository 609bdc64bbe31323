"""Host-side (NumPy) helpers for the network code: metrics and assembling chunked outputs.

The network modules never import NumPy themselves; what they need on the host lives here.
"""

import numpy as np


def concat_rows(chunks):
    """Stack per-chunk host arrays into one."""
    return chunks[0] if len(chunks) == 1 else np.concatenate(chunks, axis=0)


def check_finite_outputs(outputs, dtype: str):
    """``outputs``, unless one is NaN or inf: then a FloatingPointError saying where."""
    bad = ~np.isfinite(outputs)
    if bad.any():
        row, col = (int(i) for i in np.argwhere(bad)[0])
        raise FloatingPointError(
            f"the network's output {col} of sample {row} is {outputs[row, col]}: the weights "
            f"or the inputs overflow {dtype} (diverged training, or inputs far larger than "
            "those it was trained on)")
    return outputs


def class_indices(outputs):
    """``argmax_k`` of each row: the predicted (or one-hot true) class."""
    return np.asarray(outputs).argmax(axis=1)


def accuracy(outputs, targets, task: str, weights=None) -> float:
    """Fraction of samples predicted right: argmax for classes, every output thresholded at
    0.5 for binary / multi-label targets (subset accuracy); with ``weights`` ``w_i`` (N,)
    the weighted fraction ``sum_i w_i [right_i] / sum_i w_i`` (scikit-learn's
    ``accuracy_score``)."""
    if task == "binary":
        right = ((outputs > 0.5) == (targets > 0.5)).all(axis=1)
    else:
        right = class_indices(outputs) == class_indices(targets)
    return float(np.average(right, weights=weights))


def r2_score(outputs, targets, weights=None) -> float:
    """Coefficient of determination ``1 - SS_res / SS_tot`` of each output, averaged over the
    outputs, as scikit-learn's ``r2_score``: ``SS_res = sum_i w_i (y_i - yhat_i)^2`` and
    ``SS_tot = sum_i w_i (y_i - ybar)^2`` with ``ybar = sum_i w_i y_i / sum_i w_i`` (``w_i``
    = 1 without ``weights``); an output whose targets are constant (``SS_tot = 0``) scores 1
    if it is predicted exactly, else 0 (scikit-learn's ``force_finite``)."""
    w = np.ones(targets.shape[0]) if weights is None else np.asarray(weights, np.float64)
    w = w.reshape(-1, 1)
    ss_res = (w * (targets - outputs) ** 2).sum(axis=0)
    ss_tot = (w * (targets - np.average(targets, axis=0, weights=w[:, 0])) ** 2).sum(axis=0)
    exact = np.where(ss_res == 0, 1.0, 0.0)
    ratio = np.divide(ss_res, ss_tot, out=np.ones_like(ss_res), where=ss_tot > 0)
    return float(np.where(ss_tot > 0, 1.0 - ratio, exact).mean())


def score(outputs, targets, task: str, weights=None) -> float:
    """Accuracy for classifiers, R^2 for regression (weighted by ``weights`` (N,) if given)."""
    if task == "regression":
        return r2_score(outputs, targets, weights)
    return accuracy(outputs, targets, task, weights)


def dtype_name(dtype) -> str:
    """'float32' or 'float64', else a ValueError naming the argument (None too, which NumPy
    would read as float64)."""
    try:
        name = None if dtype is None else np.dtype(dtype).name
    except TypeError:
        name = None
    if name not in ("float32", "float64"):
        raise ValueError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
    return name
