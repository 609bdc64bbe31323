"""Sparse (CSR) features, densified batch by batch, never whole.

:class:`SparseRows` wraps a SciPy CSR matrix (or anything with ``tocsr()``; a SciPy sparse
matrix or array given to ``fit``, ``predict``, ``score`` ... is wrapped by
:func:`as_row_source`) for :func:`fastbp.train.fit`: the training loop streams it from the
host like a data set too big for the device, and every minibatch is ``rows[index]``: those
rows densified (``toarray``) and, with a preprocessor, transformed -- so the dense copy is one
batch. Validation and prediction read it in chunks the same way.
"""

from __future__ import annotations

import numpy as np


class SparseRows:
    """A CSR matrix whose rows read as dense float64 arrays, preprocessed on the way."""

    #: marks a host row source that fit streams instead of placing whole on the device
    densified_by_rows = True

    def __init__(self, matrix, preprocessor=None):
        self.matrix = matrix.tocsr()
        self.preprocessor = preprocessor

    @property
    def shape(self) -> tuple[int, int]:
        return self.matrix.shape

    ndim = 2

    def __len__(self):
        return self.matrix.shape[0]

    def __getitem__(self, rows) -> np.ndarray:
        """The rows ``rows`` (a slice or an index array) as a dense, preprocessed array."""
        dense = self.matrix[rows].toarray().astype(np.float64, copy=False)
        return dense if self.preprocessor is None else self.preprocessor.transform(dense)

    def raw_bytes(self) -> np.ndarray:
        """The CSR arrays' bytes, as uint8 (what a checkpoint's data fingerprint digests)."""
        m = self.matrix
        return np.concatenate([np.ascontiguousarray(a).view(np.uint8).ravel()
                               for a in (m.data, m.indices, m.indptr)])

    def subset(self, rows) -> SparseRows:
        """The rows ``rows``, still sparse (a training / validation split)."""
        return SparseRows(self.matrix[rows], self.preprocessor)

    def transformed(self, preprocessor) -> SparseRows:
        """The same rows, read through ``preprocessor``."""
        return SparseRows(self.matrix, preprocessor)

    def column_moments(self, weights=None) -> tuple[np.ndarray, np.ndarray]:
        """``(mean, std)`` of every column, weighted by ``weights`` (N,), from the sparse
        entries alone: ``std^2 = E[x^2] - E[x]^2``."""
        w = np.ones(self.shape[0]) if weights is None else np.asarray(weights, np.float64)
        total = w.sum()
        mean = np.asarray(self.matrix.T @ w).ravel() / total
        square = np.asarray(self.matrix.multiply(self.matrix).T @ w).ravel() / total
        return mean, np.sqrt(np.maximum(square - mean ** 2, 0.0))


def is_row_source(X) -> bool:
    """Whether ``X`` is read batch by batch (:class:`SparseRows`) rather than whole."""
    return getattr(X, "densified_by_rows", False)


def take(X, rows):
    """Rows ``rows`` of ``X``: a sparse subset of a row source, else ``X[rows]``."""
    return X.subset(rows) if is_row_source(X) else X[rows]


def as_row_source(X):
    """A SciPy sparse matrix or array as :class:`SparseRows`; anything else as it is (SciPy is
    not imported for this)."""
    is_scipy_sparse = (type(X).__module__.startswith("scipy.sparse") and hasattr(X, "tocsr")
                       and not is_row_source(X))
    return SparseRows(X) if is_scipy_sparse else X


def check_row_source(X, n_features: int, name: str):
    """A row source with ``n_features`` columns, a row, and finite stored values."""
    if X.shape[1] != n_features or X.shape[0] == 0:
        raise ValueError(f"{name} must have {n_features} features (columns) and a sample, "
                         f"got shape {X.shape}")
    values = X.matrix.data
    if values.dtype.kind not in "biuf":
        raise TypeError(f"{name} must hold real numbers, got dtype {values.dtype}")
    if not np.isfinite(values).all():
        raise ValueError(f"{name} must be finite; its stored values hold NaN or inf")
    return X
