"""Per-element math written once, shared by the CPU (``cpu.py``) and GPU (``gpu.py``) kernels.

Every function is a Numba ``register_jitable``: callable from ``@njit`` code, from
``@cuda.jit`` kernels (and their simulator), and from plain Python. Constants are built as
``type(x)(c)`` so float32 inputs stay float32 (a bare ``1.0`` literal is float64 in Numba and
would silently promote the whole expression). Activations and losses are the integer codes of
:mod:`fastbp.kernels.codes`; ``alpha`` is the leaky-ReLU slope or the ELU scale.
"""

import math

from numba.extending import register_jitable

from .codes import ELU, LEAKY_RELU, RELU, SIGMOID, TANH


@register_jitable
def sigmoid(z):
    """``1 / (1 + exp(-z))`` evaluated on the side where ``exp`` cannot overflow."""
    one = type(z)(1)
    if z >= 0:
        return one / (one + type(z)(math.exp(-z)))
    e = type(z)(math.exp(z))
    return e / (one + e)


@register_jitable
def softplus(z):
    """``log(1 + exp(z)) = max(z, 0) + log1p(exp(-|z|))``, finite for every finite ``z``."""
    return max(z, type(z)(0)) + type(z)(math.log1p(math.exp(-abs(z))))


@register_jitable
def activation(z, act, alpha):
    """``g(z)`` for every elementwise activation code (softmax is a row operation)."""
    if act == RELU:
        return max(z, type(z)(0))
    if act == SIGMOID:
        return sigmoid(z)
    if act == TANH:
        return type(z)(math.tanh(z))
    if act == LEAKY_RELU:
        return z if z > 0 else type(z)(alpha) * z
    if act == ELU:
        return z if z > 0 else type(z)(alpha) * type(z)(math.expm1(z))
    return z  # IDENTITY


@register_jitable
def activation_derivative(z, a, act, alpha):
    """``g'(z)``, from ``z`` or from ``a = g(z)``, whichever is cheaper.

    sigmoid ``a(1-a)``; tanh ``1 - a^2``; relu ``[z > 0]``; leaky relu ``1 or alpha``;
    elu ``1 or a + alpha``; identity ``1``.
    """
    one = type(z)(1)
    if act == RELU:
        return one if z > 0 else type(z)(0)
    if act == SIGMOID:
        return a * (one - a)
    if act == TANH:
        return one - a * a
    if act == LEAKY_RELU:
        return one if z > 0 else type(z)(alpha)
    if act == ELU:
        return one if z > 0 else a + type(z)(alpha)
    return one  # IDENTITY


@register_jitable
def mse_term(a, y):
    """``1/2 (a - y)^2``: one output's share of the squared error."""
    d = a - y
    return type(a)(0.5) * d * d


@register_jitable
def bce_term(z, y):
    """``-(y log a + (1-y) log(1-a))`` with ``a = sigmoid(z)``, as ``softplus(z) - y z``."""
    return softplus(z) - y * z


@register_jitable
def hinge_term(z_j, z_true):
    """One wrong class's multi-class hinge margin ``max(0, z_j - z_true + 1)``."""
    return max(z_j - z_true + type(z_j)(1), type(z_j)(0))


@register_jitable
def derivative_from_output(a, act, alpha):
    """``g'(z)`` from ``a = g(z)`` alone, for every elementwise activation.

    With ``0 <= alpha <= 1`` for leaky relu and ``alpha > 0`` for elu, ``a > 0`` exactly when
    ``z > 0``, so relu ``[a > 0]``, leaky relu ``1 or alpha``, elu ``1 or a + alpha``; sigmoid
    ``a(1-a)``, tanh ``1 - a^2``, identity ``1``. The backward pass then reads ``a``, which the
    weight-gradient GEMM has just read, instead of ``z``, which was last touched in the forward.
    """
    return activation_derivative(a, a, act, alpha)
