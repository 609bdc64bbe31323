"""The reference backend: plain NumPy, the spec every other backend must match.

Its GEMMs come from the provider :func:`fastbp.backends.gemm.select` picks when the backend is
made (NumPy's BLAS, or MKL where installed); ``precision="bf16"`` runs them on bf16 operands
(:mod:`fastbp.backends.mixed`).
"""

import numpy as np

from .. import kernels
from ..backend import KernelBackend
from ..kernels import reference
from . import gemm
from .host_memory import aligned_empty, aligned_zeros
from .mixed import Bf16Copies, MixedPrecisionOps


class NumpyBackend(MixedPrecisionOps, KernelBackend):
    """NumPy arrays, GEMMs by the chosen provider, reference kernels in place."""

    name = "numpy"
    xp = np
    kernels = reference

    def __init__(self):
        self.gemms = gemm.select(gemm.cores())
        self.bf16_copies = Bf16Copies()

    def empty(self, shape, dtype):
        return aligned_empty(shape, dtype)

    def zeros(self, shape, dtype):
        return aligned_zeros(shape, dtype)

    def matmul(self, a, b, out):
        return self.gemms.fp32.matmul(a, b, out)

    def to_numpy(self, x):
        return np.asarray(x)

    def take_rows(self, x, index, out):
        return np.take(x, index, axis=0, out=out)

    def upload_rows(self, host, rows, out):
        """``out[...] = host[rows]``: the gathered rows cast into ``out`` in one copy (integer
        features become the model's dtype here, batch by batch)."""
        out[...] = host[rows]
        return out

    def asindex(self, index):
        return np.asarray(index, dtype=np.intp)

    def dropout_mask(self, rng, p, out):
        rng.random(out=out, dtype=out.dtype)
        np.greater_equal(out, p, out=out)
        out *= 1.0 / (1.0 - p)
        return out

    def describe(self):
        return {"numpy": np.__version__, "kernels": kernels.__name__ + ".reference",
                **self.gemms.describe()}
