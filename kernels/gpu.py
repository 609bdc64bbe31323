"""Numba CUDA kernels for every fused pass of :mod:`fastbp.kernels.reference`.

The per-element maths comes from :mod:`fastbp.kernels.scalar`; this module adds the parallel
structure. Three launch shapes cover every pass:

* **elementwise** (1-D grid, grid-stride loop over the flattened array): bias + activation,
  derivative x propagated error, weight decay, dropout masks, batch gather, optimizer updates;
* **row blocks** (one block of ``blockDim.x <= ROW_THREADS`` threads per row, grid-stride over
  rows, tree reductions in shared memory): softmax forward and the output delta with its loss;
* **column tiles** (blocks of ``(tx, ty) <= (TILE_COLS, TILE_ROWS)`` threads): the bias gradient
  ``db = sum over rows of delta`` as a parallel reduction, coalesced along the columns.

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

import numpy as np
from numba import cuda, from_dtype, types

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


# -- elementwise kernels (1-D grid, grid-stride over the flattened array) --------------------

@cuda.jit
def bias_act(z, b, a, act, alpha):
    """``z += b`` (broadcast over rows), then ``a = g(z)`` elementwise."""
    n = z.shape[1]
    for k in range(cuda.grid(1), z.size, cuda.gridsize(1)):
        r = k // n
        j = k - r * n
        v = z[r, j] + b[j]
        z[r, j] = v
        a[r, j] = scalar.activation(v, act, alpha)


@cuda.jit
def act_backward(delta, z, a, mask, act, alpha, use_mask):
    """``delta *= mask * g'(z)`` in place (``mask`` read only when ``use_mask``)."""
    n = delta.shape[1]
    for k in range(cuda.grid(1), delta.size, cuda.gridsize(1)):
        r = k // n
        j = k - r * n
        d = delta[r, j]
        if use_mask:
            d *= mask[r, j]
        delta[r, j] = d * scalar.activation_derivative(z[r, j], a[r, j], act, alpha)


@cuda.jit
def add_weight_decay(dW, W, lam):
    """``dW += lam * W``: the gradient of ``lam/2 ||W||^2``."""
    n = dW.shape[1]
    for k in range(cuda.grid(1), dW.size, cuda.gridsize(1)):
        r = k // n
        j = k - r * n
        dW[r, j] += lam * W[r, j]


@cuda.jit
def take_rows(x, index, out):
    """Gather ``out[i] = x[index[i]]``: a minibatch from the resident training set."""
    n = out.shape[1]
    for k in range(cuda.grid(1), out.size, cuda.gridsize(1)):
        r = k // n
        j = k - r * n
        out[r, j] = x[index[r], j]


@cuda.jit
def dropout_mask(out, threshold, scale, key0, key1, step):
    """``out[i] = scale if philox(i, step[0]) >= threshold else 0``: inverted dropout with
    ``threshold = ceil(p 2^32)``, ``scale = 1/(1-p)``."""
    n = out.shape[1]
    s = np.uint64(step[0])
    for k in range(cuda.grid(1), out.size, cuda.gridsize(1)):
        r = k // n
        j = k - r * n
        keep = philox_word(np.uint64(k), s, key0, key1) >= threshold
        out[r, j] = scale if keep else type(scale)(0)


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
    """``out[j] = sum_i x[i, j]``: each block sums ``blockDim.x`` adjacent columns (coalesced
    reads), each column split into ``blockDim.y`` row stripes combined in shared memory."""
    buf = cuda.shared.array((TILE_ROWS, TILE_COLS), dtype=x.dtype)
    n = x.shape[1]
    for j0 in range(cuda.blockIdx.x * cuda.blockDim.x, n, cuda.gridDim.x * cuda.blockDim.x):
        j = j0 + cuda.threadIdx.x
        part = type(x[0, 0])(0)
        if j < n:
            for i in range(cuda.threadIdx.y, x.shape[0], cuda.blockDim.y):
                part += x[i, j]
        total = stripe_reduce(part, buf)
        if cuda.threadIdx.y == 0 and j < n:
            out[j] = total


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
        "act_backward": (act_backward, (mat, mat, mat, mat, i64, f, types.boolean)),
        "add_weight_decay": (add_weight_decay, (mat, mat, f)),
        "take_rows": (take_rows, (mat, types.int64[::1], mat)),
        "dropout_mask": (dropout_mask, (mat, u64, f, u64, u64, counter)),
        "sgd_update": (sgd_update, (vec, vec, f)),
        "momentum_update": (momentum_update, (vec, vec, vec, f, f)),
        "adam_update": (adam_update, (vec, vec, vec, vec, f, f, f, f, i64, counter)),
        "tick": (tick, (counter,)),
        "bias_softmax": (bias_softmax, (mat, vec, mat)),
        "output_delta_loss": (output_delta_loss,
                              (mat, mat, mat, mat, vec, i64, i64, f, f, types.boolean)),
        "column_sum": (column_sum, (mat, vec)),
    }
