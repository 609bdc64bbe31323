"""Numba CUDA kernels for every fused pass of :mod:`fastbp.kernels.reference`.

The per-element maths comes from :mod:`fastbp.kernels.scalar`; this module adds the parallel
structure. Three launch shapes cover every pass:

* **elementwise** (1-D grid, grid-stride loop over a flat, C-contiguous view): derivative x
  propagated error, weight decay, dropout masks, input noise, optimizer updates;
* **matrix** (2-D grid: ``x`` over the columns of a row, ``y`` grid-stride over rows):
  bias + activation, batch gather, bf16 rounding (a row index and a column index, so no thread
  divides a 64-bit flat index, which costs dozens of instructions on a GPU; the column loop is a
  ``while``, since a ``range`` divides once to count its trips, and here once per row);
* **row blocks** (one block of ``blockDim.x <= ROW_THREADS`` threads per row, grid-stride over
  rows, tree reductions in shared memory): softmax forward and the output delta with its loss;
* **column tiles** (blocks of ``(tx, ty) <= (TILE_COLS, TILE_ROWS)`` threads, a 2-D grid of
  column tiles x row chunks): the bias gradient ``db = sum over rows of delta`` as a parallel
  reduction, coalesced along the columns, in two deterministic passes (row-chunk partial sums,
  then their sum) so that a 4096-row batch keeps every SM busy.

Every kernel is correct for ANY grid and block size within those bounds (block sizes powers of
two), which is what lets the CUDA simulator run them with a handful of threads while a GPU runs
them with hundreds. Scalars arrive already converted to the arrays' dtype (see
:func:`signatures`), so float32 kernels contain no float64 arithmetic (the PTX test checks).

Per-step values that a captured CUDA graph must not freeze (Adam's ``t``, the dropout stream) are
read on the device from ``step``, a 1-element int64 step counter (see ``StepClock`` in the cupy
backend), so that a graph's replays count on.

Dropout uses Philox4x32-10 (Salmon et al., SC'11; the generator of cuRAND and JAX): element
``i`` of the mask at step ``s`` keeps its unit iff the first output word of
``philox(counter=(i_lo, i_hi, s_lo, s_hi), key=seed)`` is ``>= threshold = ceil(p 2^32)``.
The mask depends only on (seed, step, i): not on the launch geometry.
"""

import math
import warnings

import numpy as np
from numba import config, cuda, from_dtype, types

from . import scalar
from .codes import (
    BINARY_CROSS_ENTROPY,
    CROSS_ENTROPY,
    HINGE,
    IDENTITY,
    MSE,
    SIGMOID,
    SOFTMAX,
)
from .cuda_numpy_compat import load_array_registry

load_array_registry(simulator=bool(config.ENABLE_CUDASIM))

#: numba-cuda's warning at every launch of under 128 blocks, bold (ANSI escapes) on a terminal
SMALL_GRID_WARNING = r"(\x1b\[\d+m)?Grid size \d+ will likely result in GPU under-utilization"


def quiet_small_grid_warnings():
    """Ignore numba-cuda's small-grid warning: small grids are deliberate here (a 10-class
    output layer is one block; every kernel is correct for any grid, see above)."""
    warnings.filterwarnings("ignore", message=SMALL_GRID_WARNING)


quiet_small_grid_warnings()

#: most threads of a row block (one warp); sizes the shared reduction buffers
ROW_THREADS = 32
#: column-sum block: TILE_COLS columns x TILE_ROWS row stripes
TILE_COLS = 32
TILE_ROWS = 8

_SUM = 0
_MAX = 1

