"""The array backend: one small interface, a registry, and ``get_backend("auto" | name)``.

Network code (layers, model, training, optimizers) calls only the methods of :class:`Backend`;
each backend decides where and how the arithmetic runs. The matmul-heavy core, batch-major
(rows are samples, ``W`` of shape ``(n_in, n_out)``):

==========================  ===============================================================
``linear_forward``          ``z = a_prev @ W + b; a = g(z)``: GEMM, then one fused pass
``output_delta_loss``       ``delta_L = scale * dL/dz_L`` and ``loss_acc[0] += sum_i L_i``
``backprop_delta``          ``delta = (delta_next @ W_next.T) * mask * g'(z)``: GEMM + fused pass
``weight_grads``            ``dW = a_prev.T @ delta + lam W; db = sum_rows(delta)``
``sgd/momentum/adam_update`` one in-place step over the flat parameter vector
``decayed_adam_update``     Adam on ``g_W + lam W`` (training's weight decay, in the update)
==========================  ===============================================================

The layers whose activation has parameters (PReLU, maxout) use generic ops that :class:`Backend`
writes once against ``self.xp`` (``affine``, ``upstream_grad``, ``prelu_forward``,
``prelu_backward``, ``maxout_forward``, ``maxout_backward``), so every backend has them; a backend
may override one with a fused kernel that matches it.

:class:`KernelBackend` implements all of it from a kernel module with the signatures of
:mod:`fastbp.kernels.reference` plus the array namespace's ``matmul``; the NumPy backend is
exactly that pair, and the Numba backend swaps in :mod:`fastbp.kernels.cpu`.
"""

from __future__ import annotations

import importlib
import math
from dataclasses import dataclass
from typing import Callable


