"""Data: bundled sets, .npz / .csv loaders, a train-only standardiser, and splits.

Bundled sets come from scikit-learn's own files (no download): ``digits`` (8x8 images,
10 classes), ``iris`` (3 classes), ``breast_cancer`` (binary) and ``diabetes`` (regression);
``xor`` is the four-point toy problem. Install the ``data`` extra for the first four.
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass

import numpy as np

from . import checks
from .csvfile import read_labelled_csv
from .files import FileFormatError

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
    arrays = read_npz(path, (x_key, y_key))
    X = checks.as_float_array(arrays[x_key], f"{path}: {x_key}")
    y = checks.as_float_array(arrays[y_key], f"{path}: {y_key}")
    return Dataset(X, y, task or guess_task(y), os.path.basename(str(path)))


def read_npz(path, keys) -> dict:
    """The arrays ``keys`` of an .npz data file (``keys[1:]`` may be absent); every problem a
    :class:`~fastbp.files.FileFormatError` naming the file."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no data file at {path!r}")
    try:
        with np.load(path, allow_pickle=False) as f:
            if not hasattr(f, "files"):
                raise FileFormatError(f"{path!r} is a single .npy array, not an .npz archive")
            if keys[0] not in f.files:
                raise FileFormatError(f"{path!r}: expected arrays {list(keys)}, found {f.files}")
            return {k: f[k] for k in keys if k in f.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        if isinstance(exc, FileFormatError):
            raise
        raise FileFormatError(f"{path!r} is not an .npz archive of numeric arrays (truncated, "
                              "corrupt, pickled or another kind of file)") from None


def load_csv(path, target=-1, task=None, header=None) -> Dataset:
    """Features and target from a CSV (see :mod:`fastbp.csvfile`); ``target`` is a column
    name or index, ``header`` None (guess), True or False. A target column of names
    ("cat", "dog") gives string labels and a classification task."""
    _, X, y = read_labelled_csv(path, target, header)
    if X.shape[1] < 1:
        raise FileFormatError(f"{path!r} has 1 column: training needs at least one feature "
                              "column besides the target")
    task = task or ("classification" if y.dtype.kind == "U" else guess_task(y))
    return Dataset(X, y, task, os.path.basename(str(path)))


def guess_task(y) -> str:
    """Integer labels -> classification (0/1 only: still classification); floats -> regression."""
    y = np.asarray(y)
    if y.ndim == 1 and np.all(y == np.round(y)) and y.min() >= 0 and len(np.unique(y)) <= 1000:
        return "classification"
    return "regression"


def load_any(source, target=-1, header=None) -> Dataset:
    """A bundled name, or a path to an .npz or .csv file (``header``: see :func:`load_csv`)."""
    text = str(source)
    if text.endswith(".npz"):
        return load_npz(text)
    if text.endswith(".csv"):
        return load_csv(text, target, header=header)
    if os.path.exists(text):
        raise ValueError(f"data file must end in .npz or .csv, got {text!r}")
    return load(text)


def standardize(X, mean, std, xp, out=None):
    """``(X - mean) / std`` into ``out`` (a new array when None, ``X`` itself to standardise in
    place), by ``xp``'s ufuncs in ``X``'s dtype (``mean`` and ``std`` already in it): the one
    definition of the standardiser's maths, for a whole set and for a gathered batch alike."""
    out = xp.subtract(X, mean, out=out)
    return xp.divide(out, std, out=out)


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
        """``(X - mean) / std`` in ``X``'s float dtype (float32 data stays float32: one new
        array, no float64 copy of a large set)."""
        if self.mean is None:
            raise RuntimeError("Standardizer.transform called before fit")
        X = checks.as_float_array(X, "X")
        return standardize(X, self.mean.astype(X.dtype), self.std.astype(X.dtype), np)


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
