"""A CBLAS GEMM called from compiled code, through the routine's address.

``out = a @ b`` in row-major CBLAS terms (``cblas_sgemm``, ``cblas_dgemm``,
``cblas_gemm_bf16bf16f32``: one signature, ``alpha`` and ``beta`` of the output's type, LP64
``int`` sizes). Called through ``ctypes`` from Python, a GEMM paid about 4.5 us of argument
checks, ``.ctypes`` objects and conversions before the library ran (6.3 us for a 1x1x1
product against 1.7 for the bare ctypes call, Intel Xeon): a third of a digits-sized training
step's GEMM time. :func:`gemm` does the layout and shape checks in Numba and calls the routine
by the address it is given, so the compiled code holds no address and stays in Numba's
on-disk cache.

An operand is read in place when it is row-major (``x``) or column-major (``x.T`` of a
row-major array) in its last two axes, with its leading dimension from its strides; any other
layout asks the caller for a copy.
"""

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core.extending import intrinsic, register_jitable

ROW_MAJOR, NO_TRANS, TRANS = 101, 111, 112
#: what :func:`gemm` returns: called (or nothing to do), an operand to copy first, shapes
#: that do not multiply into ``out``, an output BLAS cannot write
DONE, NEEDS_COPY, SHAPES_DIFFER, OUT_NOT_CONTIGUOUS = 0, 1, 2, 3


@register_jitable
def blas_layout(rows, cols, row_stride, col_stride, itemsize):
    """``(transpose flag, leading dimension)`` of a row-major BLAS operand with this shape and
    these byte strides; ``(0, 0)`` when it is neither C- nor Fortran-ordered (copy it)."""
    if col_stride == itemsize and row_stride >= max(cols, 1) * itemsize:
        return NO_TRANS, row_stride // itemsize
    if row_stride == itemsize and col_stride >= max(rows, 1) * itemsize:
        return TRANS, col_stride // itemsize
    return 0, 0


@intrinsic
def _call_gemm(typingctx, address, ta, tb, m, n, k, alpha, a, lda, b, ldb, c, ldc):
    """``routine(ROW_MAJOR, ta, tb, m, n, k, alpha, a, lda, b, ldb, 0, c, ldc)`` for the
    routine at ``address``; sizes are int32 (LP64), pointers integers, ``alpha`` (and the
    zero ``beta``) of the output's float type."""
    sig = types.void(address, ta, tb, m, n, k, alpha, a, lda, b, ldb, c, ldc)

    def codegen(context, builder, signature, args):
        address, ta, tb, m, n, k, alpha, a, lda, b, ldb, c, ldc = args
        i32, ptr = ir.IntType(32), ir.IntType(8).as_pointer()
        real = context.get_value_type(signature.args[6])
        fnty = ir.FunctionType(ir.VoidType(), [i32] * 6 + [real, ptr, i32, ptr, i32, real,
                                                           ptr, i32])
        routine = builder.inttoptr(address, fnty.as_pointer())
        a, b, c = (builder.inttoptr(x, ptr) for x in (a, b, c))
        builder.call(routine, [ir.Constant(i32, ROW_MAJOR), ta, tb, m, n, k, alpha, a, lda,
                               b, ldb, ir.Constant(real, 0), c, ldc])
        return context.get_dummy_value()

    return sig, codegen


@njit(cache=True, nogil=True)
def gemm(address, a, b, out, one):
    """``out = a @ b`` through the CBLAS routine at ``address`` (``one``: 1 in the output's
    float type); returns :data:`DONE` or why it did not call (nothing is written then)."""
    m, k = a.shape
    n = b.shape[1]
    if b.shape[0] != k or out.shape[0] != m or out.shape[1] != n:
        return SHAPES_DIFFER
    if m == 0 or n == 0:
        return DONE
    item = out.itemsize
    if (n > 1 and out.strides[1] != item) or (m > 1 and out.strides[0] != n * item):
        return OUT_NOT_CONTIGUOUS
    if k == 0:  # an empty sum; BLAS returns without writing
        out[:] = 0
        return DONE
    ta, lda = blas_layout(m, k, a.strides[0], a.strides[1], a.itemsize)
    tb, ldb = blas_layout(k, n, b.strides[0], b.strides[1], b.itemsize)
    if ta == 0 or tb == 0:
        return NEEDS_COPY
    i32 = np.int32
    _call_gemm(address, i32(ta), i32(tb), i32(m), i32(n), i32(k), one, a.ctypes.data,
               i32(lda), b.ctypes.data, i32(ldb), out.ctypes.data, i32(n))
    return DONE