class Backend:
    """Interface every backend implements. Arrays are the backend's device arrays."""

    name: str = "abstract"
    #: the array namespace (``numpy`` or ``cupy``)
    xp = None

    # -- plumbing -------------------------------------------------------------------------
    def asarray(self, x, dtype=None):
        """Copy/convert host data to a C-contiguous device array of ``dtype``."""
        raise NotImplementedError

    def to_numpy(self, x):
        """A host NumPy copy (or view, for host backends) of a device array."""
        raise NotImplementedError

    def device_array(self, x):
        """``x`` itself (or a zero-copy view) when it already lives on this backend's device,
        else None: then :func:`fastbp.arrays.to_array` brings it to the host. Host backends
        have no device of their own: NumPy arrays reach them without a copy anyway."""
        return None

    def empty(self, shape, dtype):
        raise NotImplementedError

    def zeros(self, shape, dtype):
        raise NotImplementedError

    def synchronize(self):
        """Block until queued device work is done (no-op on CPU backends)."""

    def scalar(self, x) -> float:
        """Read a device scalar or 1-element array as a Python float (a host sync on GPUs)."""
        return float(self.to_numpy(x).reshape(-1)[0])

    def copy(self, src, out):
        """``out[...] = src`` on the device."""
        raise NotImplementedError

    def matmul(self, a, b, out):
        """GEMM ``out = a @ b``."""
        raise NotImplementedError

    def take_rows(self, x, index, out):
        """Gather ``out = x[index]`` (a minibatch); ``index`` comes from :meth:`asindex`."""
        raise NotImplementedError

    def upload_rows(self, host, rows, out):
        """``out[...] = host[rows]``: rows of a host array (a streamed batch; ``rows`` a slice
        or an index array) into the device buffer ``out``; returns ``out``."""
        self.copy(self.asarray(host[rows], out.dtype), out)
        return out

    def asindex(self, index):
        """Put a host integer index array (a shuffle order) on the device."""
        raise NotImplementedError

    def standardize_rows(self, x, mean, std):
        """In place ``x = (x - mean) / std`` over a gathered batch, in ``x``'s dtype (``mean``
        and ``std`` already in it); returns ``x``. The subtraction, then the division, each
        rounded as :func:`fastbp.data.standardize` rounds them for a whole set, so a batch
        holds the same numbers as the rows of the standardised set."""
        self.xp.subtract(x, mean, out=x)
        return self.xp.divide(x, std, out=x)

    def dropout_mask(self, rng, p, out):
        """Inverted-dropout mask: ``out = [u >= p] / (1 - p)``, ``u`` uniform in [0, 1).

        ``rng`` is the model's seeded host ``numpy.random.Generator``; backends that draw on the
        device derive their counter-based stream from it, so the model seed decides the masks.
        """
        raise NotImplementedError

    def sum_squares(self, x):
        """``sum(x**2)`` as a device scalar."""
        raise NotImplementedError

    def all_finite(self, x) -> bool:
        """Whether every element of ``x`` is finite (a host sync on GPUs)."""
        raise NotImplementedError

    # -- the core -------------------------------------------------------------------------
    def linear_forward(self, a_prev, W, b, act, alpha, z_out, a_out):
        raise NotImplementedError

    def output_delta_loss(self, z, a, y, loss, act, alpha, scale, delta_out, loss_acc):
        raise NotImplementedError

    def loss_sum(self, z, a, y, loss):
        raise NotImplementedError

    def backprop_delta(self, delta_next, W_next, z, a, act, alpha, out, mask=None):
        raise NotImplementedError

    def weight_grads(self, a_prev, delta, W, lam, dW_out, db_out):
        raise NotImplementedError

    def sgd_update(self, p, g, lr):
        raise NotImplementedError

    def momentum_update(self, p, g, v, lr, mu):
        raise NotImplementedError

    def adam_update(self, p, g, m, v, lr, beta1, beta2, eps, t):
        raise NotImplementedError

    def add_weight_decay(self, dW, W, lam):
        """In place ``dW += lam W``."""
        raise NotImplementedError

    def add_decay(self, g, p, lam, weights):
        """``g_W += lam W`` for every weight matrix, ``weights`` their ``(offset, shape)`` in
        the flat vectors ``g`` and ``p``."""
        for offset, shape in weights:
            end = offset + math.prod(shape)
            self.add_weight_decay(g[offset:end].reshape(shape), p[offset:end].reshape(shape),
                                  lam)

    def decayed_adam_update(self, p, g, m, v, lr, beta1, beta2, eps, t, lam, weights):
        """Adam on the gradient with the L2 term, ``g_W + lam W`` for every weight matrix: the
        numbers of :meth:`add_decay` then :meth:`adam_update`, which is what this default does
        (a backend may add the term inside the update's sweep instead, leaving ``g`` as is)."""
        self.add_decay(g, p, lam, weights)
        self.adam_update(p, g, m, v, lr, beta1, beta2, eps, t)

    # -- activations with parameters: generic ops on ``xp`` (any backend inherits them; their
    # NumPy expressions are the reference a fused kernel must match) -------------------------
    # PReLU: ``g(z) = z if z > 0 else alpha_j z``, one learned slope ``alpha_j`` per unit.
    # Maxout, ``k`` pieces of ``n`` units: ``z`` has ``k * n`` columns, piece-major (columns
    # ``p*n .. p*n + n - 1`` hold ``z^(p) = a_prev @ W^(p) + b^(p)``), and ``a = max_p z^(p)``.
    def affine(self, a_prev, W, b, z_out):
        """``z = a_prev @ W + b`` into ``z_out``; returns it."""
        self.matmul(a_prev, W, z_out)
        z_out += b
        return z_out

    def upstream_grad(self, delta_next, W_next, out, mask=None):
        """``dJ/da = (delta_next @ W_next.T) * mask`` into ``out``: what reaches a layer's output
        from the layer above (``mask``: the layer's dropout mask, if any); returns ``out``."""
        self.matmul(delta_next, W_next.T, out)
        if mask is not None:
            out *= mask
        return out

    def prelu_forward(self, a_prev, W, b, alpha, z_out, a_out):
        """``z = a_prev @ W + b``; ``a = z if z > 0 else alpha_j z``; returns ``a_out``."""
        z = self.affine(a_prev, W, b, z_out)
        self.xp.multiply(z, alpha, out=a_out)
        self.xp.copyto(a_out, z, where=z > 0)
        return a_out

    def prelu_backward(self, delta_next, W_next, z, alpha, out, dalpha_out, mask=None):
        """The delta of a PReLU layer and the gradient of its slopes; returns ``out``.

        With ``d = dJ/da = (delta_next @ W_next.T) * mask``:
        ``dJ/dalpha_j = sum_i d_ij min(z_ij, 0)`` into ``dalpha_out`` and
        ``delta = d * (1 if z > 0 else alpha_j)`` into ``out``.
        """
        xp = self.xp
        d = self.upstream_grad(delta_next, W_next, out, mask)
        xp.sum(d * xp.minimum(z, 0), axis=0, out=dalpha_out)
        xp.copyto(d, d * alpha, where=z <= 0)
        return d

    def maxout_forward(self, a_prev, W, b, pieces, z_out, a_out, index_out):
        """``z = a_prev @ W + b`` (``pieces`` blocks of columns); ``a = max_p z^(p)``, and
        ``index = argmax_p z^(p)`` (the first piece on ties) for the backward pass."""
        z = self.affine(a_prev, W, b, z_out)
        by_piece = z.reshape(z.shape[0], pieces, -1)
        self.xp.max(by_piece, axis=1, out=a_out)
        self.xp.argmax(by_piece, axis=1, out=index_out)
        return a_out

    def maxout_backward(self, delta_next, W_next, index, pieces, grad_a, out, mask=None):
        """The delta of a maxout layer: ``d = dJ/da = (delta_next @ W_next.T) * mask`` (into the
        buffer ``grad_a``) is routed to the winning piece, ``delta^(p) = d * [index == p]``, like
        the max gate of the notes; returns ``out``."""
        d = self.upstream_grad(delta_next, W_next, grad_a, mask)
        by_piece = out.reshape(out.shape[0], pieces, -1)
        for p in range(pieces):
            self.xp.multiply(d, index == p, out=by_piece[:, p, :])
        return out

    # -- whole training steps ----------------------------------------------------------------
    #: GEMM precisions this backend offers ("tf32" only on the GPU)
    precisions = ("highest",)
    precision = "highest"
    #: whether :meth:`step_runner` replays captured steps (then a step must read its batch from
    #: fixed buffers, never from fresh views)
    captures_steps = False

    def set_precision(self, precision):
        """Use ``precision`` for the GEMMs from now on."""
        if precision not in self.precisions:
            raise ValueError(f"backend {self.name!r} offers precision {list(self.precisions)}, "
                             f"got {precision!r}")
        self.precision = precision

    def first_run_notice(self):
        """A line to print before training when its first steps will be slow for a reason the
        user should hear of (compiling kernels), else None."""
        return None

    def device_memory_free(self):
        """Free bytes on the device, or None for host-memory backends (no separate device)."""
        return None

    def step_clock(self):
        """A device step counter shared by one training run's step runners (GPU backends)."""
        return None

    def step_runner(self, step_fn, clock):
        """A callable that runs one training step ``step_fn()`` per call; GPU backends replay
        it from a CUDA graph (``step_fn``: a closure over fixed buffers, no allocation)."""
        return step_fn

    def weight_rows(self, x, w, total):
        """Per-sample weights, in place: ``x_i <- w_i x_i / sum_j w_j``; returns ``x``.

        ``x`` is ``(N, K)``, ``w`` an ``(N, 1)`` column of non-negative weights, ``total`` a
        1-element buffer that receives ``sum_j w_j``. With ``x_i = dL_i/dz`` this turns the
        output delta of the mean loss into that of ``sum_i w_i L_i / sum_j w_j``; written once
        with ``self.xp`` (no allocation, so a captured step may contain it).
        """
        self.xp.sum(w, axis=0, out=total)
        self.xp.divide(x, total, out=x)
        self.xp.multiply(x, w, out=x)
        return x

    def gaussian_noise(self, x, rng, sigma, out):
        """``out = x + sigma * e`` with ``e ~ N(0, 1)`` drawn from the host generator ``rng``
        (input-noise injection); returns ``out``."""
        noise = rng.standard_normal(size=x.shape, dtype=x.dtype)
        self.copy(self.asarray(noise), out)
        out *= sigma
        out += x
        return out

    def describe(self) -> dict:
        """Versions and settings worth printing in ``fastbp info``."""
        return {}

    def __repr__(self):
        return f"<fastbp backend {self.name!r}>"


