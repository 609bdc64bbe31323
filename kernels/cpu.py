"""Numba CPU kernels: every fused pass of :mod:`fastbp.kernels.reference` as one compiled loop.

The public functions have the reference's names and signatures, so a backend swaps the module
(``kernels = cpu``) and nothing else. Each is a thin Python wrapper around one loop over the
per-element math of :mod:`fastbp.kernels.scalar`:

- ``bias_act_forward``: ``z += b; a = g(z)`` in one sweep (softmax: max, exp-sum, divide per row);
- ``act_backward``: ``delta *= mask * g'(z)`` in one sweep, ``g'`` from ``a`` (``z`` is not read:
  ``a`` was just read by the weight-gradient GEMM, so it comes from cache);
- ``output_delta_loss``: ``delta_L = scale * dL/dz_L``, then ``sum_i L_i``: one loop each, per
  loss and per kind of delta, chosen once per call (the output layer is narrow; see there);
- ``bias_grad``: column sums, parallel over blocks of columns (one per thread), each column
  summed over the rows in order -- NumPy's order, so the sums agree to the last bit (summing
  row blocks per thread and combining was no faster at mid sizes, measured);
- the optimizers (:mod:`fastbp.kernels.cpu_optimizers`, imported here): one sweep over the flat
  parameter vector.
- ``take_rows``: the minibatch gather ``out = x[index]`` (not in the reference, whose backend
  calls ``np.take``; the GPU kernels have one too).

Rows of a 2-D array are independent, so the 2-D loops run ``prange`` over rows and accept any
strides. Activation codes are branched on once per call, outside the row loop:
``literal_unroll`` over :data:`ELEMENTWISE_CODES` compiles one specialised row loop per
activation (a per-element branch on a runtime code keeps LLVM from vectorising, measured 4-5x
slower for ReLU; a ``literal_unroll`` inside the row loop cost ~70 ns a row, 14 us of a 200-row
call that otherwise takes 1 us).

Each loop is compiled twice from one source (:class:`fastbp.kernels.kernel.Kernel`):
``parallel=True``, and serial for work below ``kernel.PARALLEL_MIN_WORK`` elements, where
starting the thread team costs more than it saves. Both are ``cache=True``. Python-float
hyper-parameters (``alpha``, ``scale``, ``lr``, ...) are cast to the array dtype inside the
loop, before use: a float64 scalar would silently promote a float32 loop to float64 (the tests
read the LLVM IR to make sure nothing does).
Weight decay: a training step adds ``lam W`` inside Adam's sweep (``decayed_adam_update``);
``add_weight_decay`` writes it into the gradient where the gradient itself is wanted (L-BFGS,
gradient checks, the all-reduce of data parallelism, the other optimizers).

bf16: the passes that produce a GEMM operand (activations, deltas, parameters) take the
reference's optional ``*16_out`` buffer and write the bf16 copy of each row while the row is
still in registers or L1 (:func:`bf16_bits`), not in a sweep of its own.
"""

import math

import numpy as np
from numba import get_num_threads, literal_unroll, prange
from numba.extending import register_jitable

from . import openmp  # noqa: F401 -- sets libgomp's passive wait policy before any loop runs
from . import scalar
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
from .cpu_optimizers import (  # noqa: F401 -- the optimizers of this module's interface
    adam_update,
    decayed_adam_update,
    momentum_update,
    sgd_update,
)
from .floatbits import bf16_bits, exp_nonpositive
from .kernel import Kernel

#: activations applied element by element (softmax couples a row)
ELEMENTWISE_CODES = (IDENTITY, SIGMOID, TANH, RELU, LEAKY_RELU, ELU)
#: every activation a forward pass applies: the elementwise ones and softmax (a row operation)
FORWARD_CODES = ELEMENTWISE_CODES + (SOFTMAX,)

#: how the output delta is formed, decided once per call in Python (see :func:`delta_kind`)
MATCHED, HINGE_MARGINS, SOFTMAX_JVP, ELEMENTWISE_JVP = 0, 1, 2, 3

# -- bf16 ----------------------------------------------------------------------------------


