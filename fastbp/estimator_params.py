"""The estimators' constructor parameters and inputs (see :mod:`fastbp.estimators`):
scikit-learn's names for fastbp's choices, the scikit-learn constraints of fastbp's own
parameters, the helpers of the constructors and of ``partial_fit``'s availability, and what
``X`` is taken as (a tensor as a NumPy array; the float dtype scikit-learn keeps)."""

from __future__ import annotations

import math
from numbers import Real

import numpy as np
from sklearn.utils._param_validation import Interval, StrOptions

from .arrays import detached, host_array
from .backend import Backend
from .fit_options import PRECISIONS
from .preprocess import PREPROCESSORS

#: scikit-learn's activation names -> fastbp's
ACTIVATIONS = {"identity": "identity", "logistic": "sigmoid", "tanh": "tanh", "relu": "relu"}
#: the gain of scikit-learn's Glorot-uniform initial weights, per fastbp activation (the
#: default 1 if not listed): ``U[-b, b]``, ``b = sqrt(2 / (n_in + n_out))`` for the
#: logistic, ``sqrt(6 / ...)`` for the others: ``init="glorot_uniform"``, gain 1/sqrt(3) or 1
SKLEARN_INIT_GAIN = {"sigmoid": 1 / math.sqrt(3)}
#: the solvers that train in epochs of minibatches (early_stopping, partial_fit)
STOCHASTIC_SOLVERS = ("adam", "sgd")
#: integer feature dtypes the estimators pass to training unconverted where the model's dtype
#: holds them exactly
INTEGER_DTYPES = (np.bool_, np.uint8, np.int8, np.uint16, np.int16, np.uint32, np.int32)
#: scikit-learn parameter constraints of fastbp's own constructor parameters
FASTBP_CONSTRAINTS = {
    "backend": [str, Backend],
    "dtype": [str, type, np.dtype],
    "precision": [StrOptions(set(PRECISIONS))],
    "dropout": [Interval(Real, 0, 1, closed="left")],
    "preprocess": [StrOptions(set(PREPROCESSORS)), None],
}


def store_parameters(estimator, arguments: dict):
    """Set every constructor argument (the ``locals()`` of an ``__init__``, but ``self``) as
    the attribute of its name, unchanged: scikit-learn's convention."""
    for name, value in arguments.items():
        if name != "self":
            setattr(estimator, name, value)


def stochastic_solver(estimator) -> bool:
    """``partial_fit``'s ``available_if`` check: True for 'sgd' and 'adam', else the
    AttributeError scikit-learn raises."""
    if estimator.solver not in STOCHASTIC_SOLVERS:
        raise AttributeError(f"partial_fit is only available for stochastic optimizers. "
                             f"{estimator.solver} is not stochastic.")
    return True


def tensors_to_host(x):
    """A tensor or other DLPack array (PyTorch, JAX, CuPy) as a host NumPy array, through
    fastbp's one converter (detached, copied once where it is on a device); anything else as
    given, for scikit-learn's own validation (which keeps a DataFrame's feature names)."""
    if hasattr(x, "__dlpack__") and not isinstance(x, np.ndarray):
        return host_array(detached(x), "X")
    return x


def float_dtype_of(X) -> np.dtype:
    """The float dtype scikit-learn's MLP keeps ``X`` in: float32 where ``X`` (every column
    of a DataFrame) is float32, else float64 (integers, lists, mixed columns)."""
    dtypes = getattr(X, "dtypes", None)  # a DataFrame's, one a column
    if dtypes is None or isinstance(dtypes, np.dtype):
        dtypes = [getattr(X, "dtype", None)]
    single = all(d == np.float32 for d in dtypes)
    return np.dtype(np.float32 if single else np.float64)