# Philox4x32-10 constants, as uint64 so that every product of two 32-bit words is exact
_MASK32 = np.uint64(0xFFFFFFFF)
_SHIFT32 = np.uint64(32)
_PHILOX_M0 = np.uint64(0xD2511F53)
_PHILOX_M1 = np.uint64(0xCD9E8D57)
_PHILOX_W0 = np.uint64(0x9E3779B9)
_PHILOX_W1 = np.uint64(0xBB67AE85)
_ZERO64 = np.uint64(0)
_ONE64 = np.uint64(1)
_TWO64 = np.uint64(2)
#: 2^-31: a 32-bit Philox word times this, minus 1, is uniform in [-1, 1)
_INV_2_31 = 2.0**-31
# float32 bit patterns (as uint32) for the bf16 rounding
_ABS32 = np.uint32(0x7FFFFFFF)
_INF32 = np.uint32(0x7F800000)
_SHIFT16 = np.uint32(16)
_ONE32 = np.uint32(1)
_HALF16 = np.uint32(0x7FFF)
_QUIET16 = np.uint32(0x0040)


# -- device helpers ------------------------------------------------------------------------

@cuda.jit(device=True)
def block_reduce(value, buf, op):
    """Sum (``op == _SUM``) or max (``op == _MAX``) of ``value`` over the threads of a block row.

    Tree reduction in ``buf`` (shared, at least ``blockDim.x`` long, ``blockDim.x`` a power of
    two); every thread gets the result; ``buf`` is free again on return. A one-thread block
    has nothing to combine (and no barrier to pay, which the CUDA simulator pays dearly).
    """
    if cuda.blockDim.x == 1:
        return value
    t = cuda.threadIdx.x
    buf[t] = value
    cuda.syncthreads()
    half = cuda.blockDim.x // 2
    while half > 0:
        if t < half:
            if op == _SUM:
                buf[t] += buf[t + half]
            else:
                buf[t] = max(buf[t], buf[t + half])
        cuda.syncthreads()
        half //= 2
    result = buf[0]
    cuda.syncthreads()
    return result


@cuda.jit(device=True)
def row_argmax(y, r, idxs):
    """``argmax_k y[r, k]`` (the first maximum, like NumPy), shared by the threads of a block."""
    t = cuda.threadIdx.x
    n = y.shape[1]
    best = n  # sentinel: this thread has no column
    for k in range(t, n, cuda.blockDim.x):
        if best == n or y[r, k] > y[r, best]:
            best = k
    if cuda.blockDim.x == 1:
        return best
    idxs[t] = best
    cuda.syncthreads()
    half = cuda.blockDim.x // 2
    while half > 0:
        if t < half:
            other = idxs[t + half]
            mine = idxs[t]
            if other != n and (mine == n or y[r, other] > y[r, mine]
                               or (y[r, other] == y[r, mine] and other < mine)):
                idxs[t] = other
        cuda.syncthreads()
        half //= 2
    result = idxs[0]
    cuda.syncthreads()
    return result


@cuda.jit(device=True)
def row_log_sum_exp(z, r, buf):
    """``m + log(sum_k exp(z[r, k] - m))`` with ``m`` the row max (no overflow)."""
    t = cuda.threadIdx.x
    n = z.shape[1]
    m = z[r, 0]
    for k in range(t, n, cuda.blockDim.x):
        m = max(m, z[r, k])
    m = block_reduce(m, buf, _MAX)
    part = type(m)(0)
    for k in range(t, n, cuda.blockDim.x):
        part += type(m)(math.exp(z[r, k] - m))
    return m + type(m)(math.log(block_reduce(part, buf, _SUM)))


@cuda.jit(device=True)
def row_loss(z, a, y, r, loss, c, buf):
    """``L_r``, the loss of row ``r`` (every thread of the block gets it).

    mse ``1/2 sum (a - y)^2``; bce ``sum softplus(z) - y z``; ce ``sum y (lse(z) - z)``;
    hinge ``sum_{j != c} max(0, z_j - z_c + 1)`` with ``c`` the true class.
    """
    t = cuda.threadIdx.x
    n = z.shape[1]
    part = type(z[r, 0])(0)
    if loss == CROSS_ENTROPY:
        lse = row_log_sum_exp(z, r, buf)
        for k in range(t, n, cuda.blockDim.x):
            part += y[r, k] * (lse - z[r, k])
    elif loss == HINGE:
        for k in range(t, n, cuda.blockDim.x):
            if k != c:
                part += scalar.hinge_term(z[r, k], z[r, c])
    elif loss == BINARY_CROSS_ENTROPY:
        for k in range(t, n, cuda.blockDim.x):
            part += scalar.bce_term(z[r, k], y[r, k])
    else:
        for k in range(t, n, cuda.blockDim.x):
            part += scalar.mse_term(a[r, k], y[r, k])
    return block_reduce(part, buf, _SUM)


