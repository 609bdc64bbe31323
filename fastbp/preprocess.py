"""Input preprocessing fitted on the training data only: standardisation and PCA / ZCA whitening.

``MLP(preprocess="standardize" | "pca" | "zca")`` fits one of these on the training features at
the first :meth:`~fastbp.MLP.fit` (``net.fit_preprocessor(X)``), applies it to every later input
and saves it with the model. Host-side NumPy: it runs once per input, before the backend.
"""

from __future__ import annotations

import numpy as np

from . import checks
from .arrays import exact_integers, namespace
from .data import Standardizer, standardize

#: the names ``MLP(preprocess=...)`` takes ("auto": see :func:`choose_auto`)
PREPROCESSORS = ("standardize", "pca", "zca", "auto")
WHITENING = ("pca", "zca")
#: ``preprocess="auto"`` standardises when feature spreads differ by more than this factor, or
#: a feature's mean or std exceeds it in magnitude
AUTO_LIMIT = 10.0


def choose_auto(mean, std):
    """What ``preprocess="auto"`` does with training features of these column moments
    (:func:`fastbp.weights.column_moments`): "standardize" when they are badly scaled -- the
    largest non-zero feature std over the smallest exceeds :data:`AUTO_LIMIT`, or some
    feature's ``|mean|`` or std does -- else None: features already on a common unit scale are
    left as they are (as scikit-learn's MLP sees them; on iris that generalises better than
    standardising)."""
    spread = std[std > 0]
    if not len(spread):
        return None
    badly_scaled = (spread.max() / spread.min() > AUTO_LIMIT or spread.max() > AUTO_LIMIT
                    or np.abs(mean).max() > AUTO_LIMIT)
    return "standardize" if badly_scaled else None


class Whitener:
    """Decorrelate the features and give each direction unit variance.

    With the training mean ``mu`` and covariance ``C = (X - mu).T @ (X - mu) / N``, eigen-
    decomposed as ``C = U diag(s) U.T`` (``s`` descending):

    - ``pca``: ``x -> (x - mu) @ U @ diag(1 / sqrt(s + eps))`` — the principal components,
      each scaled to unit variance;
    - ``zca``: ``x -> (x - mu) @ U @ diag(1 / sqrt(s + eps)) @ U.T`` — the same, rotated back to
      the original axes (the whitened data closest to the input).

    The whitened training covariance is ``U diag(s / (s + eps)) U.T``: the identity up to
    ``eps / s``. ``eps`` keeps directions of (near) zero variance finite; raise it (0.1 on
    pixel data, say) to damp the noise directions instead of blowing them up to unit variance.
    """

    def __init__(self, method="zca", eps=1e-8, mean=None, matrix=None):
        self.method = checks.check_choice(method, "method", WHITENING)
        self.eps = checks.check_number(eps, "eps", low=0, low_open=True)
        self.mean, self.matrix = mean, matrix

    def fit(self, X):
        """Fit ``mu`` and the whitening matrix on training features ``X`` (float64)."""
        X = np.asarray(checks.as_float_array(X, "X"), dtype=np.float64)
        if X.ndim != 2 or X.shape[0] < 2:
            raise ValueError(f"X must be 2-D with at least 2 samples to whiten, got shape "
                             f"{X.shape}")
        self.mean = X.mean(axis=0)
        centred = X - self.mean
        variances, U = np.linalg.eigh(centred.T @ centred / X.shape[0])
        variances, U = np.maximum(variances[::-1], 0.0), U[:, ::-1]
        self.matrix = U / np.sqrt(variances + self.eps)
        if self.method == "zca":
            self.matrix = self.matrix @ U.T
        return self

    def transform(self, X):
        """``(X - mu) @ matrix``."""
        if self.mean is None:
            raise RuntimeError("Whitener.transform called before fit")
        return (checks.as_float_array(X, "X") - self.mean) @ self.matrix

    def __repr__(self):
        return f"Whitener(method={self.method!r}, eps={self.eps!r})"


def standardizes_batches(preprocessor, X, dtype) -> bool:
    """Whether training standardises each gathered batch instead of the whole set first: a
    standardiser, on dense features already in the model's ``dtype`` or integers it holds
    exactly (converted as each batch is gathered). The batch then holds the same numbers as the
    rows of the standardised set (the same operations in the same dtype), and no standardised
    copy of the set is made: half the memory, and no first touch of a copy as large as the set
    (0.6 s for 60000x784 float32 here) before the first step."""
    return isinstance(preprocessor, Standardizer) and (
        X.dtype == np.dtype(dtype) or exact_integers(X.dtype, dtype))


def transform(preprocessor, X):
    """``preprocessor.transform(X)``; a device array (``fastbp.arrays.to_array`` left it on
    the backend's device) is transformed there, in its own dtype, with the same maths."""
    if isinstance(X, np.ndarray):
        return preprocessor.transform(X)
    xp = namespace(X)
    mean = xp.asarray(preprocessor.mean, dtype=X.dtype)
    if isinstance(preprocessor, Standardizer):
        return standardize(X, mean, xp.asarray(preprocessor.std, dtype=X.dtype), xp)
    return (X - mean) @ xp.asarray(preprocessor.matrix, dtype=X.dtype)


def affine_map(preprocessor, n_features: int):
    """``(A, c)`` with ``preprocessor.transform(x) = x @ A + c`` (float64; the identity for
    None): what an exported model folds into its first layer."""
    if preprocessor is None:
        return np.eye(n_features), np.zeros(n_features)
    if isinstance(preprocessor, Standardizer):
        scale = 1.0 / np.asarray(preprocessor.std, dtype=np.float64)
        return np.diag(scale), -np.asarray(preprocessor.mean, dtype=np.float64) * scale
    matrix = np.asarray(preprocessor.matrix, dtype=np.float64)
    return matrix, -np.asarray(preprocessor.mean, dtype=np.float64) @ matrix


def check_preprocess(preprocess, standardize: bool):
    """The preprocessor name (or None) from ``preprocess=`` and its alias ``standardize=True``
    (which ``preprocess`` must then leave at "auto" or say "standardize" too)."""
    checks.check_flag(standardize, "standardize")
    if preprocess is not None:
        checks.check_choice(preprocess, "preprocess", PREPROCESSORS)
    if standardize and preprocess not in ("standardize",):
        raise ValueError(f"standardize=True means preprocess='standardize'; got both "
                         f"standardize=True and preprocess={preprocess!r}: give one")
    return "standardize" if standardize else preprocess


def make_preprocessor(name: str):
    """An unfitted preprocessor for a name of :data:`PREPROCESSORS`."""
    checks.check_choice(name, "preprocess", PREPROCESSORS)
    return Standardizer() if name == "standardize" else Whitener(name)


def to_arrays(preprocessor) -> dict:
    """A fitted preprocessor as named arrays for a model file."""
    if isinstance(preprocessor, Standardizer):
        return {"standardizer_mean": preprocessor.mean, "standardizer_std": preprocessor.std}
    return {"whitener_mean": preprocessor.mean, "whitener_matrix": preprocessor.matrix,
            "whitener_method": np.array(preprocessor.method)}


def from_arrays(arrays: dict):
    """The preprocessor saved in a model file's ``arrays`` by :func:`to_arrays`, or None."""
    if "standardizer_mean" in arrays:
        return Standardizer(arrays["standardizer_mean"], arrays["standardizer_std"])
    if "whitener_mean" in arrays:
        return Whitener(str(arrays["whitener_method"]), mean=arrays["whitener_mean"],
                        matrix=arrays["whitener_matrix"])
    return None
