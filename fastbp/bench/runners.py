"""The columns of the comparison: a :class:`Runner` per fastbp backend (through ``MLP.fit``),
per backend at bf16, and per GEMM floor, in the order the table shows them."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..backend import get_backend
from .cases import LR, Case
from .floor import (FLOORS, NUMPY_FLOOR, device_of, floor_label, gemm_provider, run_gemms,
                    step_gemms)


@dataclass
class Runner:
    """One column of the comparison: ``label``, the ``device`` whose GEMM floor it is compared
    with ("host" or "gpu"), and ``kind`` ("backend", "torch" or "floor"). ``make(case, data)``
    returns the callable that runs one round of ``case`` and returns its seconds."""

    label: str
    device: str
    kind: str
    make: Callable


def synthetic_data(case: Case, dtype):
    """``steps`` batches of random normal features and random class labels (host arrays)."""
    rng = np.random.default_rng(0)
    n = case.batch * case.steps
    X = rng.standard_normal((n, case.sizes[0])).astype(dtype)
    return X, rng.integers(0, case.sizes[-1], n)


def backend_runner(name: str, dtype, precision: str = "highest") -> Runner:
    """A fastbp backend timed through ``MLP.fit`` (see the module doc for what is timed), at
    GEMM ``precision`` (labelled ``"<name> bf16"`` when not the default)."""
    from ..model import MLP

    def make(case, data):
        X, y = data
        net = MLP(list(case.sizes), activation="relu", output="softmax", loss="cross_entropy",
                  backend=name, dtype=dtype, seed=0)
        options = dict(epochs=1, batch_size=case.batch, lr=LR, optimizer="sgd", shuffle=False,
                       verbose=0, precision=precision)
        return lambda: net.fit(X, y, **options).seconds[-1]

    label = name if precision == "highest" else f"{name} {precision}"
    return Runner(label, device_of(get_backend(name)), "backend", make)


def gemm_floor_runner(label, device, dtype, matmul=None) -> Runner:
    """The step's GEMMs alone, ``steps`` times, synchronised, on ``device``'s floor backend:
    through its provider, or through ``matmul``."""
    backend = get_backend(FLOORS[device])

    def make(case, _data):
        gemms = step_gemms(backend, case.sizes, case.batch, dtype)

        def round_seconds():
            start = time.perf_counter()
            run_gemms(backend, gemms, case.steps, matmul)
            return time.perf_counter() - start
        return round_seconds

    return Runner(label, device, "floor", make)


def floor_runner(device: str, dtype) -> Runner:
    """The GEMM floor of ``device``, on the GEMM provider its backends use."""
    return gemm_floor_runner(floor_label(device), device, dtype)


def numpy_floor_runner(dtype) -> Runner:
    """The host GEMM floor on NumPy's own BLAS (``np.matmul``), whatever the provider."""
    return gemm_floor_runner(NUMPY_FLOOR, "host", dtype,
                             lambda a, b, out: np.matmul(a, b, out=out))


def bf16_backends(plan) -> list[str]:
    """The backends of ``plan`` that offer ``precision="bf16"``; the others land in
    ``skipped`` with the reason."""
    offering = []
    for name in plan.backends:
        backend = get_backend(name)
        if "bf16" in backend.precisions:
            offering.append(name)
        else:
            why = getattr(backend, "unavailable_precisions", {}).get("bf16", "not offered")
            plan.skipped[f"{name} bf16"] = why
    return offering


def order_runners(backends, torch_columns, dtype, bf16=()) -> list[Runner]:
    """The backends, their bf16 runs (``bf16``: the backends to time at precision bf16), then
    PyTorch (``torch_columns``), then the GEMM floor of every device they run on (a GPU's only
    with the cupy backend), and NumPy's BLAS floor beside a host floor on another provider."""
    runners = [backend_runner(name, dtype) for name in backends]
    runners += [backend_runner(name, dtype, "bf16") for name in bf16]
    runners += list(torch_columns)
    devices = dict.fromkeys(r.device for r in runners)
    usable_floors = [d for d in devices if d == "host" or "cupy" in backends]
    floors = [floor_runner(device, dtype) for device in usable_floors]
    if "host" in usable_floors and gemm_provider("host") != "numpy":
        floors.append(numpy_floor_runner(dtype))
    return runners + floors
