"""Root conftest: the GPU tests run on a GPU where one answers, else on Numba's CUDA simulator.

Numba reads ``NUMBA_ENABLE_CUDASIM`` once, when it is first imported, so the decision is made
here, at import, before any test module imports numba. Asking CuPy whether a device answers does
not import numba. A value already in the environment wins (``NUMBA_ENABLE_CUDASIM=1`` forces the
simulator on a GPU machine). The simulator changes nothing for CPU ``@njit`` code.
"""

import os
import sys

import pytest

SIMULATOR_FLAG = "NUMBA_ENABLE_CUDASIM"


def _gpu_answers() -> bool:
    """Whether CuPy is installed and sees at least one CUDA device."""
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # no cupy, no driver, no device
        return False


if SIMULATOR_FLAG not in os.environ and "numba" not in sys.modules and not _gpu_answers():
    os.environ[SIMULATOR_FLAG] = "1"

# Subprocesses of the tests (scripts, ``python -m fastbp``) import the fastbp under test, the
# checkout this conftest belongs to, wherever they start and whatever else is installed.
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
os.environ["PYTHONPATH"] = os.pathsep.join(
    [REPO_ROOT] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])


@pytest.fixture(scope="session")
def gpu_backend():
    """The GPU backend under test: ``cupy`` on a GPU, ``cupy-sim`` under the simulator."""
    from fastbp.backend import get_backend, probe

    name = "cupy-sim" if os.environ.get(SIMULATOR_FLAG) == "1" else "cupy"
    usable, reason = probe(name)
    if not usable:
        pytest.skip(f"backend {name!r} is not usable: {reason}")
    return get_backend(name)