@register_jitable
def _bf16_row(x, out):
    """``out = bf16(x)`` along one row."""
    for j in range(x.shape[0]):
        out[j] = bf16_bits(x[j])


@Kernel
def _bf16_rows(x, out):
    """``out = bf16(x)``, row by row."""
    for i in prange(x.shape[0]):
        _bf16_row(x[i], out[i])


@Kernel
def _bf16_flat(x, out):
    """``out = bf16(x)`` over a vector."""
    for i in prange(x.shape[0]):
        out[i] = bf16_bits(x[i])


# -- forward: z += b, a = g(z) ---------------------------------------------------------------

@register_jitable
def _bias_act_loop(z, b, act, alpha, a):
    """``z_j += b_j; a_j = g(z_j)`` along one row (``act`` a compile-time constant)."""
    for j in range(z.shape[0]):
        v = z[j] + b[j]
        z[j] = v
        a[j] = scalar.activation(v, act, alpha)


@register_jitable
def _row_max(z):
    m = z[0]
    for j in range(1, z.shape[0]):
        m = max(m, z[j])
    return m


@register_jitable(fastmath={"reassoc"})
def _row_sum(x):
    """``sum_j x_j`` in any order (``reassoc``: it vectorises; only the last bits move)."""
    s = type(x[0])(0)
    for j in range(x.shape[0]):
        s += x[j]
    return s


@register_jitable
def _softmax_row(z, a):
    """``a = exp(z - max z) / sum_k exp(z_k - max z)`` for one row. The exponentials come first,
    in a loop of their own, and in float32 by an ``exp`` that vectorises
    (:func:`fastbp.kernels.floatbits.exp_nonpositive`); summing them in that loop kept it
    scalar (200x100: 140 us against 38)."""
    m = _row_max(z)
    for j in range(z.shape[0]):
        a[j] = exp_nonpositive(z[j] - m)
    s = _row_sum(a)
    for j in range(z.shape[0]):
        a[j] /= s


@register_jitable
def _bias_act_row(z, b, code, alpha, a):
    """``z += b``, ``a = g(z)`` for one row (``code`` a constant, softmax included)."""
    if code == SOFTMAX:
        _bias_act_loop(z, b, IDENTITY, alpha, z)
        _softmax_row(z, a)
    else:
        _bias_act_loop(z, b, code, alpha, a)


@Kernel
def _bias_act_rows(z, b, act, alpha, a, a16):
    """``z += b``, ``a = g(z)`` (and ``a16 = bf16(a)`` unless None), row by row; the
    activation is branched on once per call, outside the row loop."""
    alpha = z.dtype.type(alpha)
    for code in literal_unroll(FORWARD_CODES):
        if act == code:
            for i in prange(z.shape[0]):
                _bias_act_row(z[i], b, code, alpha, a[i])
                if a16 is not None:  # pruned at compile time: one specialisation each way
                    _bf16_row(a[i], a16[i])


#: columns below which :func:`bias_act_forward` takes the softmax in :func:`_softmax_flat`
#: (measured on an Intel Xeon, against the row loop: 200x10 2.9 against 17.3 us, 200x100 22
#: against 38, 1024x300 457 against 515; 1024x1000 2002 against 1705)
FLAT_SOFTMAX_COLS = 512


@Kernel
def _softmax_flat(z, b, a, a16):
    """``z += b``, ``a = softmax(z)`` row by row for C-ordered ``z`` and ``a``, the
    exponentials in one loop over all of ``a``: in a row loop, a row of 10 classes left every
    exponential to the scalar remainder of a 16-lane vector loop."""
    for i in prange(z.shape[0]):
        _bias_act_loop(z[i], b, IDENTITY, z.dtype.type(0), z[i])
        m = _row_max(z[i])
        for j in range(z.shape[1]):
            a[i, j] = z[i, j] - m
    flat = a.reshape(-1)
    for t in prange(flat.shape[0]):
        flat[t] = exp_nonpositive(flat[t])
    for i in prange(z.shape[0]):
        s = _row_sum(a[i])
        for j in range(z.shape[1]):
            a[i, j] /= s
        if a16 is not None:  # pruned at compile time
            _bf16_row(a[i], a16[i])


#: the loop every training step runs first: whether it is compiled tells a warm install
FIRST_LOOP = _bias_act_rows


