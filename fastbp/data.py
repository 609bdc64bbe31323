"""Data: bundled sets, .npz / .csv loaders, a train-only standardiser, and splits.

Bundled sets come from scikit-learn's own files (no download): ``digits`` (8x8 images,
10 classes), ``iris`` (3 classes), ``breast_cancer`` (binary) and ``diabetes`` (regression);
``xor`` is the four-point toy problem. Install the ``data`` extra for the first four.

File extensions are matched case-insensitively (``DATA.CSV`` is a CSV). A CSV's column names
travel with its :class:`Dataset` (``feature_names``, ``target_name``) so that a model trained on
it can match a later file's columns by name.
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass

import numpy as np

from . import checks
from .csvfile import Columns, read_csv, read_labelled_csv
from .files import FileFormatError

BUNDLED = ("digits", "iris", "breast_cancer", "diabetes", "xor")
#: the most distinct values a target guessed to hold class labels may have
MAX_GUESSED_CLASSES = 1000


class SplitError(ValueError):
    """A stratified split cannot give every class rows on both sides."""


@dataclass
class Dataset:
    """Features ``X`` (N, d), targets ``y`` and the kind of task they pose."""

    X: np.ndarray
    y: np.ndarray
    task: str  # "classification", "binary" or "regression"
    name: str = ""
    feature_names: list[str] | None = None  # the CSV header's, when it has one
    target_name: str | None = None

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
    """Arrays ``X`` and ``y`` from an .npz file (no pickle); ``y`` may hold class names."""
    arrays = read_npz(path, (x_key, y_key), n_required=2)
    X = checks.as_float_array(arrays[x_key], f"{path}: {x_key}")
    y = as_targets(arrays[y_key], f"{path}: {y_key}")
    return Dataset(X, y, task or guess_task(y), os.path.basename(str(path)))


def as_targets(y, name) -> np.ndarray:
    """Targets as float64, or class names (strings) as they are."""
    if y.dtype.kind in "US":
        return y
    return checks.as_float_array(y, name)


def read_npz(path, keys, n_required=1) -> dict:
    """The arrays ``keys`` of an .npz data file (``keys[n_required:]`` may be absent); every
    problem a :class:`~fastbp.files.FileFormatError` naming the file."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no data file at {path!r}")
    try:
        with open(path, "rb") as raw:
            f = np.load(raw, allow_pickle=False)
            if not hasattr(f, "files"):
                raise FileFormatError(f"{path!r} is a single .npy array, not an .npz archive "
                                      f"of arrays {list(keys)}")
            missing = [k for k in keys[:n_required] if k not in f.files]
            if missing:
                raise FileFormatError(f"{path!r} has no array {missing[0]!r}: expected arrays "
                                      f"{list(keys[:n_required])}, found {f.files}")
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
    path = os.fspath(path)
    names, X, y = read_labelled_csv(path, target, header)
    if X.shape[1] < 1:
        raise FileFormatError(f"{path!r} has 1 column: training needs at least one feature "
                              "column besides the target" + delimiter_hint(names, y))
    return Dataset(X, y, task or guess_task(y), os.path.basename(str(path)),
                   names and names[:-1], names and names[-1])


def delimiter_hint(names, y) -> str:
    """A hint when a file's one column looks like several joined by ``;`` or a tab."""
    cells = list(names or []) + [str(v) for v in y[:1]]
    separator = next((sep for sep in (";", "\t") if any(sep in c for c in cells)), None)
    if separator is None:
        return ""
    return (f" (its cells hold {separator!r}: fastbp reads comma-separated values; convert "
            "the file to commas)")


def guess_task(y) -> str:
    """Class labels -> classification, else regression. Names are labels; numbers are when
    every value is an integer and there are exactly 2 distinct values (0/1, -1/1, ...), or at
    most :data:`MAX_GUESSED_CLASSES` with on average at least 2 rows each (60 distinct integer
    prices in 60 rows are a quantity)."""
    y = np.asarray(y)
    if y.ndim == 1 and y.dtype.kind in "USO":
        return "classification"
    if y.ndim != 1 or not len(y) or not np.all(y == np.round(y)):
        return "regression"
    n_values = len(np.unique(y))
    if n_values == 2 or (n_values <= MAX_GUESSED_CLASSES and len(y) >= 2 * n_values):
        return "classification"
    return "regression"


def file_kind(source) -> str:
    """A path's extension, lower case (``"DATA.CSV"`` -> ``".csv"``)."""
    return os.path.splitext(str(source))[1].lower()


