"""How the cupy backends launch the Numba CUDA kernels of :mod:`fastbp.kernels.gpu`.

:class:`Geometry` holds the launch sizes, :class:`CudaKernels` the vocabulary of
:mod:`fastbp.kernels.reference` (each pass one or two launches) on device arrays. Both the
``cupy`` backend (CuPy arrays on a GPU) and ``cupy-sim`` (NumPy arrays in Numba's CUDA
simulator) use them; only the ``launch`` function differs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..kernels.codes import HINGE, IDENTITY, MATCHED_PAIRS, MSE, SOFTMAX

#: the largest y extent of a CUDA grid
_MAX_GRID_Y = 65535


@dataclass(frozen=True)
class Geometry:
    """Launch sizes. Every kernel is correct for any of them (block sizes powers of two, within
    ``gpu.ROW_THREADS`` and ``gpu.TILE_*``); they only trade parallelism for per-thread work."""

    threads: int  # threads of an elementwise block
    blocks: int  # most blocks of any launch (grid-stride loops cover the rest)
    row_threads: int  # threads of a row block
    tile: tuple[int, int]  # (columns, row stripes) of a column-sum block

    def elementwise(self, size):
        return min(-(-size // self.threads), self.blocks), self.threads

    def matrix(self, n_rows, n_cols):
        """``((column blocks, row blocks), threads)``: a block row covers ``threads`` columns of
        one row; the rows share what is left of ``blocks``."""
        across = min(-(-n_cols // self.threads), self.blocks)
        down = min(n_rows, max(1, self.blocks // across), _MAX_GRID_Y)
        return (across, down), self.threads

    def rows(self, n_rows):
        return min(n_rows, self.blocks), self.row_threads

    def columns(self, n_rows, n_cols):
        """``((column tiles, row chunks), tile)`` for a column sum: the column tiles first, then
        as many row chunks (of at least 16 rows per stripe) as the remaining blocks allow."""
        across = min(-(-n_cols // self.tile[0]), self.blocks)
        down = min(-(-n_rows // (16 * self.tile[1])), max(1, self.blocks // across),
                   _MAX_GRID_Y)
        return (across, down), self.tile


#: the simulator runs a Python thread per CUDA thread and pays dearly for every barrier: few
#: threads, grid-stride loops do the rest, a thread per row (the tests run wider rows too)
SIM_GEOMETRY = Geometry(threads=4, blocks=2, row_threads=1, tile=(4, 1))


def gpu_geometry(multiprocessors: int) -> Geometry:
    """256-thread elementwise blocks, up to 32 per SM; a warp per row; 32 x 8 column tiles."""
    return Geometry(threads=256, blocks=32 * multiprocessors, row_threads=32, tile=(32, 8))


class CudaKernels:
    """The vocabulary of :mod:`fastbp.kernels.reference`, each pass a launch of
    :mod:`fastbp.kernels.gpu`, on device arrays.

    ``launch(kernel, grid, block, args)`` is the backend's way to launch on its arrays; ``clock``
    is the :class:`~fastbp.backends.graphs.StepClock` that Adam's ``t`` and the dropout stream are
    read from (a clock that never ticks, except while a step runner runs a step); ``empty`` makes
    the scratch buffers a pass needs, allocated once per shape and kept (a captured graph may
    still use them). Differences from the reference: ``output_delta_loss`` and ``loss_sum`` ADD
    their loss sum into a 1-element device array ``loss_acc`` instead of returning it;
    ``dropout_mask`` and ``gaussian_noise`` take a 64-bit seed, not a generator.
    """

    def __init__(self, gpu, geometry, launch, clock, empty):
        self.gpu = gpu
        self.geometry = geometry
        self.launch = launch
        self.clock = clock
        self.empty = empty
        self._scratch = {}

    def _launch(self, kernel, config, *args):
        grid, block = config
        if (math.prod(grid) if isinstance(grid, tuple) else grid):  # else nothing to do
            self.launch(kernel, grid, block, args)

    def _elementwise(self, kernel, x, *args):
        self._launch(kernel, self.geometry.elementwise(x.size), _flat(x),
                     *[arg if np.isscalar(arg) else _flat(arg) for arg in args])

    def _matrix(self, kernel, shape, *args):
        self._launch(kernel, self.geometry.matrix(*shape), *args)

    def scratch(self, shape, dtype, slot=0):
        """A device buffer of ``shape`` and ``dtype`` for a pass's intermediate values, the same
        one every time (``slot`` tells apart two needed at once)."""
        key = (tuple(shape), np.dtype(dtype).char, slot)
        if key not in self._scratch:
            self._scratch[key] = self.empty(shape, dtype)
        return self._scratch[key]

    def bias_act_forward(self, z, b, act, alpha, a_out):
        """In place ``z += b``, then ``a_out = g(z)`` (softmax: one block per row)."""
        if act == SOFTMAX:
            self._launch(self.gpu.bias_softmax, self.geometry.rows(z.shape[0]), z, b, a_out)
        else:
            self._matrix(self.gpu.bias_act, z.shape, z, b, a_out, act, z.dtype.type(alpha))
        return a_out

    def act_backward(self, delta, z, a, act, alpha, mask=None):
        """In place ``delta *= mask * g'(z)``."""
        use_mask = mask is not None
        self._elementwise(self.gpu.act_backward, delta, z, a, mask if use_mask else delta,
                          act, delta.dtype.type(alpha), use_mask)
        return delta

    def output_delta_loss(self, z, a, y, loss, act, alpha, scale, delta_out, loss_acc):
        """``delta_out = scale * dL/dz`` and ``loss_acc[0] += sum_i L_i``, one block per row."""
        if (act, loss) not in MATCHED_PAIRS and loss not in (MSE, HINGE):
            raise ValueError(f"loss code {loss} has no output delta with activation code {act}; "
                             f"valid: the matched pairs {sorted(MATCHED_PAIRS)}, mse or hinge")
        f = z.dtype.type
        self._launch(self.gpu.output_delta_loss, self.geometry.rows(z.shape[0]),
                     z, a, y, delta_out, loss_acc, loss, act, f(alpha), f(scale), True)
        return delta_out

    def loss_sum(self, z, a, y, loss, loss_acc):
        """``loss_acc[0] += sum_i L_i`` (the output pass without its delta)."""
        f = z.dtype.type
        self._launch(self.gpu.output_delta_loss, self.geometry.rows(z.shape[0]),
                     z, a, y, z, loss_acc, loss, IDENTITY, f(0), f(1), False)
        return loss_acc

    def bias_grad(self, delta, db_out):
        """``db = sum over the batch of delta``: partial sums of row chunks spread over the
        whole grid, then (if there was more than one chunk) their column sum."""
        n_rows, n_cols = delta.shape
        (across, chunks), tile = self.geometry.columns(n_rows, n_cols)
        total = db_out.reshape(1, n_cols)
        if chunks == 1:
            self._launch(self.gpu.column_sum, ((across, 1), tile), delta, total)
            return db_out
        partial = self.scratch((chunks, n_cols), delta.dtype)
        self._launch(self.gpu.column_sum, ((across, chunks), tile), delta, partial)
        self._launch(self.gpu.column_sum, ((across, 1), tile), partial, total)
        return db_out

    def add_weight_decay(self, dW, W, lam):
        """``dW += lam * W``."""
        self._elementwise(self.gpu.add_weight_decay, dW, W, dW.dtype.type(lam))
        return dW

    def sgd_update(self, p, g, lr):
        self._elementwise(self.gpu.sgd_update, p, g, p.dtype.type(lr))

    def momentum_update(self, p, g, v, lr, mu):
        f = p.dtype.type
        self._elementwise(self.gpu.momentum_update, p, g, v, f(lr), f(mu))

    def adam_update(self, p, g, m, v, lr, beta1, beta2, eps, t):
        """Adam at step ``t``, counted on by the clock in a graph's replays."""
        f = p.dtype.type
        self._elementwise(self.gpu.adam_update, p, g, m, v, f(lr), f(beta1), f(beta2), f(eps),
                          int(t) - self.clock.host, self.clock.counter)

    def dropout_mask(self, seed, p, out):
        """``out = [u >= p] / (1 - p)``, ``u`` the Philox word of (seed, clock, element) / 2^32."""
        if not 0 <= p < 1:
            raise ValueError(f"dropout probability must be in [0, 1), got {p!r}")
        key0, key1 = _key(seed)
        self._elementwise(self.gpu.dropout_mask, out, np.uint64(math.ceil(p * 2.0**32)),
                          out.dtype.type(1.0 / (1.0 - p)), key0, key1, self.clock.counter)
        return out

    def gaussian_noise(self, seed, x, sigma, out):
        """``out = x + sigma * e``, ``e ~ N(0, 1)`` from the Philox stream of ``seed``."""
        key0, key1 = _key(seed)
        self._elementwise(self.gpu.gaussian_noise, x, out, out.dtype.type(sigma), key0, key1)
        return out

    def take_rows(self, x, index, out):
        """Gather ``out = x[index]`` along the first axis (rows out of range come out NaN)."""
        out2 = _matrix(out)
        self._matrix(self.gpu.take_rows, out2.shape, _matrix(x), index, out2)
        return out

    def to_bf16(self, x, slot):
        """``x`` (float32, 2-D, any strides) rounded to bfloat16, as the uint16 bit patterns in
        a C-contiguous scratch buffer of ``x``'s shape (``slot``: 0 or 1, one per GEMM operand)."""
        out = self.scratch(x.shape, np.uint16, slot)
        self._matrix(self.gpu.to_bf16, x.shape, x.view(np.uint32), out)
        return out

    def tick(self, clock):
        """``clock.counter[0] += 1`` on the device (no host mirror: see the step runner)."""
        self._launch(self.gpu.tick, (1, 1), clock.counter)


def _key(seed):
    """A 64-bit seed as the two 32-bit Philox key words."""
    seed = np.uint64(seed)
    return seed & np.uint64(0xFFFFFFFF), seed >> np.uint64(32)


def _matrix(x):
    """``x`` as a 2-D array (a column for 1-D ``x``), a view."""
    return x if x.ndim == 2 else x.reshape(x.shape[0], -1)


def _flat(x):
    """A 1-D view of C-contiguous ``x`` (the elementwise kernels index it flat)."""
    if not x.flags.c_contiguous:
        raise ValueError(f"an elementwise GPU pass needs C-contiguous arrays, got shape "
                         f"{x.shape} with strides {x.strides}")
    return x.reshape(-1)