@cuda.jit(device=True)
def is_matched(act, loss):
    """Whether ``(act, loss)`` is a matched pair, where ``dL/dz = a - y``."""
    return ((act == IDENTITY and loss == MSE) or (act == SIGMOID and loss == BINARY_CROSS_ENTROPY)
            or (act == SOFTMAX and loss == CROSS_ENTROPY))


@cuda.jit(device=True)
def row_delta(z, a, y, delta, r, loss, act, alpha, scale, c, buf):
    """``delta[r] = scale * dL_r/dz_r`` (the cases of :func:`reference.output_delta`).

    matched pairs ``a - y``; hinge ``[margin_j > 0]``, ``-(count)`` at the true class ``c``;
    softmax + mse ``a * (d - sum_k d_k a_k)`` with ``d = a - y``; otherwise ``(a - y) g'(z)``.
    """
    t = cuda.threadIdx.x
    n = z.shape[1]
    if is_matched(act, loss):
        for k in range(t, n, cuda.blockDim.x):
            delta[r, k] = (a[r, k] - y[r, k]) * scale
    elif loss == HINGE:
        count = type(scale)(0)
        for k in range(t, n, cuda.blockDim.x):
            if k != c:
                violated = type(scale)(scalar.hinge_term(z[r, k], z[r, c]) > 0)
                delta[r, k] = violated * scale
                count += violated
        count = block_reduce(count, buf, _SUM)
        if t == 0:
            delta[r, c] = -count * scale
    elif act == SOFTMAX:
        part = type(scale)(0)
        for k in range(t, n, cuda.blockDim.x):
            part += (a[r, k] - y[r, k]) * a[r, k]
        dot = block_reduce(part, buf, _SUM)
        for k in range(t, n, cuda.blockDim.x):
            delta[r, k] = a[r, k] * ((a[r, k] - y[r, k]) - dot) * scale
    else:
        for k in range(t, n, cuda.blockDim.x):
            d = a[r, k] - y[r, k]
            delta[r, k] = d * scalar.activation_derivative(z[r, k], a[r, k], act, alpha) * scale


@cuda.jit(device=True)
def philox_word(i, step, key0, key1):
    """First output word of Philox4x32-10 for counter ``(i, step)`` (64 bits each) and key
    ``(key0, key1)`` (32 bits each), all as uint64 holding 32-bit words."""
    c0 = i & _MASK32
    c1 = i >> _SHIFT32
    c2 = step & _MASK32
    c3 = step >> _SHIFT32
    k0 = key0
    k1 = key1
    for _ in range(10):
        p0 = _PHILOX_M0 * c0
        p1 = _PHILOX_M1 * c2
        c0, c1, c2, c3 = ((p1 >> _SHIFT32) ^ c1 ^ k0, p1 & _MASK32,
                          (p0 >> _SHIFT32) ^ c3 ^ k1, p0 & _MASK32)
        k0 = (k0 + _PHILOX_W0) & _MASK32
        k1 = (k1 + _PHILOX_W1) & _MASK32
    return c0


# -- matrix kernels (2-D grid: columns along x, rows grid-stride along y) ---------------------

@cuda.jit(device=True)
def matrix_cells():
    """``(first row, row step, first column, column step)`` of this thread in a matrix launch."""
    return (cuda.blockIdx.y, cuda.gridDim.y,
            cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x, cuda.gridDim.x * cuda.blockDim.x)