def load_any(source, target=-1, header=None) -> Dataset:
    """A bundled name, or a path to an .npz or .csv file (``header``: see :func:`load_csv`)."""
    text = str(source)
    if file_kind(text) == ".npz":
        return load_npz(text)
    if file_kind(text) == ".csv":
        return load_csv(text, target, header=header)
    if os.path.exists(text):
        raise ValueError(f"data file must end in .npz or .csv, got {text!r}")
    return load(text)


def load_features(source, target=None, header=None, expected: Columns | None = None):
    """``(X, y or None)`` of a file to predict on: an .npz with ``X`` (and ``y`` when it holds
    one), or any other path as a CSV whose ``target`` column (name or index), when given, is
    ``y``. A CSV's columns are matched to ``expected`` by name
    (:func:`fastbp.csvfile.match_columns`)."""
    if file_kind(source) == ".npz":
        arrays = read_npz(source, ("X", "y"))
        X = checks.as_float_array(arrays["X"], f"{source}: X")
        y = arrays.get("y")
        return X, None if y is None else as_targets(y, f"{source}: y")
    if target is None:
        return read_csv(source, header, expected)[1], None
    return read_labelled_csv(source, target, header, expected)[1:]


def check_range(X, dtype, source, feature_names=None):
    """Every value of ``X`` within ``dtype``'s range (1e200 does not fit float32), checked
    before any split or training, naming the first row and column that does not."""
    limit = np.finfo(dtype).max
    if X.dtype.itemsize <= np.dtype(dtype).itemsize:
        return
    too_large = np.isfinite(X) & (np.abs(X) > limit)
    if not too_large.any():
        return
    row, column = np.argwhere(too_large)[0]
    name = f" ({feature_names[column]!r})" if feature_names else ""
    raise ValueError(f"{source}: data row {row + 1}, feature column {column + 1}{name}: "
                     f"{X[row, column]:g} is too large for dtype={np.dtype(dtype).name} "
                     f"(at most {limit:.4g}); use dtype=float64 or rescale the feature")


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


def train_test_split(X, y, test_size=0.2, seed=None, stratify=None):
    """``X_train, X_test, y_train, y_test`` by a seeded shuffle. Stratified, the test set takes
    the same share of every class, and a class that cannot have rows on both sides is a
    :class:`SplitError` naming it: ``stratify`` is True (by the classes of ``y``), an array of
    one label per row (by those, e.g. class names for ``y`` of class indices), False, or None
    (the default: by ``y`` when it looks like class labels, see :func:`guess_task`)."""
    checks.check_number(test_size, "test_size", low=0, high=1, low_open=True, high_open=True)
    checks.check_seed(seed)
    X, y = np.asarray(X), np.asarray(y)
    if X.shape[0] != y.shape[0]:
        raise ValueError(f"X and y must have the same number of rows, got {X.shape[0]} and "
                         f"{y.shape[0]}")
    rng = np.random.default_rng(seed)
    if stratify is None:
        stratify = y.ndim == 1 and guess_task(y) == "classification"
    if stratify is True:
        stratify = y
    if stratify is not False:
        groups = class_groups(np.asarray(stratify), test_size)
    else:
        groups = [np.arange(X.shape[0])]
    test = np.concatenate([rng.permutation(g)[:int(round(test_size * len(g)))] for g in groups])
    is_test = np.zeros(X.shape[0], dtype=bool)
    is_test[test] = True
    if is_test.all() or not is_test.any():
        raise ValueError(f"test_size={test_size} leaves an empty split of {X.shape[0]} samples")
    return X[~is_test], X[is_test], y[~is_test], y[is_test]


def class_groups(y, test_size) -> list[np.ndarray]:
    """The rows of each class of ``y``; a :class:`SplitError` naming the smallest class that
    ``test_size`` puts in the test split only (the model would never train on it), or, when
    no class gets a test row, the smallest class."""
    classes, inverse, counts = np.unique(y, return_inverse=True, return_counts=True)
    n_test = np.round(test_size * counts).astype(int)
    only_test = n_test == counts
    if only_test.any() or not n_test.any():
        candidates = np.flatnonzero(only_test) if only_test.any() else np.arange(len(counts))
        k = candidates[np.argmin(counts[candidates])]
        side = "test" if only_test[k] else "training"
        label = classes[k:k + 1].tolist()[0]
        raise SplitError(f"test_size={test_size} cannot put class {label!r} in both splits: "
                         f"its {counts[k]} row(s) all go to the {side} split")
    return [np.flatnonzero(inverse == k) for k in range(len(classes))]
