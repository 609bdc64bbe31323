"""Class labels of any type <-> the targets a network trains on.

:class:`LabelCoder` learns the classes of a label vector -- strings, integers with gaps,
booleans, pandas categoricals (their values) -- or of a 0/1 indicator matrix, and the kind of
target that makes:

- ``binary`` (two classes): one sigmoid output, target ``[y == classes[1]]``; one class, where
  ``min_classes=1`` lets it (scikit-learn's estimators fit it), is binary too: target 0,
  and it is always the prediction;
- ``multiclass`` (three or more): a softmax over ``K`` outputs, target the class index;
- ``multilabel`` (an ``(N, K)`` 0/1 indicator matrix, several labels per sample): ``K`` sigmoid
  outputs, the matrix itself.

Classes are sorted (``numpy.unique``), as scikit-learn sorts them. No scikit-learn needed.
"""

from __future__ import annotations

import numpy as np

KINDS = ("binary", "multiclass", "multilabel")


def as_label_array(y, name="y") -> np.ndarray:
    """``y`` as a NumPy array (a pandas Series or categorical by its values)."""
    values = getattr(y, "to_numpy", None)
    arr = np.asarray(values() if callable(values) else y)
    if arr.ndim == 0 or arr.ndim > 2:
        raise ValueError(f"{name} must be a vector of labels or an (N, K) indicator matrix, "
                         f"got shape {arr.shape}")
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    return arr


def is_indicator(arr) -> bool:
    """Whether ``arr`` is a 2-D matrix of 0/1 (multi-label indicators)."""
    if arr.ndim != 2 or arr.dtype.kind not in "biuf":
        return False
    return bool(np.isin(arr, (0, 1)).all())


class LabelCoder:
    """Learns ``classes`` and ``kind`` from training labels; encodes and decodes them."""

    def __init__(self, classes=None, kind=None):
        self.classes, self.kind = classes, kind

    def fit(self, y, name="y", min_classes=2):
        """Learn the classes of ``y``; fewer than ``min_classes`` (2, or 1) is a ValueError."""
        arr = as_label_array(y, name)
        if arr.ndim == 2:
            if not is_indicator(arr):
                raise ValueError(f"a 2-D {name} must be a 0/1 indicator matrix (multi-label), "
                                 f"got values such as {arr.ravel()[:3].tolist()}")
            self.classes, self.kind = np.arange(arr.shape[1]), "multilabel"
            return self
        try:
            classes = np.unique(arr)
        except TypeError:
            raise TypeError(f"{name} mixes label types that cannot be sorted, such as "
                            f"{sorted({type(v).__name__ for v in arr.tolist()})}") from None
        if len(classes) < min_classes:
            raise ValueError(f"{name} has {len(classes)} class ({classes.tolist()}); a "
                             f"classifier needs at least {min_classes} classes")
        self.classes = classes
        self.kind = "binary" if len(classes) <= 2 else "multiclass"
        return self

    @property
    def n_outputs(self) -> int:
        """Output units: 1 for binary, else one per class."""
        return 1 if self.kind == "binary" else len(self.classes)

    @property
    def output(self) -> tuple[str, str]:
        """``(output activation, loss)`` of the network."""
        if self.kind == "multiclass":
            return "softmax", "cross_entropy"
        return "sigmoid", "binary_cross_entropy"

    def encode(self, y, name="y") -> np.ndarray:
        """Targets for the network: class indices (multiclass), 0/1 (binary), or the
        indicator matrix (multilabel); unknown labels are a ValueError naming them."""
        arr = as_label_array(y, name)
        if self.kind == "multilabel":
            if arr.ndim != 2 or arr.shape[1] != len(self.classes) or not is_indicator(arr):
                raise ValueError(f"{name} must be a 0/1 indicator matrix with "
                                 f"{len(self.classes)} columns, got shape {arr.shape}")
            return arr.astype(np.float64)
        if arr.ndim != 1:
            raise ValueError(f"{name} must be a vector of labels, got shape {arr.shape}")
        self.check_label_type(arr, name)
        index = np.searchsorted(self.classes, arr)
        index = np.minimum(index, len(self.classes) - 1)
        unknown = self.classes[index] != arr
        if unknown.any():
            raise ValueError(f"{name} has labels not seen in training: "
                             f"{np.unique(arr[unknown])[:5].tolist()}; the classes are "
                             f"{self.classes.tolist()}")
        return index.astype(np.float64) if self.kind == "binary" else index

    def check_label_type(self, arr, name):
        """Names against names, numbers against numbers: a label of the other type is a
        ValueError (never a cast that truncates or fails)."""
        if arr.size and holds_text(arr) != holds_text(self.classes):
            kind = "names" if holds_text(arr) else "numbers"
            other = "names" if holds_text(self.classes) else "numbers"
            example = arr.ravel()[:1].tolist()[0]
            raise ValueError(f"{name} holds {kind} (such as {example!r}), but "
                             f"the classes are {other}: {self.classes.tolist()}")

    def probabilities(self, outputs) -> np.ndarray:
        """Class probabilities ``(N, K)`` from the network's outputs (binary: ``[1-p, p]``)."""
        if self.kind == "binary":
            return np.hstack([1.0 - outputs, outputs])
        return outputs

    def decode(self, outputs) -> np.ndarray:
        """Predicted labels from the network's outputs: the most probable class, or for
        multi-label every output above 0.5."""
        if self.kind == "multilabel":
            return (outputs > 0.5).astype(np.int64)
        if self.kind == "binary":  # a single class is every prediction
            positive = (outputs[:, 0] > 0.5).astype(np.int64)
            return self.classes[np.minimum(positive, len(self.classes) - 1)]
        return self.classes[outputs.argmax(axis=1)]

    def __repr__(self):
        return f"LabelCoder(kind={self.kind!r}, classes={self.classes!r})"


def holds_text(arr) -> bool:
    """Whether the labels ``arr`` are names (strings) rather than numbers."""
    if arr.dtype.kind in "US":
        return True
    return arr.dtype.kind == "O" and any(isinstance(v, str) for v in arr.ravel())


def class_index(y, classes, name="y"):
    """The index of every label of ``y`` in ``classes``, each label compared as it is (no cast
    to the classes' type): a ValueError names unknown labels, or a label of the other type."""
    coder = LabelCoder(np.asarray(classes), "multiclass")
    return coder.encode(y, name)
