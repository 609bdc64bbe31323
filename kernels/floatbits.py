"""float32 arithmetic done on the IEEE bits, for the CPU loops: bf16 rounding, and an ``exp``
that vectorises.

Both are written with integer operations on the float's bits, which LLVM turns into SIMD code;
a call into libm (``math.exp``) keeps a loop scalar, since the llvmlite wheels have no vector
math library. Every function here is a Numba ``register_jitable`` (or an overload of one);
:mod:`fastbp.kernels.kernel` stamps cached loops with this file's digest.
"""

import math

import numpy as np
from llvmlite import ir
from numba.core import types as nbtypes
from numba.extending import intrinsic, overload, register_jitable


@intrinsic
def float32_bits(typingctx, x):
    """The IEEE bits of a float32 as a uint32 (an LLVM bitcast: free, and it vectorises)."""
    if x != nbtypes.float32:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(32))

    return nbtypes.uint32(nbtypes.float32), codegen


@intrinsic
def bits_float32(typingctx, bits):
    """The float32 whose IEEE bits are the uint32 ``bits`` (the inverse bitcast)."""
    if bits != nbtypes.uint32:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())

    return nbtypes.float32(nbtypes.uint32), codegen


@register_jitable
def bf16_bits(v):
    """bf16 of the float32 ``v`` as a uint16: its upper half, rounded to nearest, ties to even."""
    bits = float32_bits(v)
    one, half = np.uint32(1), np.uint32(0x7FFF)
    return np.uint16((bits + half + ((bits >> np.uint32(16)) & one)) >> np.uint32(16))


#: below this ``exp`` leaves float32's normal range (``exp(-87.33654) = 2^-126``)
EXP_LOWEST = -87.33654
#: 1.5 * 2^23: adding it to ``|t| < 2^22`` rounds ``t`` to an integer held in the low bits
ROUNDING_MAGIC = 12582912.0
#: ``ln 2 = LN2_HIGH + LN2_LOW``; the high part holds 10 significant bits, so ``n * LN2_HIGH``
#: is exact for the ``|n| <= 127`` used here
LN2_HIGH, LN2_LOW = 0.693359375, -2.12194440e-4


@register_jitable
def exp_nonpositive_float32(x):
    """``exp(x)`` for a float32 ``x <= 0``, within 1 ulp (Cephes' ``expf``): ``x = n ln2 + r``
    with ``n = round(x / ln2)``, ``|r| <= ln2/2``; ``exp(r) = 1 + r + r^2 p(r)``, ``p`` of
    degree 5; ``2^n`` built in the exponent bits. 0 below :data:`EXP_LOWEST` (where the true
    value is subnormal, under 1.2e-38), ``nan`` stays ``nan``. ``r`` is reduced with ``ln2``
    in two parts (:data:`LN2_HIGH`, :data:`LN2_LOW`) to keep it accurate."""
    f = np.float32
    magic, lowest = f(ROUNDING_MAGIC), f(EXP_LOWEST)
    clamped = lowest if x < lowest else x  # nan compares false and stays nan
    t = clamped * f(1.44269504088896341) + magic
    n = t - magic
    r = clamped - n * f(LN2_HIGH) - n * f(LN2_LOW)
    p = f(1.9875691500e-4)
    p = p * r + f(1.3981999507e-3)
    p = p * r + f(8.3334519073e-3)
    p = p * r + f(4.1665795894e-2)
    p = p * r + f(1.6666665459e-1)
    p = p * r + f(5.0000001201e-1)
    exp_r = p * r * r + r + f(1)
    exponent = float32_bits(t) - float32_bits(magic) + np.uint32(127)  # n + 127, in [1, 127]
    two_to_n = bits_float32(np.uint32(exponent << np.uint32(23)))
    return f(0) if x < lowest else exp_r * two_to_n


def exp_nonpositive(x):
    """``exp(x)`` for ``x <= 0`` (softmax's shifted logits): in compiled float32 code
    :func:`exp_nonpositive_float32`, which vectorises; otherwise ``math.exp``."""
    return math.exp(x)


@overload(exp_nonpositive)
def _exp_nonpositive_for(x):
    if x == nbtypes.float32:
        return exp_nonpositive_float32
    return lambda x: type(x)(math.exp(x))
