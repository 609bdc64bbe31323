"""Validation at the API boundary: every error names the argument, what was expected, what came.

Work on user inputs before anything reaches a backend (every array comes in through
:mod:`fastbp.arrays`, on the host or used in place on the device), so a failed call
leaves the model untouched.
"""

from __future__ import annotations

import difflib
import math
import numbers

import numpy as np

from .arrays import as_float_array, check_finite, first_index, is_pandas
from .sparse import as_row_source, check_row_source, is_row_source

__all__ = ["as_float_array", "check_finite", "check_features", "check_targets",
           "class_targets", "check_number", "check_choice"]


def check_features(X, n_features: int, name: str = "X", backend=None, dtype=None,
                   keep_exact_integers=False, feature_names=None):
    """``X`` as a finite 2-D float array with ``n_features`` columns whose values fit ``dtype``:
    on ``backend``'s device if it is there already, else on the host (see
    :func:`fastbp.arrays.to_array`); host integers that ``dtype`` holds exactly stay integers
    with ``keep_exact_integers`` (see :func:`fastbp.arrays.as_float_array`). A DataFrame's
    column names must be ``feature_names`` (the model's, if it has them), in their order."""
    check_columns(X, feature_names, name)
    X = as_float_array(X, name, backend, dtype, keep_exact_integers)
    if X.ndim != 2:
        raise ValueError(f"{name} must be 2-D (samples, features), got shape {X.shape}")
    if X.shape[0] == 0:
        raise ValueError(f"{name} is empty: expected at least one sample, got shape {X.shape}")
    if X.shape[1] != n_features:
        raise ValueError(
            f"{name} must have {n_features} features (columns), got {X.shape[1]}")
    check_finite(X, name, dtype)
    return X


def check_features_or_rows(X, n_features: int, name: str = "X", backend=None, dtype=None,
                           keep_exact_integers=False, feature_names=None):
    """:func:`check_features` for dense ``X``; sparse features (SciPy, or a
    :class:`~fastbp.sparse.SparseRows`) come back as a checked row source, never densified."""
    X = as_row_source(X)
    if is_row_source(X):
        return check_row_source(X, n_features, name)
    return check_features(X, n_features, name, backend, dtype, keep_exact_integers,
                          feature_names)


def frame_columns(X) -> list | None:
    """The column names of a pandas DataFrame whose columns are all named by strings (the
    names a model keeps, as scikit-learn's ``feature_names_in_``), else None."""
    columns = getattr(X, "columns", None) if is_pandas(X) else None
    names = [] if columns is None else list(columns)
    return names if names and all(isinstance(n, str) for n in names) else None


def check_columns(X, feature_names, name="X"):
    """A DataFrame with named columns must have the columns ``feature_names``, in order
    (arrays, and models without names, pass)."""
    columns = frame_columns(X)
    if columns is None or feature_names is None or columns == list(feature_names):
        return
    missing = [c for c in feature_names if c not in columns]
    unexpected = [c for c in columns if c not in feature_names]
    if missing or unexpected:
        raise ValueError(f"{name}'s columns are not the features the model was trained on: "
                         f"missing {missing}, unexpected {unexpected}")
    raise ValueError(f"{name}'s columns are the model's features in another order; select "
                     f"them in the model's order: {name}[net.config['feature_names']]")


def check_targets(y, n_samples: int, n_outputs: int, task: str, name: str = "y",
                  backend=None, dtype=None):
    """Targets as a float ``(N, n_outputs)`` matrix (one-hot for classification), on
    ``backend``'s device if ``y`` is there already, else on the host.

    classification: class indices in ``0..n_outputs-1`` of shape (N,) or (N, 1), or one-hot
    (N, K);
    binary: 0/1 (or probabilities) of shape (N,) or (N, K);
    regression: floats of shape (N,) or (N, K).
    """
    arr = as_float_array(y, name, backend)
    if arr.ndim == 0 or arr.ndim > 2:
        raise ValueError(f"{name} must be 1-D or 2-D, got shape {arr.shape}")
    if arr.shape[0] != n_samples:
        raise ValueError(
            f"{name} must have one row per sample of X ({n_samples}), got {arr.shape[0]}")
    check_finite(arr, name, dtype)
    if task == "classification":
        return class_targets(arr, n_outputs, name)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.shape[1] != n_outputs:
        raise ValueError(
            f"{name} must have {n_outputs} column(s) to match the output layer, "
            f"got shape {arr.shape}")
    if task == "binary" and (arr.min() < 0 or arr.max() > 1):
        raise ValueError(
            f"{name} must lie in [0, 1] for binary_cross_entropy, got values in "
            f"[{arr.min()}, {arr.max()}]")
    return arr


