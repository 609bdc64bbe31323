"""numba-cuda 0.30 under NumPy >= 2.5: load its array-function registry with ``np.row_stack``.

At the first kernel compilation numba-cuda imports its NumPy registry ``numba.cuda.np.arrayobj``,
which registers an overload of ``np.row_stack`` for every NumPy >= 2.0; NumPy 2.5 removed
``np.row_stack`` (an alias of ``np.vstack`` since 2.0), so every compilation, and so every
kernel launch, fails with ``AttributeError: module 'numpy' has no attribute 'row_stack'``
(NVIDIA/numba-cuda#907: numba-cuda is in maintenance mode and declined the guard that numba
0.67 ships). First seen on an H200 with numpy 2.5.2 and numba-cuda 0.30.4, where it made the
``cupy`` backend unusable.

:func:`load_array_registry` imports that module once with a stand-in ``np.row_stack`` in place
and removes the stand-in again: the registry loads, the overload it makes is keyed to the
stand-in (which no kernel calls), and NumPy's namespace is left as it was found.
"""

import importlib

import numpy as np

REGISTRY = "numba.cuda.np.arrayobj"


def _row_stack_stand_in(tup):
    """What ``np.row_stack`` was: ``np.vstack``."""
    return np.vstack(tup)


def load_array_registry(simulator: bool) -> None:
    """Import numba-cuda's NumPy registry where NumPy lacks ``row_stack`` (not in the
    simulator, which compiles nothing and has no such registry)."""
    if simulator or hasattr(np, "row_stack"):
        return
    np.row_stack = _row_stack_stand_in
    try:
        importlib.import_module(REGISTRY)
    finally:
        del np.row_stack
