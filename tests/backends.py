"""Which backends the model-level tests run on: every one usable in this process.

On a machine without a GPU the root conftest turns on Numba's CUDA simulator, so the GPU
backend's code runs as ``cupy-sim``; on a GPU it runs as ``cupy``.
"""

from fastbp.backend import probe

CANDIDATES = ("numpy", "numba", "cupy", "cupy-sim")


def usable_backends(include_simulator=True):
    names = [n for n in CANDIDATES if probe(n)[0]]
    if "cupy" in names or not include_simulator:
        names = [n for n in names if n != "cupy-sim"]
    return names
