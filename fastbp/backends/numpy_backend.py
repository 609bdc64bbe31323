"""The reference backend: plain NumPy, the spec every other backend must match."""

import numpy as np

from .. import kernels
from ..backend import KernelBackend
from ..kernels import reference


class NumpyBackend(KernelBackend):
    """NumPy arrays, BLAS GEMMs through ``np.matmul(out=)``, reference kernels in place."""

    name = "numpy"
    xp = np
    kernels = reference

    def to_numpy(self, x):
        return np.asarray(x)

    def take_rows(self, x, index, out):
        return np.take(x, index, axis=0, out=out)

    def asindex(self, index):
        return np.asarray(index, dtype=np.intp)

    def dropout_mask(self, rng, p, out):
        rng.random(out=out, dtype=out.dtype)
        np.greater_equal(out, p, out=out)
        out *= 1.0 / (1.0 - p)
        return out

    def describe(self):
        return {"numpy": np.__version__, "kernels": kernels.__name__ + ".reference"}
