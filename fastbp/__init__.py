"""fastbp: textbook backpropagation for multilayer perceptrons, fast on any hardware."""

from .backend import available_backends, get_backend

__version__ = "0.1.0"

__all__ = ["available_backends", "get_backend", "__version__"]
