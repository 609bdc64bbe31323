"""fastbp: textbook backpropagation for multilayer perceptrons, fast on any hardware.

>>> import fastbp
>>> net = fastbp.MLP([64, 32, 10], activation="relu", seed=0)
>>> history = net.fit(X, y, epochs=20, batch_size=64, lr=0.1)  # doctest: +SKIP
"""

from . import data
from .backend import available_backends, get_backend
from .gradcheck import gradient_check
from .io import load
from .model import MLP, flatten_params, unflatten_params
from .train import History

__version__ = "0.1.0"

__all__ = ["MLP", "History", "available_backends", "data", "flatten_params", "get_backend",
           "gradient_check", "load", "unflatten_params", "__version__"]