class KernelBackend(Backend):
    """A backend assembled from an array namespace ``xp`` and a kernel module.

    The kernel module provides the functions of :mod:`fastbp.kernels.reference`
    (``bias_act_forward``, ``act_backward``, ``output_delta_loss``, ``loss_sum``, ``bias_grad``,
    ``add_weight_decay``, ``sgd_update``, ``momentum_update``, ``adam_update``).
    """

    kernels = None

    def asarray(self, x, dtype=None):
        return self.xp.ascontiguousarray(self.xp.asarray(x, dtype=dtype))

    def empty(self, shape, dtype):
        return self.xp.empty(shape, dtype=dtype)

    def zeros(self, shape, dtype):
        return self.xp.zeros(shape, dtype=dtype)

    def copy(self, src, out):
        self.xp.copyto(out, src)

    def matmul(self, a, b, out):
        return self.xp.matmul(a, b, out=out)

    def sum_squares(self, x):
        return self.xp.vdot(x.reshape(-1), x.reshape(-1))

    def all_finite(self, x) -> bool:
        return bool(self.xp.isfinite(x).all())

    def linear_forward(self, a_prev, W, b, act, alpha, z_out, a_out):
        """``z = a_prev @ W + b; a = g(z)`` into ``z_out``, ``a_out``; returns ``a_out``."""
        self.matmul(a_prev, W, z_out)
        return self.kernels.bias_act_forward(z_out, b, act, alpha, a_out)

    def output_delta_loss(self, z, a, y, loss, act, alpha, scale, delta_out, loss_acc):
        """``delta_out = scale * dL/dz`` and ``loss_acc[0] += sum_i L_i``; returns
        ``delta_out``."""
        loss_acc[0] += self.kernels.output_delta_loss(z, a, y, loss, act, alpha, scale, delta_out)
        return delta_out

    def loss_sum(self, z, a, y, loss):
        """``sum_i L_i`` over the rows of the batch."""
        return self.kernels.loss_sum(z, a, y, loss)

    def backprop_delta(self, delta_next, W_next, z, a, act, alpha, out, mask=None):
        """``out = (delta_next @ W_next.T) * mask * g'(z)``: the delta recursion."""
        self.matmul(delta_next, W_next.T, out)
        return self.kernels.act_backward(out, z, a, act, alpha, mask)

    def weight_grads(self, a_prev, delta, W, lam, dW_out, db_out):
        """``dW = a_prev.T @ delta + lam W``; ``db = sum over the batch of delta`` (first, while
        ``delta`` is still in cache from the pass that wrote it: measured 2x cheaper)."""
        self.kernels.bias_grad(delta, db_out)
        self.matmul(a_prev.T, delta, dW_out)
        if lam:
            self.kernels.add_weight_decay(dW_out, W, lam)

    def sgd_update(self, p, g, lr):
        self.kernels.sgd_update(p, g, lr)

    def momentum_update(self, p, g, v, lr, mu):
        self.kernels.momentum_update(p, g, v, lr, mu)

    def adam_update(self, p, g, m, v, lr, beta1, beta2, eps, t):
        self.kernels.adam_update(p, g, m, v, lr, beta1, beta2, eps, t)

    def add_weight_decay(self, dW, W, lam):
        self.kernels.add_weight_decay(dW, W, lam)


