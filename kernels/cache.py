"""Where Numba caches the compiled kernels: a per-user folder, never beside the installed code.

``cache=True`` would otherwise write ``__pycache__/*.nbi|*.nbc`` next to ``kernels/*.py``:
inside ``site-packages`` for a regular install. A later ``pip install -e`` removes the package
but not that folder, and the leftover ``site-packages/fastbp/`` then imports as an empty
namespace package, shadowing the editable checkout (``fastbp`` without ``MLP``). So the cache
goes to ``$NUMBA_CACHE_DIR`` if the user set it, else ``$XDG_CACHE_HOME/fastbp/numba`` (by
default ``~/.cache/fastbp/numba``). Numba mirrors each source file's full path below it, so
several installs never share entries. :func:`use_user_cache_dir` runs when
``fastbp.kernels`` is imported, before any kernel is compiled.
"""

from __future__ import annotations

import os
import sys

VARIABLE = "NUMBA_CACHE_DIR"


def user_cache_dir() -> str:
    """``$XDG_CACHE_HOME/fastbp/numba``, by default ``~/.cache/fastbp/numba``."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "fastbp", "numba")


def use_user_cache_dir():
    """Point Numba's cache at :func:`user_cache_dir` unless ``NUMBA_CACHE_DIR`` is set (Numba
    reads the variable when it is imported and again before each compilation; an already
    imported Numba is told directly)."""
    if os.environ.get(VARIABLE):
        return
    os.environ[VARIABLE] = user_cache_dir()
    if "numba" in sys.modules:
        from numba.core import config

        config.CACHE_DIR = os.environ[VARIABLE]
