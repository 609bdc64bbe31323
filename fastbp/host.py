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


def accuracy(outputs, targets, task: str) -> float:
    """Fraction of samples predicted right: argmax for classes, every output thresholded at
    0.5 for binary / multi-label targets (subset accuracy)."""
    if task == "binary":
        return float(((outputs > 0.5) == (targets > 0.5)).all(axis=1).mean())
    return float((class_indices(outputs) == class_indices(targets)).mean())


def r2_score(outputs, targets) -> float:
    """Coefficient of determination ``1 - SS_res / SS_tot``, averaged over the outputs."""
    ss_res = ((targets - outputs) ** 2).sum(axis=0)
    ss_tot = ((targets - targets.mean(axis=0)) ** 2).sum(axis=0)
    ratio = np.divide(ss_res, ss_tot, out=np.zeros_like(ss_res), where=ss_tot > 0)
    return float((1.0 - ratio).mean())


def score(outputs, targets, task: str) -> float:
    """Accuracy for classifiers, R^2 for regression."""
    return r2_score(outputs, targets) if task == "regression" else accuracy(outputs, targets, task)


def dtype_name(dtype) -> str:
    """'float32' or 'float64', else a ValueError naming the argument."""
    try:
        name = np.dtype(dtype).name
    except TypeError:
        name = None
    if name not in ("float32", "float64"):
        raise ValueError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
    return name