def class_targets(arr, n_classes: int, name: str):
    """One-hot ``(N, n_classes)`` from class indices ``(N,)`` or a one-hot matrix (in the
    array's own namespace: host or device)."""
    if arr.ndim == 2 and arr.shape[1] == 1 < n_classes:
        arr = arr[:, 0]  # a column of class indices (a one-hot matrix has n_classes columns)
    if arr.ndim == 2:
        if arr.shape[1] != n_classes:
            raise ValueError(
                f"one-hot {name} must have {n_classes} columns, got shape {arr.shape}")
        if not (((arr == 0) | (arr == 1)).all() and (arr.sum(axis=1) == 1).all()):
            raise ValueError(f"2-D {name} must be one-hot (a single 1 per row)")
        return arr
    labels = arr.astype(np.int64)
    if (labels != arr).any():
        raise ValueError(f"{name} must hold integer class indices, got "
                         f"{arr[first_index(labels != arr)]}")
    if labels.min() < 0 or labels.max() >= n_classes:
        raise ValueError(
            f"{name} must hold class indices in [0, {n_classes - 1}] for {n_classes} outputs, "
            f"got values in [{labels.min()}, {labels.max()}]")
    classes = np.arange(n_classes, like=labels)
    return (labels[:, None] == classes[None, :]).astype(np.float64)


def check_number(value, name: str, *, low=None, high=None, low_open=False, high_open=False,
                 integer=False, allow_none=False):
    """A real (or integer) number within bounds, else a ValueError/TypeError naming ``name``."""
    if value is None and allow_none:
        return None
    kind = numbers.Integral if integer else numbers.Real
    if isinstance(value, bool) or not isinstance(value, kind):
        expected = "an integer" if integer else "a number"
        raise TypeError(f"{name} must be {expected}, got {value!r} ({type(value).__name__})")
    if not integer and not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value!r}")
    too_low = low is not None and (value <= low if low_open else value < low)
    too_high = high is not None and (value >= high if high_open else value > high)
    if too_low or too_high:
        left = "(" if low_open else "["
        right = ")" if high_open else "]"
        lower, upper = "-inf" if low is None else low, "inf" if high is None else high
        bounds = f"{left}{lower}, {upper}{right}"
        raise ValueError(f"{name} must be in {bounds}, got {value!r}")
    return int(value) if integer else float(value)


def check_choice(value, name: str, choices):
    """``value`` if it is one of ``choices``, else a ValueError listing them."""
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}")
    return value


def check_param(array, name, shape):
    """A host parameter array of ``shape``, finite, else a ValueError naming it."""
    array = as_float_array(array, name)
    if array.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, got {array.shape}")
    check_finite(array, name)
    return array


def check_flag(value, name: str) -> bool:
    """A yes/no option: True or False (NumPy's too), never a string or a number read as
    truthy ("no" would be yes)."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def check_sequence(values, name: str, example: str) -> list:
    """A list (or tuple, array, ...) of items: not a string, whose letters would be taken as
    the items, nor a dict or a set, which have no order of their own."""
    if isinstance(values, (str, bytes, dict, set, frozenset)) or not hasattr(values, "__iter__"):
        raise TypeError(f"{name} must be a list like {example}, got {values!r}")
    return list(values)


def check_sizes(sizes):
    """Layer sizes: a list of at least two positive integers."""
    sizes = check_sequence(sizes, "sizes", "[64, 32, 10]")
    if len(sizes) < 2:
        raise ValueError(f"sizes must list at least an input and an output size, got {sizes}")
    return [check_number(s, f"sizes[{i}]", low=1, integer=True)
            for i, s in enumerate(sizes)]


def check_classes(classes, n_outputs):
    """None, or a list of distinct class names (str or int) for the outputs."""
    if classes is None:
        return None
    names = [c.item() if hasattr(c, "item") else c
             for c in check_sequence(classes, "classes", "['cat', 'dog']")]
    if any(not isinstance(c, (str, int)) for c in names) or len(set(names)) != len(names):
        raise ValueError(f"classes must be distinct names (str or int), got {names!r}")
    if len(names) not in (n_outputs, 2 if n_outputs == 1 else n_outputs):
        raise ValueError(f"classes must name the {n_outputs} outputs, got {len(names)} names")
    return names


def check_seed(seed):
    """A seed is None or a non-negative integer."""
    if seed is not None:
        check_number(seed, "seed", low=0, integer=True)


def check_name(name, what):
    """None or a string."""
    if name is not None and not isinstance(name, str):
        raise TypeError(f"{what} must be a string or None, got {name!r}")
    return name


def check_feature_names(names, n_features):
    """None, or a list of one name (a string) per input feature."""
    if names is None:
        return None
    names = [check_name(n, f"feature_names[{j}]") for j, n in
             enumerate(check_sequence(names, "feature_names", "['age', 'height']"))]
    if len(names) != n_features:
        raise ValueError(f"feature_names must name the {n_features} inputs, got "
                         f"{len(names)} names")
    return names


def check_output_width(output: str, n_outputs: int):
    """A softmax needs two outputs or more: over one unit it is 1 whatever the input."""
    if output == "softmax" and n_outputs < 2:
        raise ValueError("output='softmax' over 1 unit is always 1 and cannot learn: for two "
                         "classes use 2 softmax outputs, or 1 output with output='sigmoid' "
                         "and loss='binary_cross_entropy'")


def check_keywords(given, known, where: str):
    """Every name in ``given`` is one of ``known``, else a TypeError naming the closest."""
    for name in given:
        if name not in known:
            close = difflib.get_close_matches(name, list(known), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise TypeError(f"{where} got an unexpected keyword argument {name!r}{hint}")
