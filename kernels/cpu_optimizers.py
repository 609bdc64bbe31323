"""Numba CPU kernels of the optimizers: one sweep over the flat parameter vector per update.

Part of the Numba kernel module's interface (:mod:`fastbp.kernels.cpu` imports them): the
reference's names and signatures (:mod:`fastbp.kernels.reference`), each a thin wrapper over
one :class:`~fastbp.kernels.kernel.Kernel` loop (parallel, and serial under
``PARALLEL_MIN_WORK``). Every update also writes ``p16_out = bf16(p)`` in the same sweep when
given (the bf16 GEMM operand of the next step), and casts its Python-float hyper-parameters to
the vector's dtype before use, so a float32 update computes in float32:

- ``sgd_update``: ``p -= lr g``;
- ``momentum_update``: ``v = mu v - lr g; p += v``;
- ``adam_update``: ``m = b1 m + (1-b1) g``, ``v = b2 v + (1-b2) g^2``,
  ``p -= lr (m / (1-b1^t)) / (sqrt(v / (1-b2^t)) + eps)``;
- ``decayed_adam_update``: Adam on ``g + lam W`` inside the weight spans, adding the L2
  gradient in the update's sweep instead of a sweep of its own.
"""

import numpy as np
from numba import prange
from numba.extending import register_jitable

from . import openmp  # noqa: F401 -- sets libgomp's passive wait policy before any loop runs
from .floatbits import bf16_bits
from .kernel import Kernel


def _vector(x):
    """``x`` as a 1-D view: the flat parameter vectors (a copy would lose the in-place update)."""
    if x.ndim != 1 and not x.flags.c_contiguous:
        raise ValueError(f"expected a 1-D or C-contiguous array, got strides {x.strides}")
    return x.reshape(-1)


@Kernel
def _sgd(p, g, lr, p16):
    """``p -= lr g`` (and ``p16 = bf16(p)`` unless None)."""
    lr = p.dtype.type(lr)
    for i in prange(p.shape[0]):
        p[i] -= lr * g[i]
        if p16 is not None:
            p16[i] = bf16_bits(p[i])


@Kernel
def _momentum(p, g, v, lr, mu, p16):
    """``v = mu v - lr g; p += v`` (and ``p16 = bf16(p)`` unless None)."""
    lr, mu = p.dtype.type(lr), p.dtype.type(mu)
    for i in prange(p.shape[0]):
        v[i] = v[i] * mu - lr * g[i]
        p[i] += v[i]
        if p16 is not None:
            p16[i] = bf16_bits(p[i])


@register_jitable
def _adam_at(i, g_i, p, m, v, b1, one_minus_b1, b2, one_minus_b2, eps, step, inv_c2, p16):
    """Adam at element ``i`` with gradient ``g_i`` (the constants already in ``p``'s dtype)."""
    m_i = m[i] * b1 + one_minus_b1 * g_i
    v_i = v[i] * b2 + one_minus_b2 * (g_i * g_i)
    m[i], v[i] = m_i, v_i
    p[i] -= step * m_i / (np.sqrt(v_i * inv_c2) + eps)
    if p16 is not None:
        p16[i] = bf16_bits(p[i])


@Kernel
def _adam(p, g, m, v, b1, one_minus_b1, b2, one_minus_b2, eps, step, inv_c2, p16):
    """Adam with the bias corrections folded into two constants: ``step = lr / (1 - b1^t)``,
    ``inv_c2 = 1 / (1 - b2^t)``, so that each element costs one division and one square root
    (three divisions before: 1.7x the time on 300k parameters, Zen 3)."""
    f = p.dtype.type
    b1, one_minus_b1, b2, one_minus_b2 = f(b1), f(one_minus_b1), f(b2), f(one_minus_b2)
    eps, step, inv_c2 = f(eps), f(step), f(inv_c2)
    for i in prange(p.shape[0]):
        _adam_at(i, g[i], p, m, v, b1, one_minus_b1, b2, one_minus_b2, eps, step, inv_c2, p16)


@Kernel
def _decayed_adam(p, g, m, v, b1, one_minus_b1, b2, one_minus_b2, eps, step, inv_c2, lam,
                  starts, ends, p16):
    """:func:`_adam` on ``g_i + lam p_i`` inside the spans ``[starts[s], ends[s])`` (the
    weights, in order) and on ``g_i`` outside them: the L2 gradient added in the update's
    sweep, rounded as ``add_weight_decay`` rounds it, and ``g`` left as it is. The indices
    are unsigned: a signed one from a span's start gets a negative-index check per element,
    which kept LLVM from vectorising (3.5x the time)."""
    f = p.dtype.type
    b1, one_minus_b1, b2, one_minus_b2 = f(b1), f(one_minus_b1), f(b2), f(one_minus_b2)
    eps, step, inv_c2, lam = f(eps), f(step), f(inv_c2), f(lam)
    free = 0
    for s in range(starts.shape[0] + 1):
        start = starts[s] if s < starts.shape[0] else p.shape[0]
        for k in prange(start - free):
            i = np.uint64(free + k)
            _adam_at(i, g[i], p, m, v, b1, one_minus_b1, b2, one_minus_b2, eps, step,
                     inv_c2, p16)
        if s < starts.shape[0]:
            for k in prange(ends[s] - start):
                i = np.uint64(start + k)
                _adam_at(i, g[i] + lam * p[i], p, m, v, b1, one_minus_b1, b2, one_minus_b2,
                         eps, step, inv_c2, p16)
            free = ends[s]


def sgd_update(p, g, lr, p16_out=None):
    """``p -= lr * g`` over the flat parameter and gradient vectors (every update also writes
    ``p16_out = bf16(p)`` in the same sweep, when given)."""
    _sgd(p.size, _vector(p), _vector(g), float(lr), p16_out)


def momentum_update(p, g, v, lr, mu, p16_out=None):
    """Classical momentum: ``v = mu v - lr g; p += v``."""
    _momentum(p.size, _vector(p), _vector(g), _vector(v), float(lr), float(mu), p16_out)


def _adam_constants(lr, beta1, beta2, eps, t) -> tuple:
    """The constants of :func:`_adam` at step ``t``."""
    hyper = (beta1, 1 - beta1, beta2, 1 - beta2, eps, lr / (1 - beta1**t), 1 / (1 - beta2**t))
    return tuple(map(float, hyper))


def adam_update(p, g, m, v, lr, beta1, beta2, eps, t, p16_out=None):
    """Adam step ``t >= 1``: ``m = b1 m + (1-b1) g``, ``v = b2 v + (1-b2) g^2``,
    ``p -= lr * (m / (1-b1^t)) / (sqrt(v / (1-b2^t)) + eps)``."""
    _adam(p.size, _vector(p), _vector(g), _vector(m), _vector(v),
          *_adam_constants(lr, beta1, beta2, eps, t), p16_out)


def decayed_adam_update(p, g, m, v, lr, beta1, beta2, eps, t, lam, starts, ends,
                        p16_out=None):
    """:func:`adam_update` on ``g_i + lam p_i`` for ``i`` in the spans ``[starts[s],
    ends[s])`` (int64, in order: the weight matrices), on ``g_i`` elsewhere; ``g`` is not
    written. The same numbers as ``add_weight_decay`` on every span, then the update."""
    _decayed_adam(p.size, _vector(p), _vector(g), _vector(m), _vector(v),
                  *_adam_constants(lr, beta1, beta2, eps, t), float(lam), starts, ends, p16_out)
