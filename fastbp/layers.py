"""Layers with the forward/backward API of the course notes, written only with backend ops.

A :class:`Dense` layer is the fused gate "affine, then activation":
``z = a_prev @ W + b``, ``a = g(z)``. Its ``backward`` takes ``delta = dJ/dz`` of this layer,
writes ``dW = a_prev.T @ delta + lam W`` and ``db = sum_rows(delta)``, and asks the layer below
for its delta, ``below.delta_from(delta, W)``. Each layer turns the delta of the layer above
into its own by its own derivative: a Dense layer by ``(delta @ W.T) * mask * g'(z)`` — one GEMM
and one fused pass — and the layers whose activation has parameters of its own (:class:`PReLU`,
:class:`Maxout`) by theirs, so any layer can sit above any other.

Dropout (inverted) lives on the layer whose output it drops, not in a layer of its own: its mask
multiplies ``a`` on the way up and folds into that same fused pass on the way down, so it
costs no extra sweep over the activations. Buffers are allocated once per batch size; a training
step allocates nothing after the first.

Parameters are views into the network's flat parameter and gradient vectors, bound by
:meth:`Dense.bind` in the order :meth:`Dense.param_shapes` gives.
"""

from __future__ import annotations

from . import host
from .activations import Activation
from .init import init_weights

#: at most this many batch sizes keep buffers (training, its last partial batch, inference)
MAX_WORKSPACES = 4


class Workspace:
    """The preallocated buffers of one layer for one batch size ``N``: ``z`` and ``delta`` have
    ``n_z`` columns (``k * n_out`` for maxout), ``a`` and the dropout buffers ``n_out``."""

    def __init__(self, backend, n_rows, n_z, n_out, dtype, with_dropout):
        self.z = backend.empty((n_rows, n_z), dtype)
        self.a = backend.empty((n_rows, n_out), dtype)
        self.delta = backend.empty((n_rows, n_z), dtype)
        self.mask = backend.empty((n_rows, n_out), dtype) if with_dropout else None
        self.dropped = backend.empty((n_rows, n_out), dtype) if with_dropout else None


class Dense:
    """Affine map plus an elementwise activation: ``z = a_prev @ W + b``, ``a = g(z)``.

    ``W`` of shape ``(n_in, n_out)``, ``b``, ``dW``, ``db`` are views into the network's flat
    parameter and gradient vectors, so one optimizer call updates every layer.
    """

    def __init__(self, backend, n_in: int, n_out: int, activation: Activation | None,
                 dropout: float = 0.0):
        self.backend = backend
        self.n_in, self.n_out = n_in, n_out
        self.activation = activation
        self.dropout = dropout
        self._workspaces: dict[tuple[int, bool], Workspace] = {}
        self.W = self.b = self.dW = self.db = None
        self.a_prev = self.z = self.a = self.mask = self.delta = None

    @property
    def name(self) -> str:
        """The activation's name, as ``MLP(activation=...)`` spells it."""
        return self.activation.name

    @property
    def n_z(self) -> int:
        """Columns of ``z`` (and of ``W``, ``b``, ``delta``)."""
        return self.n_out

    def param_shapes(self) -> list[tuple[str, tuple]]:
        """``[(name, shape), ...]`` of the parameters, in their order in the flat vector."""
        return [("W", (self.n_in, self.n_z)), ("b", (self.n_z,))]

    def initial_params(self, rng, init: str, scale) -> tuple:
        """Host initial values in :meth:`param_shapes` order: ``W`` drawn by ``init``,
        ``b = 0``."""
        return init_weights(rng, self.n_in, self.n_out, init, scale), [0.0] * self.n_out

    def bind(self, params, grads):
        """Use the views ``params`` and ``grads`` (in :meth:`param_shapes` order)."""
        self.W, self.b = params
        self.dW, self.db = grads

    def workspace(self, n_rows: int, training: bool) -> Workspace:
        """Buffers for a batch of ``n_rows`` (allocated on first use, then reused)."""
        with_dropout = training and self.dropout > 0
        key = (n_rows, with_dropout)
        ws = self._workspaces.get(key)
        if ws is None:
            if len(self._workspaces) >= MAX_WORKSPACES:
                self._workspaces.clear()
            ws = self._workspaces[key] = self.new_workspace(n_rows, with_dropout)
        return ws

    def new_workspace(self, n_rows: int, with_dropout: bool) -> Workspace:
        return Workspace(self.backend, n_rows, self.n_z, self.n_out, self.W.dtype, with_dropout)

    def forward(self, a_prev, training: bool = False, rng=None):
        """``z = a_prev @ W + b``, ``a = g(z)`` (then ``a * mask`` when dropping out).

        Keeps ``a_prev``, ``z``, ``a`` and the mask for :meth:`backward`; returns the output.
        """
        ws = self.workspace(a_prev.shape[0], training)
        self.a_prev, self.z, self.a, self.mask, self.delta = a_prev, ws.z, ws.a, ws.mask, ws.delta
        self.activate(a_prev, ws)
        if ws.mask is None:
            return ws.a
        self.backend.dropout_mask(rng, self.dropout, ws.mask)
        self.backend.xp.multiply(ws.a, ws.mask, out=ws.dropped)
        return ws.dropped

    def activate(self, a_prev, ws: Workspace):
        """``ws.z = a_prev @ W + b``, ``ws.a = g(z)``: one GEMM and one fused pass."""
        act = self.activation
        self.backend.linear_forward(a_prev, self.W, self.b, act.code, act.alpha, ws.z, ws.a)

    def backward(self, delta, below: Dense | None, weight_decay: float = 0.0):
        """Gradients of this layer from ``delta = dJ/dz``; returns the delta of ``below``.

        ``dW = a_prev.T @ delta + weight_decay * W``, ``db = sum_rows(delta)``; with a layer
        below, its :meth:`delta_from` this delta; else None (the input layer needs no delta,
        which saves a GEMM).
        """
        self.backend.weight_grads(self.a_prev, delta, self.W, weight_decay, self.dW, self.db)
        if below is None:
            return None
        return below.delta_from(delta, self.W)

    def delta_from(self, delta_above, W_above):
        """This layer's ``delta = (delta_above @ W_above.T) * mask * g'(z)`` (in
        ``self.delta``)."""
        act = self.activation
        return self.backend.backprop_delta(delta_above, W_above, self.z, self.a, act.code,
                                           act.alpha, self.delta, self.mask)