# -- registry ------------------------------------------------------------------------------

@dataclass
class BackendEntry:
    """How to build a backend and how to tell whether it can run on this machine.

    ``probe()`` returns ``(usable, reason)``; ``reason`` says why not, or what was found.
    """

    name: str
    module: str
    cls: str
    probe: Callable[[], tuple[bool, str]]
    auto: bool = True  # may ``"auto"`` pick it?


_REGISTRY: dict[str, BackendEntry] = {}
_INSTANCES: dict[str, Backend] = {}
#: preference order of ``"auto"``
AUTO_ORDER = ("cupy", "numba", "numpy")


def register(entry: BackendEntry):
    """Add (or replace) a backend in the registry."""
    _REGISTRY[entry.name] = entry
    _INSTANCES.pop(entry.name, None)
    _PROBES.pop(entry.name, None)


_PROBES: dict[str, tuple[bool, str]] = {}


def probe(name: str) -> tuple[bool, str]:
    """``(usable, reason)`` for a registered backend, cached for the process."""
    if name not in _PROBES:
        try:
            _PROBES[name] = _REGISTRY[name].probe()
        except Exception as exc:  # a probe must never take the caller down
            _PROBES[name] = (False, f"probe failed: {type(exc).__name__}: {exc}")
    return _PROBES[name]


