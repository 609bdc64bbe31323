"""fastbp: textbook backpropagation for multilayer perceptrons, fast on any hardware.

>>> import fastbp
>>> net = fastbp.MLP([64, 32, 10], activation="relu", seed=0)
>>> history = net.fit(X, y, epochs=20, batch_size=64, lr=0.1)  # doctest: +SKIP
"""

from . import data
from .backend import available_backends, get_backend
from .gradcheck import gradient_check
from .history import History
from .io import load
from .model import MLP, flatten_params, unflatten_params
from . import train  # noqa: F401  (fastbp.train.fit: the documented entry point)

__version__ = "0.1.0"

#: names imported on first use, from modules that need an optional dependency
LAZY = {"MLPClassifier": "estimators", "MLPRegressor": "estimators"}


def __getattr__(name):
    """``fastbp.MLPClassifier`` / ``MLPRegressor`` import scikit-learn only when first used
    (``pip install 'fastbp[sklearn]'``), so ``import fastbp`` works without it."""
    if name in LAZY:
        import importlib

        return getattr(importlib.import_module(f".{LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'fastbp' has no attribute {name!r}")


__all__ = ["MLP", "MLPClassifier", "MLPRegressor", "History", "available_backends", "data",
           "flatten_params", "get_backend", "gradient_check", "load", "unflatten_params",
           "__version__"]
