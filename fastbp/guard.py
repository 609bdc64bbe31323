"""One model, one thread at a time: concurrent use of one :class:`~fastbp.MLP` is an error.

A model's parameters, gradients and activation buffers are shared by every call on it: a
``predict`` in one thread during a ``fit`` in another would read half-updated weights and
overwrite the activations the backward pass needs. Every public method of the model is
:func:`exclusive`: it holds the model's (re-entrant) lock while it runs, and a call from a
second thread meanwhile raises a RuntimeError naming both calls, instead of waiting or
corrupting. Use ``net.copy()`` to give another thread a model of its own.
"""

from __future__ import annotations

import functools
import threading


class UseGuard:
    """The lock of one model and the name of the outermost call holding it."""

    def __init__(self):
        self.lock = threading.RLock()
        self.holder = None


def exclusive(method):
    """Run ``method`` holding ``self._guard``; another thread holding it is a RuntimeError."""
    name = method.__name__

    @functools.wraps(method)
    def guarded(self, *args, **kwargs):
        guard = self._guard
        if not guard.lock.acquire(blocking=False):
            raise RuntimeError(
                f"MLP.{name} was called while another thread runs MLP.{guard.holder} on the "
                "same model; a model serves one thread at a time: give each thread its own "
                "(net.copy())")
        outer, guard.holder = guard.holder, guard.holder or name
        try:
            return method(self, *args, **kwargs)
        finally:
            guard.holder = outer
            guard.lock.release()

    return guarded