@cuda.jit
def bias_act(z, b, a, act, alpha):
    """``z += b`` (broadcast over rows), then ``a = g(z)`` elementwise."""
    r0, dr, j0, dj = matrix_cells()
    for r in range(r0, z.shape[0], dr):
        j = j0
        while j < z.shape[1]:
            v = z[r, j] + b[j]
            z[r, j] = v
            a[r, j] = scalar.activation(v, act, alpha)
            j += dj


@cuda.jit
def take_rows(x, index, out):
    """Gather ``out[i] = x[index[i]]``: a minibatch from the resident training set. A row whose
    index is outside ``[0, len(x))`` is filled with NaN instead of read (memory stays safe and
    the loss shows it)."""
    r0, dr, j0, dj = matrix_cells()
    nan = type(out[0, 0])(math.nan)
    for r in range(r0, out.shape[0], dr):
        src = index[r]
        inside = 0 <= src < x.shape[0]
        j = j0
        while j < out.shape[1]:
            out[r, j] = x[src, j] if inside else nan
            j += dj


@cuda.jit
def to_bf16(bits, out):
    """``out = bf16(x)`` from ``bits``, the float32 ``x`` viewed as uint32 (any strides): round to
    nearest even on the upper 16 bits; a NaN stays a (quiet) NaN."""
    r0, dr, j0, dj = matrix_cells()
    for r in range(r0, out.shape[0], dr):
        j = j0
        while j < out.shape[1]:
            u = bits[r, j]
            if (u & _ABS32) > _INF32:
                out[r, j] = (u >> _SHIFT16) | _QUIET16
            else:
                out[r, j] = (u + ((u >> _SHIFT16) & _ONE32) + _HALF16) >> _SHIFT16
            j += dj


# -- elementwise kernels (1-D grid, grid-stride over a flat C-contiguous view) ---------------

@cuda.jit
def act_backward(delta, z, a, mask, act, alpha, use_mask):
    """``delta *= mask * g'(z)`` in place (``mask`` read only when ``use_mask``)."""
    for i in range(cuda.grid(1), delta.size, cuda.gridsize(1)):
        d = delta[i]
        if use_mask:
            d *= mask[i]
        delta[i] = d * scalar.activation_derivative(z[i], a[i], act, alpha)


@cuda.jit
def add_weight_decay(dW, W, lam):
    """``dW += lam * W``: the gradient of ``lam/2 ||W||^2``."""
    for i in range(cuda.grid(1), dW.size, cuda.gridsize(1)):
        dW[i] += lam * W[i]


@cuda.jit
def dropout_mask(out, threshold, scale, key0, key1, step):
    """``out[i] = scale if philox(i, step[0]) >= threshold else 0``: inverted dropout with
    ``threshold = ceil(p 2^32)``, ``scale = 1/(1-p)``."""
    s = np.uint64(step[0])
    for i in range(cuda.grid(1), out.size, cuda.gridsize(1)):
        keep = philox_word(np.uint64(i), s, key0, key1) >= threshold
        out[i] = scale if keep else type(scale)(0)


@cuda.jit
def gaussian_noise(x, out, sigma, key0, key1):
    """``out[i] = x[i] + sigma * e_i``, ``e_i ~ N(0, 1)`` by Marsaglia's polar method on the
    Philox words of counters ``(i, 2t)`` and ``(i, 2t + 1)``, attempt ``t = 0, 1, ...``:
    ``u, v`` uniform in [-1, 1), the first pair with ``0 < s = u^2 + v^2 < 1`` gives
    ``e = u sqrt(-2 log(s) / s)`` (no cosine: libdevice's cosf computes in float64)."""
    one = type(sigma)(1)
    two = type(sigma)(2)
    unit = type(sigma)(_INV_2_31)
    for i in range(cuda.grid(1), out.size, cuda.gridsize(1)):
        attempt = _ZERO64
        s = two
        u = type(sigma)(0)
        while s >= one or s == 0:
            u = type(sigma)(philox_word(np.uint64(i), attempt, key0, key1)) * unit - one
            v = type(sigma)(philox_word(np.uint64(i), attempt + _ONE64, key0, key1)) * unit - one
            s = u * u + v * v
            attempt += _TWO64
        e = u * type(sigma)(math.sqrt(-two * type(sigma)(math.log(s)) / s))
        out[i] = x[i] + sigma * e


