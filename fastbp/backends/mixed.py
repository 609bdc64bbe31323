"""bf16 mixed precision on the CPU backends: ``fit(..., precision="bf16")``.

Every GEMM of a training step reads bf16 operands and accumulates in float32 into a float32
result; everything else stays float32: the master weights and the optimizer state, ``z``, ``a``,
``delta``, the gradients, the loss and the softmax. bf16 is the upper half of a float32
(8 exponent bits, 8 significant bits), stored as ``uint16`` and rounded to nearest even, so a
product of two bf16 numbers is exact in float32 and only the inputs are rounded (relative error
at most ``2^-9`` each).

No pass over memory is added for the bf16 operands: the pass that writes a GEMM operand in
float32 writes its bf16 copy in the same sweep --

- the activation pass after ``z = a_prev @ W`` writes ``a`` and ``bf16(a)``: the next layer's
  forward GEMM and this layer's weight-gradient GEMM read the copy;
- the output-delta pass and the backward pass write ``delta`` and ``bf16(delta)``: the delta
  GEMM ``delta @ W.T`` and the weight-gradient GEMM ``a_prev.T @ delta`` read it;
- the optimizer step writes ``p`` and ``bf16(p)`` over the flat parameter vector: every ``W`` is
  a view of ``p``, so ``bf16(W)`` is the same view of the bf16 vector.

Only the input batch (written by the data pipeline, not by a fastbp pass) and the weights before
a fit's first update are converted on their own.

:class:`Bf16Copies` keeps the bf16 buffers of the float32 ones, keyed by address, shape and
strides; it holds each float32 buffer it shadows, so no address is reused while it is known.
"""

from __future__ import annotations

import numpy as np

from .host_memory import aligned_empty

BF16 = "bf16"
#: a bf16 number is stored as the upper 16 bits of a float32
BF16_STORAGE = np.uint16


def _key(x):
    return x.__array_interface__["data"][0], x.shape, x.strides