# -- backward: delta *= mask * g'(z) ---------------------------------------------------------

@register_jitable
def _act_backward_loop(delta, a, act, alpha):
    """``delta_j *= g'(z_j)``, from ``a_j`` alone, along one row (``act`` a constant)."""
    for j in range(delta.shape[0]):
        delta[j] *= scalar.derivative_from_output(a[j], act, alpha)


@register_jitable
def _masked_act_backward_row(delta, a, code, alpha, mask, delta16):
    """``delta *= mask * g'(z)`` for one row (``code`` a constant; ``mask``, ``delta16``
    None or rows)."""
    if mask is not None:  # pruned at compile time: one specialisation each way
        for j in range(delta.shape[0]):
            delta[j] *= mask[j]
    _act_backward_loop(delta, a, code, alpha)
    if delta16 is not None:
        _bf16_row(delta, delta16)


@Kernel
def _act_backward_rows(delta, a, act, alpha, mask, delta16):
    """``delta *= mask * g'(z)`` (and ``delta16 = bf16(delta)``), row by row (``mask`` None:
    no dropout; ``delta16`` None: no bf16 copy); the activation is branched on once per call."""
    alpha = a.dtype.type(alpha)
    for code in literal_unroll(ELEMENTWISE_CODES):
        if act == code:
            for i in prange(delta.shape[0]):
                _masked_act_backward_row(delta[i], a[i], code, alpha,
                                         None if mask is None else mask[i],
                                         None if delta16 is None else delta16[i])


# -- output layer: delta_L and the loss ------------------------------------------------------
# One loop per loss and per kind of delta, chosen once per call: the output layer is narrow
# (10 classes), where a per-row helper that branches on the loss costs more than the row's
# work (a 200x10 cross-entropy delta and loss: 19 us as one fused loop of such helpers).


@register_jitable(inline="always")
def _argmax(x, i):
    """Index of the first largest entry of row ``i`` (the true class of a one-hot row)."""
    c = 0
    for j in range(1, x.shape[1]):
        if x[i, j] > x[i, c]:
            c = j
    return c


@register_jitable(inline="always")
def _cross_entropy_row(z, a, y, i):
    """``L_i = sum_k y_ik (lse_i - z_ik)``, ``lse_i = log sum_k exp(z_ik)`` read off the
    softmax: ``lse_i = z_ic - log a_ic`` at ``c = argmax_k a_ik``, since ``a_ik = exp(z_ik -
    lse_i)``. One logarithm instead of one exponential per class, and as stable: ``a_ic >= 1/n``
    never underflows (``a_ic = 1 / s`` rounded, ``s`` the softmax's sum, so this is ``m + log
    s`` to within an ulp of ``a_ic``)."""
    c = _argmax(a, i)
    lse = z[i, c] - type(z[0, 0])(math.log(a[i, c]))
    total = type(z[0, 0])(0)
    for k in range(z.shape[1]):
        total += y[i, k] * (lse - z[i, k])
    return total


@Kernel.with_options(fastmath={"reassoc"})
def _loss_rows(z, a, y, loss):
    """``sum_i L_i`` in a float64 accumulator, from ``z`` where that is the stable form (see
    the reference); with cross-entropy ``a`` must be ``softmax(z)``. The sum may be taken in
    any order (``reassoc``): it vectorises, and the order only moves the last bits."""
    total = 0.0
    n_rows, n_cols = z.shape
    if loss == CROSS_ENTROPY:
        for i in prange(n_rows):
            total += _cross_entropy_row(z, a, y, i)
    elif loss == MSE:
        for i in prange(n_rows):
            for k in range(n_cols):
                total += scalar.mse_term(a[i, k], y[i, k])
    elif loss == BINARY_CROSS_ENTROPY:
        for i in prange(n_rows):
            for k in range(n_cols):
                total += scalar.bce_term(z[i, k], y[i, k])
    else:  # HINGE
        for i in prange(n_rows):
            c = _argmax(y, i)
            for k in range(n_cols):
                if k != c:
                    total += scalar.hinge_term(z[i, k], z[i, c])
    return total