@cuda.jit
def sgd_update(p, g, lr):
    """``p -= lr g`` over the flat parameter vector."""
    for i in range(cuda.grid(1), p.size, cuda.gridsize(1)):
        p[i] -= lr * g[i]


@cuda.jit
def momentum_update(p, g, v, lr, mu):
    """Classical momentum: ``v = mu v - lr g; p += v``."""
    for i in range(cuda.grid(1), p.size, cuda.gridsize(1)):
        vi = v[i] * mu
        vi -= lr * g[i]
        v[i] = vi
        p[i] += vi


@cuda.jit
def adam_update(p, g, m, v, lr, beta1, beta2, eps, t, step):
    """Adam at step ``T = t + step[0]``: ``m = b1 m + (1-b1) g``, ``v = b2 v + (1-b2) g^2``,
    ``p -= lr (m / (1 - b1^T)) / (sqrt(v / (1 - b2^T)) + eps)``."""
    one = type(lr)(1)
    big_t = type(lr)(t + step[0])
    correction1 = one - beta1 ** big_t
    correction2 = one - beta2 ** big_t
    for i in range(cuda.grid(1), p.size, cuda.gridsize(1)):
        gi = g[i]
        mi = m[i] * beta1 + (one - beta1) * gi
        vi = v[i] * beta2 + (one - beta2) * (gi * gi)
        m[i] = mi
        v[i] = vi
        p[i] -= lr * (mi / correction1) / (type(lr)(math.sqrt(vi / correction2)) + eps)


@cuda.jit
def tick(counter):
    """``counter[0] += 1``: a step clock's tick, captured with the step it ends."""
    if cuda.grid(1) == 0:
        counter[0] += 1


# -- row kernels (one block per row, grid-stride over rows) ----------------------------------

@cuda.jit
def bias_softmax(z, b, a):
    """``z += b``; ``a = exp(z - max) / sum exp(z - max)`` row by row."""
    buf = cuda.shared.array(ROW_THREADS, dtype=z.dtype)
    t = cuda.threadIdx.x
    n = z.shape[1]
    for r in range(cuda.blockIdx.x, z.shape[0], cuda.gridDim.x):
        m = -type(b[0])(math.inf)  # each thread sees only its own columns until the reduction
        for k in range(t, n, cuda.blockDim.x):
            v = z[r, k] + b[k]
            z[r, k] = v
            m = max(m, v)
        m = block_reduce(m, buf, _MAX)
        part = type(m)(0)
        for k in range(t, n, cuda.blockDim.x):
            e = type(m)(math.exp(z[r, k] - m))
            a[r, k] = e
            part += e
        total = block_reduce(part, buf, _SUM)
        for k in range(t, n, cuda.blockDim.x):
            a[r, k] /= total


@cuda.jit
def output_delta_loss(z, a, y, delta, loss_acc, loss, act, alpha, scale, with_delta):
    """``loss_acc[0] += sum_r L_r`` (one atomic add per block) and, if ``with_delta``,
    ``delta = scale * dL/dz`` row by row (``delta`` is not touched otherwise)."""
    buf = cuda.shared.array(ROW_THREADS, dtype=z.dtype)
    idxs = cuda.shared.array(ROW_THREADS, dtype=types.int64)
    total = type(scale)(0)
    for r in range(cuda.blockIdx.x, z.shape[0], cuda.gridDim.x):
        c = row_argmax(y, r, idxs) if loss == HINGE else 0
        total += row_loss(z, a, y, r, loss, c, buf)
        if with_delta:
            row_delta(z, a, y, delta, r, loss, act, alpha, scale, c, buf)
    if cuda.threadIdx.x == 0:
        cuda.atomic.add(loss_acc, 0, total)