class Bf16Copies:
    """The bf16 copies of float32 buffers.

    ``written``: copies that a fused pass writes together with its float32 buffer (always
    current); ``converted``: copies made on their own by :meth:`convert` (current until the next
    parameter update, which ends a step); ``mirrors``: the bf16 vector of a flat parameter
    vector, which every update rewrites, so views of it are current. The buffers of stale
    copies wait in ``spare`` (by shape) for the next step's or the next fit's: a step
    allocates nothing once its shapes have been seen.
    """

    def __init__(self):
        self.written, self.converted, self.mirrors, self.spare = {}, {}, {}, {}
        self.shapes_used = set()  # the shapes of the buffers handed out since the last clear

    def clear(self):
        """Forget every copy (at the start of a bf16 fit: the float32 values may have moved);
        their buffers wait in ``spare``, so the next fit's first step allocates nothing new
        (every buffer is written whole before it is read). Spare buffers of shapes that the
        buffers handed out since the last clear did not have are dropped: a process fitting
        many batch sizes keeps no more than one fit's buffers."""
        for table in (self.written, self.converted, self.mirrors):
            for _, buffer in table.values():
                self._recycle(buffer)
            table.clear()
        if self.shapes_used:  # a fit ran since the last clear (each fit clears twice)
            self.spare = {shape: buffers for shape, buffers in self.spare.items()
                          if shape in self.shapes_used}
        self.shapes_used = set()

    def _recycle(self, buffer):
        self.spare.setdefault(buffer.shape, []).append(buffer)

    def _buffer(self, shape):
        """A bf16 buffer of ``shape``: a spare one, else a new one."""
        self.shapes_used.add(shape)
        spare = self.spare.get(shape)
        return spare.pop() if spare else aligned_empty(shape, BF16_STORAGE)

    def output_for(self, x):
        """The buffer a fused pass writes ``bf16(x)`` into, alongside ``x``."""
        key = _key(x)
        if key not in self.written:
            self.written[key] = (x, self._buffer(x.shape))
        return self.written[key][1]

    def mirror_for(self, p):
        """The bf16 vector an update of the flat parameter vector ``p`` writes; the copies made
        before it are stale from then on."""
        for _, buffer in self.converted.values():
            self._recycle(buffer)
        self.converted.clear()
        key = _key(p)
        if key not in self.mirrors:
            self.mirrors[key] = (p, self._buffer(p.shape))
        return self.mirrors[key][1]

    def find(self, x, converted=True):
        """The current bf16 copy of ``x`` (``converted=False``: only one a pass wrote or a
        mirror view), or None."""
        key = _key(x)
        for table in (self.written, self.converted) if converted else (self.written,):
            if key in table:
                return table[key][1]
        return self._mirror_view(x)

    def _mirror_view(self, x):
        """``x`` as a view of a mirrored parameter vector, read through its bf16 mirror."""
        start = x.__array_interface__["data"][0]
        for p, mirror in self.mirrors.values():
            base = p.__array_interface__["data"][0]
            if base <= start < base + p.nbytes:
                offset = (start - base) // p.itemsize * mirror.itemsize
                strides = tuple(s // p.itemsize * mirror.itemsize for s in x.strides)
                return np.ndarray(x.shape, BF16_STORAGE, buffer=mirror, offset=offset,
                                  strides=strides)
        return None

    def convert(self, x, to_bf16):
        """``bf16(x)`` made now with the kernel ``to_bf16(x, out)``, kept until the next
        update."""
        key = _key(x)
        if key not in self.converted:
            self.converted[key] = (x, self._buffer(x.shape))
        return to_bf16(x, self.converted[key][1])

    def operand(self, x, to_bf16):
        """The bf16 copy of ``x`` a GEMM reads: the current one, else one made now."""
        found = self.find(x)
        return found if found is not None else self.convert(x, to_bf16)


class MixedPrecisionOps:
    """The Backend core for ``precision="bf16"`` on host arrays: bf16 GEMM operands from
    :class:`Bf16Copies`, the provider's ``matmul_bf16``, and the kernels' ``*16_out`` passes.

    Mixed into a :class:`fastbp.backend.KernelBackend` with a ``gemms``
    (:class:`fastbp.backends.gemm.Gemms`); float64 arrays keep exact GEMMs.
    """

    def _bf16(self, x) -> bool:
        return self.precision == BF16 and x.dtype == np.float32

    def set_precision(self, precision):
        if precision == BF16 and self.gemms.bf16 is None:
            raise ValueError(f"precision='bf16' cannot run on backend {self.name!r}: "
                             f"{self.gemms.bf16_reason}")
        super().set_precision(precision)
        self.bf16_copies.clear()

    @property
    def precisions(self):
        return ("highest", BF16) if self.gemms.bf16 is not None else ("highest",)

    @property
    def unavailable_precisions(self) -> dict:
        """Why a precision is missing from :attr:`precisions`."""
        return {} if self.gemms.bf16 is not None else {BF16: self.gemms.bf16_reason}

    def _operand(self, x):
        """The bf16 copy of a GEMM operand; a transposed view (``W.T``, ``a_prev.T``) is the
        same view of its buffer's copy."""
        if x.ndim == 2 and not x.flags.c_contiguous and x.T.flags.c_contiguous:
            return self.bf16_copies.operand(x.T, self.kernels.to_bf16).T
        return self.bf16_copies.operand(x, self.kernels.to_bf16)

    def _gemm_bf16(self, a, b, out):
        """``out = bf16(a) @ bf16(b)`` with float32 accumulation."""
        return self.gemms.bf16.matmul_bf16(self._operand(a), self._operand(b), out)

    def linear_forward(self, a_prev, W, b, act, alpha, z_out, a_out):
        if not self._bf16(z_out):
            return super().linear_forward(a_prev, W, b, act, alpha, z_out, a_out)
        if self.bf16_copies.find(a_prev, converted=False) is None:  # input: new every call
            self.bf16_copies.convert(a_prev, self.kernels.to_bf16)
        self._gemm_bf16(a_prev, W, z_out)
        return self.kernels.bias_act_forward(z_out, b, act, alpha, a_out,
                                             self.bf16_copies.output_for(a_out))

    def output_delta_loss(self, z, a, y, loss, act, alpha, scale, delta_out, loss_acc):
        if not self._bf16(delta_out):
            return super().output_delta_loss(z, a, y, loss, act, alpha, scale, delta_out,
                                             loss_acc)
        loss_acc[0] += self.kernels.output_delta_loss(
            z, a, y, loss, act, alpha, scale, delta_out, self.bf16_copies.output_for(delta_out))
        return delta_out

    def backprop_delta(self, delta_next, W_next, z, a, act, alpha, out, mask=None):
        if not self._bf16(out):
            return super().backprop_delta(delta_next, W_next, z, a, act, alpha, out, mask)
        self._gemm_bf16(delta_next, W_next.T, out)
        return self.kernels.act_backward(out, z, a, act, alpha, mask,
                                         self.bf16_copies.output_for(out))

    def weight_grads(self, a_prev, delta, W, lam, dW_out, db_out):
        if not self._bf16(dW_out):
            return super().weight_grads(a_prev, delta, W, lam, dW_out, db_out)
        self.kernels.bias_grad(delta, db_out)
        self._gemm_bf16(a_prev.T, delta, dW_out)
        if lam:
            self.kernels.add_weight_decay(dW_out, W, lam)

    def _mirror(self, p):
        return self.bf16_copies.mirror_for(p) if self._bf16(p) else None

    def sgd_update(self, p, g, lr):
        self.kernels.sgd_update(p, g, lr, self._mirror(p))

    def momentum_update(self, p, g, v, lr, mu):
        self.kernels.momentum_update(p, g, v, lr, mu, self._mirror(p))

    def adam_update(self, p, g, m, v, lr, beta1, beta2, eps, t):
        self.kernels.adam_update(p, g, m, v, lr, beta1, beta2, eps, t, self._mirror(p))
