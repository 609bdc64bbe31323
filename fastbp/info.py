"""``fastbp info``: what this machine offers fastbp, each choice with its reason."""

from __future__ import annotations

import platform

import numpy as np

from . import __version__
from .backend import backend_names, probe


def run(_args):
    """``fastbp info``: versions, every backend and why it is (un)usable, what ``auto`` picks,
    the BLAS pools, the CPU GEMM providers and threads, and the GPU where one answers."""
    print(f"fastbp {__version__}, Python {platform.python_version()}, "
          f"numpy {np.__version__}, {platform.machine()}")
    from .backend import resolve

    for name in backend_names():
        usable, reason = probe(name)
        print(f"  {name:9s} {'usable  ' if usable else 'unusable'}  {reason}")
    try:
        print(f"auto -> {resolve('auto')[1]}")
    except RuntimeError as exc:
        print(f"auto -> {exc}")
    for line in blas_lines():
        print(line)
    for line in cpu_gemm_lines():
        print(line)
    for line in gpu_lines():
        print(line)


def cpu_gemm_lines() -> list[str]:
    """The CPU backends' GEMM providers and the Numba threads, each with why it was chosen."""
    name = "numba" if probe("numba")[0] else "numpy"
    from .backend import get_backend

    info = get_backend(name).describe()
    lines = [f"CPU GEMMs: {info['gemm']} ({info['gemm_reason']})",
             f"CPU bf16 GEMMs: {info['gemm_bf16']} ({info['gemm_bf16_reason']})"]
    if "threading_layer" in info:
        lines.append(f"Numba threads: {info['threads']} on {info['threading_layer']} "
                     f"({info['threads_reason']})")
    return lines


def gpu_lines() -> list[str]:
    """Where a GPU answers: its device, the GEMM precision and compute type, graphs, NCCL."""
    if not probe("cupy")[0]:
        return []
    from .backend import get_backend

    return [f"cupy {key}: {value}" for key, value in get_backend("cupy").describe().items()]


def blas_lines() -> list[str]:
    """The BLAS libraries loaded by NumPy and their thread counts."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return ["BLAS: install threadpoolctl to see the BLAS in use"]
    lines = []
    for pool in threadpool_info():
        lines.append(f"{pool.get('user_api')}: {pool.get('internal_api')} "
                     f"{pool.get('version')} ({pool.get('architecture', '?')}), "
                     f"{pool.get('num_threads')} threads")
    return lines or ["BLAS: none found"]