def backend_names() -> list[str]:
    """Every registered backend name, usable here or not."""
    return list(_REGISTRY)


def available_backends() -> list[str]:
    """Names of the backends usable on this machine."""
    return [name for name in _REGISTRY if probe(name)[0]]


def resolve(name: str = "auto") -> tuple[str, str]:
    """``(backend name, why)`` for ``name``; ``"auto"`` takes the first usable of AUTO_ORDER."""
    if not isinstance(name, str):
        raise TypeError(f"backend must be a string naming a backend, got {type(name).__name__}")
    if name != "auto":
        if name not in _REGISTRY:
            raise ValueError(
                f"backend must be 'auto' or one of {backend_names()}, got {name!r}")
        usable, reason = probe(name)
        if not usable:
            others = [n for n in AUTO_ORDER if n in _REGISTRY and n != name and probe(n)[0]]
            hint = (f" (usable here: {', '.join(others)}; backend 'auto' picks the first)"
                    if others else "")
            raise RuntimeError(f"backend {name!r} is not usable here: {reason}{hint}")
        return name, "requested"
    skipped = []
    for candidate in AUTO_ORDER:
        entry = _REGISTRY.get(candidate)
        if entry is None or not entry.auto:
            continue
        usable, reason = probe(candidate)
        if usable:
            because = "; ".join(skipped) if skipped else reason
            return candidate, f"auto picked {candidate}: {because}"
        skipped.append(f"{candidate} unusable ({reason})")
    raise RuntimeError("no usable backend: " + "; ".join(skipped))


def get_backend(name: str | Backend = "auto") -> Backend:
    """The backend instance for ``name`` (``"auto"``, ``"numpy"``, ``"numba"``, ``"cupy"``, ...).

    Instances are shared per process; the attribute ``reason`` says why ``"auto"`` chose it.
    """
    if isinstance(name, Backend):
        return name
    chosen, why = resolve(name)
    if chosen not in _INSTANCES:
        entry = _REGISTRY[chosen]
        module = importlib.import_module(entry.module)
        _INSTANCES[chosen] = getattr(module, entry.cls)()
    backend = _INSTANCES[chosen]
    backend.reason = why
    return backend


def _probe_numpy() -> tuple[bool, str]:
    import numpy

    return True, f"numpy {numpy.__version__}"


def module_probe(module: str, missing_hint: str, function: str = "probe"
                 ) -> Callable[[], tuple[bool, str]]:
    """A probe that imports ``module`` and calls its ``function()``; an ImportError says what
    to install."""

    def run_probe():
        try:
            backend_module = importlib.import_module(module)
        except ImportError as exc:
            return False, f"{exc.name or exc} is not installed ({missing_hint})"
        return getattr(backend_module, function)()

    return run_probe


register(BackendEntry("numpy", "fastbp.backends.numpy_backend", "NumpyBackend", _probe_numpy))
register(BackendEntry(
    "numba", "fastbp.backends.numba_backend", "NumbaBackend",
    module_probe("fastbp.backends.numba_backend", "pip install 'fastbp[cpu]'")))
register(BackendEntry(
    "cupy", "fastbp.backends.cupy_backend", "CupyBackend",
    module_probe("fastbp.backends.cupy_backend", "pip install 'fastbp[gpu]'")))
register(BackendEntry(
    "cupy-sim", "fastbp.backends.cupy_backend", "CupySimBackend",
    module_probe("fastbp.backends.cupy_backend", "pip install 'fastbp[cpu]'", "probe_sim"),
    auto=False))