class PReLU(Dense):
    """Affine map plus PReLU: ``a = z if z > 0 else alpha_j z``, one slope per unit learned by
    backprop (``dJ/dalpha_j = sum_i dJ/da_ij min(z_ij, 0)``; no weight decay on ``alpha``).

    Parameters ``(W, b, alpha)``; ``alpha`` starts at ``alpha_init`` for every unit.
    """

    def __init__(self, backend, n_in: int, n_out: int, alpha_init: float, dropout: float = 0.0):
        super().__init__(backend, n_in, n_out, None, dropout)
        self.alpha_init = alpha_init
        self.alpha = self.dalpha = None

    @property
    def name(self) -> str:
        return "prelu"

    def param_shapes(self):
        return super().param_shapes() + [("alpha", (self.n_out,))]

    def initial_params(self, rng, init, scale):
        return super().initial_params(rng, init, scale) + ([self.alpha_init] * self.n_out,)

    def bind(self, params, grads):
        super().bind(params[:2], grads[:2])
        self.alpha, self.dalpha = params[2], grads[2]

    def activate(self, a_prev, ws):
        self.backend.prelu_forward(a_prev, self.W, self.b, self.alpha, ws.z, ws.a)

    def delta_from(self, delta_above, W_above):
        """``delta = d * (1 if z > 0 else alpha_j)`` with ``d = (delta_above @ W_above.T) * mask``;
        also writes ``dalpha`` (the slopes get their gradient when the delta is formed)."""
        return self.backend.prelu_backward(delta_above, W_above, self.z, self.alpha, self.delta,
                                           self.dalpha, self.mask)


class MaxoutWorkspace(Workspace):
    """Maxout's buffers: also the winning piece per unit and ``dJ/da`` before routing."""

    def __init__(self, backend, n_rows, n_z, n_out, dtype, with_dropout):
        super().__init__(backend, n_rows, n_z, n_out, dtype, with_dropout)
        self.index = backend.empty((n_rows, n_out), "int64")
        self.grad_a = backend.empty((n_rows, n_out), dtype)


class Maxout(Dense):
    """``k`` affine pieces per unit and their max: ``z^(p) = a_prev @ W^(p) + b^(p)``,
    ``a = max_p z^(p)``; the gradient goes to the winning piece (the max gate of the notes).

    Parameters ``(W, b)`` with ``W`` of shape ``(n_in, k * n_out)`` and ``b`` of ``k * n_out``,
    piece-major: ``W[:, p*n_out:(p+1)*n_out]`` is ``W^(p)``. Each piece is initialised like a
    ``(n_in, n_out)`` layer of its own.
    """

    def __init__(self, backend, n_in: int, n_out: int, pieces: int, dropout: float = 0.0):
        super().__init__(backend, n_in, n_out, None, dropout)
        self.pieces = pieces
        self.index = self.grad_a = None

    @property
    def name(self) -> str:
        return "maxout"

    @property
    def n_z(self) -> int:
        return self.pieces * self.n_out

    def initial_params(self, rng, init, scale):
        pieces = [init_weights(rng, self.n_in, self.n_out, init, scale)
                  for _ in range(self.pieces)]
        return host.concat_rows([W.T for W in pieces]).T, [0.0] * self.n_z

    def new_workspace(self, n_rows, with_dropout):
        return MaxoutWorkspace(self.backend, n_rows, self.n_z, self.n_out, self.W.dtype,
                               with_dropout)

    def activate(self, a_prev, ws):
        self.index, self.grad_a = ws.index, ws.grad_a
        self.backend.maxout_forward(a_prev, self.W, self.b, self.pieces, ws.z, ws.a, ws.index)

    def delta_from(self, delta_above, W_above):
        """``delta^(p) = d * [p won]`` with ``d = (delta_above @ W_above.T) * mask``."""
        return self.backend.maxout_backward(delta_above, W_above, self.index, self.pieces,
                                            self.grad_a, self.delta, self.mask)
