"""Layers with the forward/backward API of the course notes, written only with backend ops.

A :class:`Dense` layer is the fused gate "affine, then activation":
``z = a_prev @ W + b``, ``a = g(z)``. Its ``backward`` takes ``delta = dJ/dz`` of this layer,
writes ``dW = a_prev.T @ delta + lam W`` and ``db = sum_rows(delta)``, and returns the delta of
the layer below, ``delta_prev = (delta @ W.T) * mask_prev * g_prev'(z_prev)`` — one GEMM and one
fused pass, which is why it is handed the layer below.

Dropout (inverted) lives on the layer whose output it drops, not in a layer of its own: its mask
multiplies ``a`` on the way up and folds into that same fused pass on the way down, so it
costs no extra sweep over the activations. Buffers are allocated once per batch size; a training
step allocates nothing after the first.
"""

from __future__ import annotations

from .activations import Activation

#: at most this many batch sizes keep buffers (training, its last partial batch, inference)
MAX_WORKSPACES = 4


class Workspace:
    """The preallocated buffers of one layer for one batch size ``N``."""

    def __init__(self, backend, n_rows, n_out, dtype, with_dropout):
        self.z = backend.empty((n_rows, n_out), dtype)
        self.a = backend.empty((n_rows, n_out), dtype)
        self.delta = backend.empty((n_rows, n_out), dtype)
        self.mask = backend.empty((n_rows, n_out), dtype) if with_dropout else None
        self.dropped = backend.empty((n_rows, n_out), dtype) if with_dropout else None


class Dense:
    """Affine map plus activation. ``W``, ``b``, ``dW``, ``db`` are views into the network's
    flat parameter and gradient vectors, so one optimizer call updates every layer."""

    def __init__(self, backend, W, b, dW, db, activation: Activation, dropout: float = 0.0):
        self.backend = backend
        self.W, self.b, self.dW, self.db = W, b, dW, db
        self.activation = activation
        self.dropout = dropout
        self._workspaces: dict[tuple[int, bool], Workspace] = {}
        self.a_prev = self.z = self.a = self.mask = None

    @property
    def n_in(self) -> int:
        return self.W.shape[0]

    @property
    def n_out(self) -> int:
        return self.W.shape[1]

    def workspace(self, n_rows: int, training: bool) -> Workspace:
        """Buffers for a batch of ``n_rows`` (allocated on first use, then reused)."""
        with_dropout = training and self.dropout > 0
        key = (n_rows, with_dropout)
        ws = self._workspaces.get(key)
        if ws is None:
            if len(self._workspaces) >= MAX_WORKSPACES:
                self._workspaces.clear()
            ws = Workspace(self.backend, n_rows, self.n_out, self.W.dtype, with_dropout)
            self._workspaces[key] = ws
        return ws

    def forward(self, a_prev, training: bool = False, rng=None):
        """``z = a_prev @ W + b``, ``a = g(z)`` (then ``a * mask`` when dropping out).

        Keeps ``a_prev``, ``z``, ``a`` and the mask for :meth:`backward`; returns the output.
        """
        ws = self.workspace(a_prev.shape[0], training)
        act = self.activation
        self.backend.linear_forward(a_prev, self.W, self.b, act.code, act.alpha, ws.z, ws.a)
        self.a_prev, self.z, self.a, self.mask, self.delta = a_prev, ws.z, ws.a, ws.mask, ws.delta
        if ws.mask is None:
            return ws.a
        self.backend.dropout_mask(rng, self.dropout, ws.mask)
        self.backend.xp.multiply(ws.a, ws.mask, out=ws.dropped)
        return ws.dropped

    def backward(self, delta, below: Dense | None, weight_decay: float = 0.0):
        """Gradients of this layer from ``delta = dJ/dz``; returns the delta of ``below``.

        ``dW = a_prev.T @ delta + weight_decay * W``, ``db = sum_rows(delta)``; with a layer
        below, ``delta_below = (delta @ W.T) * mask_below * g_below'(z_below)``; else None
        (the input layer needs no delta, which saves a GEMM).
        """
        self.backend.weight_grads(self.a_prev, delta, self.W, weight_decay, self.dW, self.db)
        if below is None:
            return None
        act = below.activation
        return self.backend.backprop_delta(delta, self.W, below.z, below.a, act.code, act.alpha,
                                           below.delta, below.mask)
