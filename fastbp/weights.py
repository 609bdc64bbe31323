"""Per-sample and per-class weights of the training loss (host side).

With weights ``w_i`` the cost of a batch is ``sum_i w_i L_i / sum_j w_j`` (plus weight decay)
and its output delta ``delta_L,i = w_i dL_i/dz / sum_j w_j`` (:meth:`fastbp.backend.Backend.
weight_rows`); integer weights train exactly like repeated rows. ``class_weight`` gives every
sample of class ``k`` the weight ``c_k``: ``"balanced"`` is ``c_k = N / (K n_k)``
(scikit-learn's rule), a dict maps class index to weight (missing classes weigh 1); it
multiplies ``sample_weight``.
"""

from __future__ import annotations

import numpy as np

from . import checks
from .data import Standardizer
from .kernels import reference
from .sparse import is_row_source


def check_sample_weight(sample_weight, n_samples: int):
    """Non-negative finite weights, one per sample, not all zero; as float64 (N,)."""
    w = checks.as_float_array(sample_weight, "sample_weight")
    if w.ndim != 1 or w.shape[0] != n_samples:
        raise ValueError(f"sample_weight must have shape ({n_samples},), one weight per "
                         f"sample, got shape {w.shape}")
    checks.check_finite(w, "sample_weight")
    if (w < 0).any():
        raise ValueError(f"sample_weight must be non-negative, got {w[w < 0][0]}")
    if not w.sum() > 0:
        raise ValueError("sample_weight must not be all zero")
    return np.asarray(w, dtype=np.float64)


def class_column(Y, task):
    """The class index of every row of a classification target matrix."""
    if task == "binary":
        if Y.shape[1] != 1:
            raise ValueError("class_weight needs one class per sample; multi-label targets "
                             "take sample_weight instead")
        return (Y[:, 0] > 0.5).astype(np.int64)
    return Y.argmax(axis=1)


def check_class_weight(class_weight):
    """None, "balanced" or a dict ``{class index: weight > 0}``."""
    if class_weight is None or class_weight == "balanced":
        return class_weight
    if not isinstance(class_weight, dict):
        raise TypeError(f"class_weight must be None, 'balanced' or a dict {{class: weight}}, "
                        f"got {class_weight!r}")
    for key, value in class_weight.items():
        checks.check_number(key, "class_weight key (a class index)", low=0, integer=True)
        checks.check_number(value, f"class_weight[{key!r}]", low=0)
    return class_weight


def check_class_weight_for(class_weight, task, n_outputs):
    """``class_weight`` fits a network of ``task`` with ``n_outputs`` outputs: a classifier,
    and class indices below its number of classes (before any data is touched)."""
    if class_weight is None:
        return
    if task == "regression":
        raise ValueError("class_weight needs a classifier; this network does regression")
    n_classes = max(n_outputs, 2)
    unknown = [] if class_weight == "balanced" else [k for k in class_weight if k >= n_classes]
    if unknown:
        raise ValueError(f"class_weight has class index {unknown[0]}, the network has "
                         f"{n_classes} classes (0..{n_classes - 1})")


def class_weights(class_weight, Y, task):
    """Per-row weights ``c_{k_i}`` (N,), or None without ``class_weight``."""
    if class_weight is None:
        return None
    check_class_weight_for(class_weight, task, Y.shape[1])
    labels = class_column(Y, task)
    n_classes = max(Y.shape[1], 2)
    if class_weight == "balanced":
        counts = np.bincount(labels, minlength=n_classes)
        present = counts > 0
        per_class = np.zeros(n_classes)
        per_class[present] = len(labels) / (present.sum() * counts[present])
    else:
        per_class = np.array([float(class_weight.get(k, 1.0)) for k in range(n_classes)])
    return per_class[labels]


def row_weights(sample_weight, class_weight, Y, task):
    """The ``(N, 1)`` weight column of the training loss, or None when every weight is 1."""
    w = None if sample_weight is None else check_sample_weight(sample_weight, Y.shape[0])
    by_class = class_weights(class_weight, Y, task)
    if by_class is not None:
        w = by_class if w is None else w * by_class
    if w is None:
        return None
    if not w.sum() > 0:
        raise ValueError("sample_weight times class_weight is zero for every sample")
    return w[:, None]


def weighted_loss_sum(z, a, y, w, loss_code) -> float:
    """``sum_i w_i L_i`` on host arrays, per-sample losses from the reference kernels."""
    return float(reference.loss_rows(z, a, y, loss_code) @ w[:, 0])


def column_moments(X, weights=None, chunk=512) -> tuple[np.ndarray, np.ndarray]:
    """``(mean, std)`` of every column of ``X`` (dense, or a sparse row source from its
    entries), weighted by ``weights`` (N,) when given: ``mean = sum_i w_i x_i / sum_i w_i``,
    ``std^2 = sum_i w_i (x_i - mean)^2 / sum_i w_i``. In float64, ``chunk`` rows at a time
    through one cache-sized buffer (a float32 set is never copied whole), each row shifted by
    the first one so that large means cancel before squaring:
    ``std^2 = E[(x - x_0)^2] - E[x - x_0]^2``."""
    if is_row_source(X):
        return X.column_moments(weights)
    w = np.ones(X.shape[0]) if weights is None else np.asarray(weights, np.float64)
    shift = np.asarray(X[0], np.float64)
    first = np.zeros(X.shape[1])
    second = np.zeros(X.shape[1])
    buffer = np.empty((min(chunk, X.shape[0]), X.shape[1]))
    for lo in range(0, X.shape[0], chunk):
        part = np.asarray(X[lo:lo + chunk])
        rows = np.subtract(part, shift, out=buffer[:part.shape[0]])
        first += w[lo:lo + chunk] @ rows
        second += w[lo:lo + chunk] @ np.multiply(rows, rows, out=rows)
    total = w.sum()
    mean = first / total
    return shift + mean, np.sqrt(np.maximum(second / total - mean * mean, 0.0))


def standardizer(mean, std):
    """The :class:`~fastbp.data.Standardizer` of these moments (a constant feature, ``std``
    0, is centred and left unscaled)."""
    return Standardizer(mean, np.where(std > 0, std, 1.0))
