"""NumPy reference for every fused pass: the executable spec the CPU and GPU kernels must match.

Notation (batch-major): ``z = a_prev @ W + b`` of shape (N, n), ``a = g(z)``, ``delta = dJ/dz``.
Activations and losses are the integer codes of :mod:`fastbp.kernels.codes`; ``alpha`` is the
activation's parameter (leaky-ReLU slope, ELU scale; ignored by the others).
Every function writes into the buffers it is given and allocates at most small temporaries.

bf16 (mixed precision): a bf16 number is the upper 16 bits of a float32, stored as ``uint16``.
The passes that produce a GEMM operand take an optional ``*16_out`` buffer and also write the
operand's bf16 copy there (:func:`to_bf16`: round to nearest, ties to even), so the next GEMM
reads it without another pass; the float32 values stay what they are.
"""

import numpy as np

from .codes import (
    BINARY_CROSS_ENTROPY,
    CROSS_ENTROPY,
    ELU,
    HINGE,
    IDENTITY,
    LEAKY_RELU,
    MATCHED_PAIRS,
    MSE,
    RELU,
    SIGMOID,
    SOFTMAX,
    TANH,
)


def sigmoid(z, out):
    """Stable logistic ``1 / (1 + exp(-z))``: never overflows, exact 0/1 limits for |z| large."""
    e = np.exp(-np.abs(z))
    np.divide(1.0, 1.0 + e, out=out)
    np.multiply(e, out, out=out, where=z < 0)  # exp(z) / (1 + exp(z)) for z < 0
    return out


def softplus(z):
    """``log(1 + exp(z))`` without overflow: ``max(z, 0) + log1p(exp(-|z|))``."""
    return np.maximum(z, 0) + np.log1p(np.exp(-np.abs(z)))


def softmax_rows(z, out):
    """Row-wise softmax by the max-shifted exponential (log-sum-exp safe)."""
    np.subtract(z, z.max(axis=1, keepdims=True), out=out)
    np.exp(out, out=out)
    out /= out.sum(axis=1, keepdims=True)
    return out


def log_sum_exp_rows(z):
    """``log sum_k exp(z_k)`` per row, shifted by the row max."""
    m = z.max(axis=1, keepdims=True)
    return (m + np.log(np.exp(z - m).sum(axis=1, keepdims=True)))[:, 0]


def activate(z, act, alpha, out):
    """``out = g(z)`` for activation code ``act``."""
    if act == IDENTITY:
        np.copyto(out, z)
    elif act == SIGMOID:
        sigmoid(z, out)
    elif act == TANH:
        np.tanh(z, out=out)
    elif act == RELU:
        np.maximum(z, 0, out=out)
    elif act == LEAKY_RELU:
        np.multiply(z, alpha, out=out)
        np.maximum(z, out, out=out)  # max(z, alpha z) for 0 <= alpha <= 1
    elif act == ELU:
        np.expm1(np.minimum(z, 0), out=out)
        out *= alpha
        np.copyto(out, z, where=z > 0)
    elif act == SOFTMAX:
        softmax_rows(z, out)
    else:
        raise ValueError(f"unknown activation code {act}")
    return out


def to_bf16(x, out):
    """``out = bf16(x)``: the float32 ``x`` rounded to its upper 16 bits, to nearest, ties to
    even (``uint16`` out, same shape)."""
    bits = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    rounding = np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1))
    np.right_shift(bits + rounding, np.uint32(16), out=out, casting="unsafe")
    return out


def from_bf16(x16):
    """The float32 values of bf16 (``uint16``) numbers."""
    return (np.asarray(x16, dtype=np.uint32) << np.uint32(16)).view(np.float32)


def _with_bf16(x, x16_out):
    """Write the bf16 copy of ``x`` into ``x16_out`` if one is asked for; returns ``x``."""
    if x16_out is not None:
        to_bf16(x, x16_out)
    return x


def bias_act_forward(z, b, act, alpha, a_out, a16_out=None):
    """In place ``z += b``, then ``a_out = g(z)``: the pass after the GEMM ``z = a_prev @ W``
    (and ``a16_out = bf16(a)`` when given)."""
    z += b
    return _with_bf16(activate(z, act, alpha, a_out), a16_out)


def activation_derivative(z, a, act, alpha):
    """``g'(z)`` elementwise (a new array), from whichever of ``z`` or ``a = g(z)`` is cheaper."""
    if act == IDENTITY:
        return np.ones_like(z)
    if act == SIGMOID:
        return a * (1 - a)
    if act == TANH:
        return 1 - a * a
    if act == RELU:
        return (z > 0).astype(z.dtype)
    if act == LEAKY_RELU:
        return np.where(z > 0, z.dtype.type(1), z.dtype.type(alpha))
    if act == ELU:
        return np.where(z > 0, z.dtype.type(1), a + z.dtype.type(alpha))
    raise ValueError(f"activation code {act} has no elementwise derivative")


def act_backward(delta, z, a, act, alpha, mask=None, delta16_out=None):
    """In place ``delta *= g'(z)`` (and ``*= mask``, the dropout mask of this layer's output).

    ``delta`` arrives holding ``dJ/da = delta_next @ W_next.T`` and leaves holding ``dJ/dz``
    (and its bf16 copy in ``delta16_out`` when given).
    """
    if mask is not None:
        delta *= mask
    if act == RELU:
        np.multiply(delta, z > 0, out=delta)
    elif act != IDENTITY:
        delta *= activation_derivative(z, a, act, alpha)
    return _with_bf16(delta, delta16_out)