# -- column tiles ------------------------------------------------------------------------------

@cuda.jit(device=True)
def stripe_reduce(value, buf):
    """Sum of ``value`` over the ``blockDim.y`` threads of one column of a block (a tree in
    ``buf[threadIdx.y, threadIdx.x]``); every thread of the column gets it, ``buf`` is free after.
    """
    if cuda.blockDim.y == 1:
        return value
    tx = cuda.threadIdx.x
    ty = cuda.threadIdx.y
    buf[ty, tx] = value
    cuda.syncthreads()
    half = cuda.blockDim.y // 2
    while half > 0:
        if ty < half:
            buf[ty, tx] += buf[ty + half, tx]
        cuda.syncthreads()
        half //= 2
    result = buf[0, tx]
    cuda.syncthreads()
    return result


@cuda.jit
def column_sum(x, out):
    """``out[c, j] = sum of x[i, j]`` over the rows ``i`` of chunk ``c = blockIdx.y`` (rows
    ``c*blockDim.y + threadIdx.y``, stepping by ``gridDim.y * blockDim.y``): each block sums
    ``blockDim.x`` adjacent columns (coalesced reads) of its chunk, the ``blockDim.y`` row
    stripes combined in shared memory. With ``gridDim.y == 1`` that is the column sum itself;
    with more, summing the rows of ``out`` again finishes it (deterministically: no atomics)."""
    buf = cuda.shared.array((TILE_ROWS, TILE_COLS), dtype=x.dtype)
    n = x.shape[1]
    first_row = cuda.blockIdx.y * cuda.blockDim.y + cuda.threadIdx.y
    row_step = cuda.gridDim.y * cuda.blockDim.y
    for j0 in range(cuda.blockIdx.x * cuda.blockDim.x, n, cuda.gridDim.x * cuda.blockDim.x):
        j = j0 + cuda.threadIdx.x
        part = type(x[0, 0])(0)
        if j < n:
            for i in range(first_row, x.shape[0], row_step):
                part += x[i, j]
        total = stripe_reduce(part, buf)
        if cuda.threadIdx.y == 0 and j < n:
            out[cuda.blockIdx.y, j] = total


def signatures(dtype):
    """``{name: (kernel, argument types)}`` for C-contiguous arrays of float ``dtype``.

    The launch ABI of this module: scalars are passed as the arrays' dtype, activation and loss
    codes and step counts as int64, Philox words as uint64, device counters as int64[1].
    """
    f = from_dtype(np.dtype(dtype))
    mat, vec = f[:, ::1], f[::1]
    i64, u64, counter = types.int64, types.uint64, types.int64[::1]
    return {
        "bias_act": (bias_act, (mat, vec, mat, i64, f)),
        "act_backward": (act_backward, (vec, vec, vec, vec, i64, f, types.boolean)),
        "add_weight_decay": (add_weight_decay, (vec, vec, f)),
        "take_rows": (take_rows, (mat, types.int64[::1], mat)),
        "to_bf16": (to_bf16, (types.uint32[:, :], types.uint16[:, ::1])),
        "dropout_mask": (dropout_mask, (vec, u64, f, u64, u64, counter)),
        "gaussian_noise": (gaussian_noise, (vec, vec, f, u64, u64)),
        "sgd_update": (sgd_update, (vec, vec, f)),
        "momentum_update": (momentum_update, (vec, vec, vec, f, f)),
        "adam_update": (adam_update, (vec, vec, vec, vec, f, f, f, f, i64, counter)),
        "tick": (tick, (counter,)),
        "bias_softmax": (bias_softmax, (mat, vec, mat)),
        "output_delta_loss": (output_delta_loss,
                              (mat, mat, mat, mat, vec, i64, i64, f, f, types.boolean)),
        "column_sum": (column_sum, (mat, mat)),
    }