@Kernel
def _delta_rows(z, a, y, kind, act, alpha, scale, delta, delta16):
    """``delta = scale * dL/dz``, ``kind`` one of :func:`delta_kind`'s (and ``delta16 =
    bf16(delta)`` unless None)."""
    alpha, scale = z.dtype.type(alpha), z.dtype.type(scale)
    zero, one = type(scale)(0), type(scale)(1)
    n_rows, n_cols = z.shape
    if kind == MATCHED:
        for i in prange(n_rows):
            for k in range(n_cols):
                delta[i, k] = (a[i, k] - y[i, k]) * scale
    elif kind == HINGE_MARGINS:  # +1 per violated margin, -(count) at the true class
        for i in prange(n_rows):
            c = _argmax(y, i)
            count = zero
            for k in range(n_cols):
                violated = k != c and scalar.hinge_term(z[i, k], z[i, c]) > 0
                delta[i, k] = scale if violated else zero
                count += one if violated else zero
            delta[i, c] = -count * scale
    elif kind == SOFTMAX_JVP:  # a * (d - sum_k d_k a_k), d = dL/da = a - y (mse)
        for i in prange(n_rows):
            dot = zero
            for k in range(n_cols):
                dot += (a[i, k] - y[i, k]) * a[i, k]
            for k in range(n_cols):
                delta[i, k] = a[i, k] * ((a[i, k] - y[i, k]) - dot) * scale
    else:  # ELEMENTWISE_JVP: g'(z) * dL/da, d = a - y (mse)
        for i in prange(n_rows):
            for k in range(n_cols):
                g = scalar.activation_derivative(z[i, k], a[i, k], act, alpha)
                delta[i, k] = (a[i, k] - y[i, k]) * g * scale
    if delta16 is not None:  # pruned at compile time: one specialisation each way
        for i in prange(n_rows):
            _bf16_row(delta[i], delta16[i])


# -- minibatch gather ------------------------------------------------------------------------

@Kernel
def _take_rows(x, index, out):
    """``out[i] = x[index[i]]``, row by row (an index outside ``x`` raises ``IndexError``)."""
    for i in range(index.shape[0]):  # first, so the gather has one exit and runs in parallel
        if index[i] < 0 or index[i] >= x.shape[0]:
            raise IndexError("take_rows: an index lies outside the rows of x")
    for i in prange(index.shape[0]):
        row = index[i]  # a local: read once, not after every store into out
        for j in range(x.shape[1]):
            out[i, j] = x[row, j]


@Kernel
def _standardize_rows(x, mean, std):
    """``x_ij = (x_ij - mean_j) / std_j`` in place: the subtraction, then the division, each
    rounded in ``x``'s dtype as NumPy's two ufuncs round them, in one sweep instead of two."""
    for i in prange(x.shape[0]):
        for j in range(x.shape[1]):
            x[i, j] = (x[i, j] - mean[j]) / std[j]


# -- gradients -----------------------------------------------------------------------------