def loss_rows(z, a, y, loss):
    """Per-sample loss ``L_i`` (shape (N,)), computed stably from ``z`` where that is safer.

    mse: ``1/2 sum_k (a_k - y_k)^2``; binary cross-entropy on sigmoid outputs:
    ``sum_k softplus(z_k) - y_k z_k``; cross-entropy on softmax outputs:
    ``sum_k y_k (logsumexp(z) - z_k)``; multi-class hinge on identity outputs:
    ``sum_{j != c} max(0, z_j - z_c + 1)`` with ``c = argmax_k y_k``.
    """
    if loss == MSE:
        d = a - y
        return 0.5 * (d * d).sum(axis=1)
    if loss == BINARY_CROSS_ENTROPY:
        return (softplus(z) - y * z).sum(axis=1)
    if loss == CROSS_ENTROPY:
        return (y * (log_sum_exp_rows(z)[:, None] - z)).sum(axis=1)
    if loss == HINGE:
        return hinge_margins(z, y).sum(axis=1)
    raise ValueError(f"unknown loss code {loss}")


def hinge_margins(z, y):
    """``max(0, z_j - z_c + 1)`` for every j != c (zero at the true class c)."""
    rows = np.arange(z.shape[0])
    c = y.argmax(axis=1)
    m = np.maximum(z - z[rows, c][:, None] + 1, 0)
    m[rows, c] = 0
    return m


def loss_sum(z, a, y, loss):
    """Sum over the batch of the per-sample losses (a Python-float-like NumPy scalar)."""
    return loss_rows(z, a, y, loss).sum()


def loss_gradient_wrt_output(z, a, y, loss):
    """``dL/da`` per sample for the general (unmatched) pairs: mse only needs ``a - y``."""
    if loss == MSE:
        return a - y
    raise ValueError(f"loss code {loss} has no output gradient outside its matched pair")


def output_delta(z, a, y, loss, act, alpha, scale, delta_out):
    """``delta_L = scale * dL/dz_L`` with ``scale = 1/N`` for the mean over the batch.

    Matched pairs (identity+mse, sigmoid+bce, softmax+ce): ``dL/dz = a - y``.
    Hinge on identity outputs: ``+1`` for each violated margin, ``-(count)`` at the true class.
    Any other valid pair: ``g'(z) * dL/da`` (for softmax the Jacobian-vector product
    ``a * (d - sum_k d_k a_k)``).
    """
    if (act, loss) in MATCHED_PAIRS:
        np.subtract(a, y, out=delta_out)
    elif loss == HINGE:
        violated = (hinge_margins(z, y) > 0).astype(z.dtype)
        np.copyto(delta_out, violated)
        rows = np.arange(z.shape[0])
        delta_out[rows, y.argmax(axis=1)] = -violated.sum(axis=1)
    elif act == SOFTMAX:
        d = loss_gradient_wrt_output(z, a, y, loss)
        np.multiply(a, d - (d * a).sum(axis=1, keepdims=True), out=delta_out)
    else:
        d = loss_gradient_wrt_output(z, a, y, loss)
        np.multiply(d, activation_derivative(z, a, act, alpha), out=delta_out)
    delta_out *= scale
    return delta_out


def output_delta_loss(z, a, y, loss, act, alpha, scale, delta_out, delta16_out=None):
    """:func:`output_delta` and :func:`loss_sum` in one call (``delta16_out = bf16(delta)``
    when given); returns the loss sum."""
    _with_bf16(output_delta(z, a, y, loss, act, alpha, scale, delta_out), delta16_out)
    return loss_sum(z, a, y, loss)


def bias_grad(delta, db_out):
    """``db = sum over the batch of delta`` (column sums)."""
    return np.sum(delta, axis=0, out=db_out)


def add_weight_decay(dW, W, lam):
    """In place ``dW += lam * W`` (the gradient of ``lam/2 ||W||^2``)."""
    dW += lam * W
    return dW


def sgd_update(p, g, lr, p16_out=None):
    """``p -= lr * g`` (``p``, ``g`` are the flat parameter and gradient vectors; every update
    also writes ``p16_out = bf16(p)`` when given)."""
    p -= lr * g
    _with_bf16(p, p16_out)


def momentum_update(p, g, v, lr, mu, p16_out=None):
    """Classical momentum: ``v = mu v - lr g; p += v``."""
    v *= mu
    v -= lr * g
    p += v
    _with_bf16(p, p16_out)


def adam_update(p, g, m, v, lr, beta1, beta2, eps, t, p16_out=None):
    """Adam, step ``t >= 1``: ``m = b1 m + (1-b1) g``, ``v = b2 v + (1-b2) g^2``,
    ``p -= lr * m_hat / (sqrt(v_hat) + eps)`` with ``m_hat = m/(1-b1^t)``, ``v_hat = v/(1-b2^t)``.
    """
    m *= beta1
    m += (1 - beta1) * g
    v *= beta2
    v += (1 - beta2) * (g * g)
    m_hat = m / (1 - beta1**t)
    v_hat = v / (1 - beta2**t)
    p -= lr * m_hat / (np.sqrt(v_hat) + eps)
    _with_bf16(p, p16_out)
