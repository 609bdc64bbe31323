"""The GEMM floor: the GEMMs of one training step, run alone on the backend of a device
(NumPy's BLAS or its provider on the host, CuPy on a GPU), and the label of its provider."""

from __future__ import annotations

import numpy as np

from ..backend import get_backend

#: the floor of a device: which backend's matmul (its GEMM provider names the row)
FLOORS = {"host": "numpy", "gpu": "cupy"}
#: the row of NumPy's own BLAS, shown beside a host floor on another provider (MKL)
NUMPY_FLOOR = "GEMM floor (numpy BLAS)"

GEMM_KINDS = ("forward", "weights", "delta")


def step_gemms(backend, sizes, batch, dtype, kinds=GEMM_KINDS, seed=0) -> list:
    """``(a, b, out)`` for ``backend.matmul`` of every GEMM of one training step, in the step's
    order and sharing buffers as the step does: "forward" ``a_{l-1} @ W_l -> z_l`` for
    ``l = 1..L``, then for ``l = L..1`` "weights" ``a_{l-1}.T @ delta_l -> dW_l`` and, but for the
    first layer (the input needs no delta), "delta" ``delta_l @ W_l.T -> delta_{l-1}``. Only
    the GEMMs of ``kinds`` are kept. Operands are drawn on the host and copied to the device."""
    rng = np.random.default_rng(seed)

    def draw(*shape, scale=1.0):
        return backend.asarray((scale * rng.standard_normal(shape)).astype(dtype))

    layers = list(zip(sizes[:-1], sizes[1:]))
    a = [draw(batch, n_in) for n_in, _ in layers]
    W = [draw(n_in, n_out, scale=n_in ** -0.5) for n_in, n_out in layers]
    delta = [draw(batch, n_out) for _, n_out in layers]
    z = [backend.empty((batch, n_out), dtype) for _, n_out in layers]
    dW = [backend.empty(w.shape, dtype) for w in W]
    gemms = [("forward", a[l], W[l], z[l]) for l in range(len(layers))]
    for l in reversed(range(len(layers))):
        gemms.append(("weights", a[l].T, delta[l], dW[l]))
        if l > 0:
            gemms.append(("delta", delta[l], W[l].T, delta[l - 1]))
    return [(x, y, out) for kind, x, y, out in gemms if kind in kinds]


def gemm_flops(gemms) -> int:
    """``2 m k n`` summed over the GEMMs ``(a, b, out)``, ``a`` of shape ``(m, k)``."""
    return sum(2 * a.shape[0] * a.shape[1] * b.shape[1] for a, b, _ in gemms)


def device_of(backend) -> str:
    """"host" for a backend on NumPy arrays, "gpu" otherwise: whose GEMM floor applies."""
    return "host" if backend.xp is np else "gpu"


def floor_backend(backend):
    """The backend whose ``matmul`` is the GEMM floor of ``backend``'s device."""
    return get_backend(FLOORS[device_of(backend)])


def gemm_provider(device: str) -> str:
    """The name of the library behind the GEMM floor of ``device`` (``numpy``, ``mkl``,
    ``cupy``)."""
    gemms = getattr(get_backend(FLOORS[device]), "gemms", None)
    return gemms.fp32.name if gemms is not None else FLOORS[device]


def floor_label(device: str) -> str:
    """The row label of ``device``'s GEMM floor, naming the provider."""
    return f"GEMM floor ({gemm_provider(device)})"


def run_gemms(backend, gemms, times=1, matmul=None):
    """``backend.matmul`` (or ``matmul``) over ``gemms``, ``times`` times, then
    ``backend.synchronize()``."""
    matmul = matmul or backend.matmul
    for _ in range(times):
        for a, b, out in gemms:
            matmul(a, b, out)
    backend.synchronize()