@Kernel
def _column_sums(delta, width, db):
    """``db_j = sum_i delta_ij``, one task per block of ``width`` columns."""
    n_rows, n_cols = delta.shape
    for block in prange(-(-n_cols // width)):
        lo = block * width
        acc = np.zeros(min(width, n_cols - lo), dtype=delta.dtype)  # a local: vectorises
        for i in range(n_rows):
            row = delta[i, lo:lo + acc.shape[0]]
            for k in range(acc.shape[0]):
                acc[k] += row[k]
        for k in range(acc.shape[0]):
            db[lo + k] = acc[k]


@Kernel
def _axpy_rows(y, x, alpha):
    """``y += alpha x``, row by row."""
    alpha = y.dtype.type(alpha)
    for i in prange(y.shape[0]):
        for j in range(y.shape[1]):
            y[i, j] += alpha * x[i, j]


# -- the reference's interface ---------------------------------------------------------------

def delta_kind(act, loss):
    """How ``dL/dz`` is formed for (output activation, loss), or ValueError if undefined.

    Matched pairs ``a - y``; hinge from the margins of ``z``; mse after softmax by the
    Jacobian-vector product; mse after an elementwise ``g`` by ``g'(z) * (a - y)``.
    """
    if (act, loss) in MATCHED_PAIRS:
        return MATCHED
    if loss == HINGE:
        return HINGE_MARGINS
    if loss == MSE:
        return SOFTMAX_JVP if act == SOFTMAX else ELEMENTWISE_JVP
    raise ValueError(f"loss code {loss} has no output gradient outside its matched pair")


def to_bf16(x, out):
    """``out = bf16(x)`` (``uint16``, round to nearest even) for a float32 vector or matrix."""
    (_bf16_flat if x.ndim == 1 else _bf16_rows)(x.size, x, out)
    return out


def bias_act_forward(z, b, act, alpha, a_out, a16_out=None):
    """In place ``z += b``, then ``a_out = g(z)``: the pass after the GEMM ``z = a_prev @ W``
    (and ``a16_out = bf16(a)`` in the same pass, when given)."""
    if act == SOFTMAX and z.shape[1] < FLAT_SOFTMAX_COLS and z.flags.c_contiguous \
            and a_out.flags.c_contiguous:
        _softmax_flat(z.size, z, b, a_out, a16_out)
    else:
        _bias_act_rows(z.size, z, b, act, float(alpha), a_out, a16_out)
    return a_out


def act_backward(delta, z, a, act, alpha, mask=None, delta16_out=None):
    """In place ``delta *= mask * g'(z)``: ``dJ/da`` in, ``dJ/dz`` out (``mask`` optional;
    ``delta16_out = bf16(delta)`` in the same pass, when given).

    ``g'`` is computed from ``a`` alone (:func:`scalar.derivative_from_output`); ``z`` is not read.
    """
    if act == SOFTMAX:
        raise ValueError(f"activation code {act} has no elementwise derivative")
    _act_backward_rows(delta.size, delta, a, act, float(alpha), mask, delta16_out)
    return delta


def output_delta(z, a, y, loss, act, alpha, scale, delta_out, delta16_out=None):
    """``delta_L = scale * dL/dz_L`` (``scale = 1/N`` for the batch mean; ``delta16_out =
    bf16(delta)`` too, when given)."""
    kind = delta_kind(act, loss)
    _delta_rows(z.size, z, a, y, kind, act, float(alpha), float(scale), delta_out, delta16_out)
    return delta_out


def loss_sum(z, a, y, loss):
    """Sum over the batch of the per-sample losses, as a scalar of the array dtype."""
    return z.dtype.type(_loss_rows(z.size, z, a, y, loss))


def output_delta_loss(z, a, y, loss, act, alpha, scale, delta_out, delta16_out=None):
    """:func:`output_delta` (and ``delta16_out = bf16(delta)``, when given) and
    :func:`loss_sum`, one loop each; returns the loss sum."""
    output_delta(z, a, y, loss, act, alpha, scale, delta_out, delta16_out)
    return loss_sum(z, a, y, loss)


def take_rows(x, index, out):
    """Gather the minibatch ``out = x[index]`` of a matrix (``np.take`` along rows took 2.7x as
    long for 200 of digits' 64-wide float32 rows: 6.6 against 2.5 us)."""
    _take_rows(out.size, x, index, out)
    return out


def standardize_rows(x, mean, std):
    """In place ``x = (x - mean) / std`` over the rows of a batch (NumPy's broadcast subtract
    and divide took 54 us for 200 rows of 784 float32, this loop 26 us: its divisions)."""
    _standardize_rows(x.size, x, mean, std)
    return x


def _column_block(n_cols, threads):
    """Columns per task of the column sum: one block per thread, 16 to 4096 wide (measured)."""
    per_thread = -(-n_cols // threads)
    return min(max(16 * -(-per_thread // 16), 16), 4096)


def bias_grad(delta, db_out):
    """``db = sum over the batch of delta`` (column sums)."""
    threads = get_num_threads() if _column_sums.runs_parallel(delta.size) else 1
    _column_sums(delta.size, delta, _column_block(delta.shape[1], threads), db_out)
    return db_out


def add_weight_decay(dW, W, lam):
    """In place ``dW += lam * W`` (the gradient of ``lam/2 ||W||^2``)."""
    _axpy_rows(dW.size, dW, W, float(lam))
    return dW
