"""Data: bundled sets, .npz / .csv loaders, a train-only standardiser, and splits.

Bundled sets come from scikit-learn's own files (no download): ``digits`` (8x8 images,
10 classes), ``iris`` (3 classes), ``breast_cancer`` (binary) and ``diabetes`` (regression);
``xor`` is the four-point toy problem. Install the ``data`` extra for the first four.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from . import checks

BUNDLED = ("digits", "iris", "breast_cancer", "diabetes", "xor")


@dataclass
class Dataset:
    """Features ``X`` (N, d), targets ``y`` and the kind of task they pose."""

    X: np.ndarray
    y: np.ndarray
    task: str  # "classification", "binary" or "regression"
    name: str = ""

    @property
    def n_outputs(self) -> int:
        if self.task == "classification":
            return int(self.y.max()) + 1
        return 1 if self.y.ndim == 1 else self.y.shape[1]


def load(name: str) -> Dataset:
    """A bundled data set by name (see :data:`BUNDLED`)."""
    if name == "xor":
        X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=np.float64)
        return Dataset(X, np.array([0.0, 1.0, 1.0, 0.0]), "binary", "xor")
    if name not in BUNDLED:
        raise ValueError(f"data set must be one of {list(BUNDLED)} or a .npz/.csv path, "
                         f"got {name!r}")
    try:
        from sklearn import datasets
    except ImportError:
        raise ImportError(f"the bundled {name!r} data comes with scikit-learn: "
                          "pip install 'fastbp[data]'") from None
    bunch = getattr(datasets, f"load_{name}")()
    task = {"breast_cancer": "binary", "diabetes": "regression"}.get(name, "classification")
    return Dataset(bunch.data.astype(np.float64), bunch.target.astype(np.float64), task, name)


def load_digits() -> Dataset:
    """The 1797 8x8 handwritten digits (64 features, 10 classes)."""
    return load("digits")


def load_npz(path, x_key="X", y_key="y", task=None) -> Dataset:
    """Arrays ``X`` and ``y`` from an .npz file (no pickle)."""
    with np.load(path, allow_pickle=False) as f:
        missing = [k for k in (x_key, y_key) if k not in f.files]
        if missing:
            raise ValueError(f"{path}: expected arrays {x_key!r} and {y_key!r}, "
                             f"found {f.files}")
        X, y = f[x_key], f[y_key]
    return Dataset(checks.as_float_array(X, "X"), checks.as_float_array(y, "y"),
                   task or guess_task(y), os.path.basename(str(path)))


def read_csv(path) -> tuple[list[str] | None, np.ndarray]:
    """A numeric CSV as ``(header or None, float64 matrix)``."""
    with open(path, encoding="utf-8") as f:
        first = f.readline()
    cells = [c.strip() for c in first.split(",")]
    header = None if all(is_number(c) for c in cells) else cells
    data = np.loadtxt(path, delimiter=",", skiprows=1 if header else 0, ndmin=2)
    return header, data


def load_csv(path, target=-1, task=None) -> Dataset:
    """Features and target from a numeric CSV; ``target`` is a column name or index."""
    header, data = read_csv(path)
    col = column_index(header, target, data.shape[1])
    y = data[:, col]
    X = np.delete(data, col, axis=1)
    return Dataset(X, y, task or guess_task(y), os.path.basename(str(path)))


def column_index(header, target, n_cols) -> int:
    """Resolve a target column given by name or (negative) index."""
    if isinstance(target, str) and not is_number(target):
        if header is None or target not in header:
            raise ValueError(f"target column {target!r} not found; columns: {header}")
        return header.index(target)
    index = int(target)
    if not -n_cols <= index < n_cols:
        raise ValueError(f"target column index must be in [{-n_cols}, {n_cols - 1}], got {index}")
    return index % n_cols


def is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def guess_task(y) -> str:
    """Integer labels -> classification (0/1 only: still classification); floats -> regression."""
    y = np.asarray(y)
    if y.ndim == 1 and np.all(y == np.round(y)) and y.min() >= 0 and len(np.unique(y)) <= 1000:
        return "classification"
    return "regression"


def load_any(source, target=-1) -> Dataset:
    """A bundled name, or a path to an .npz or .csv file."""
    text = str(source)
    if text.endswith(".npz"):
        return load_npz(text)
    if text.endswith(".csv"):
        return load_csv(text, target)
    if os.path.exists(text):
        raise ValueError(f"data file must end in .npz or .csv, got {text!r}")
    return load(text)


class Standardizer:
    """Zero-centre and scale each feature: ``(X - mean) / std``, fitted on training data only.

    Constant features (``std == 0``) are centred and left unscaled.
    """

    def __init__(self, mean=None, std=None):
        self.mean, self.std = mean, std

    def fit(self, X):
        X = checks.as_float_array(X, "X")
        self.mean = X.mean(axis=0)
        std = X.std(axis=0)
        self.std = np.where(std > 0, std, 1.0)
        return self

    def transform(self, X):
        if self.mean is None:
            raise RuntimeError("Standardizer.transform called before fit")
        return (checks.as_float_array(X, "X") - self.mean) / self.std


def train_test_split(X, y, test_size=0.2, seed=None, stratify=True):
    """``X_train, X_test, y_train, y_test`` by a seeded shuffle; for integer class labels the
    test set takes the same share of every class (``stratify``)."""
    checks.check_number(test_size, "test_size", low=0, high=1, low_open=True, high_open=True)
    X, y = np.asarray(X), np.asarray(y)
    if X.shape[0] != y.shape[0]:
        raise ValueError(f"X and y must have the same number of rows, got {X.shape[0]} and "
                         f"{y.shape[0]}")
    rng = np.random.default_rng(seed)
    if stratify and y.ndim == 1 and guess_task(y) == "classification":
        groups = [np.flatnonzero(y == c) for c in np.unique(y)]
    else:
        groups = [np.arange(X.shape[0])]
    test = np.concatenate([rng.permutation(g)[:int(round(test_size * len(g)))] for g in groups])
    is_test = np.zeros(X.shape[0], dtype=bool)
    is_test[test] = True
    if is_test.all() or not is_test.any():
        raise ValueError(f"test_size={test_size} leaves an empty split of {X.shape[0]} samples")
    return X[~is_test], X[is_test], y[~is_test], y[is_test]
