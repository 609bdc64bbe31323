"""Every GPU kernel compiles to real PTX for sm_80 and sm_90, float32 and float64, with NVVM.

No GPU needed: ``numba.cuda.compile_ptx`` runs NVIDIA's NVVM on the kernels of ``kernels/gpu.py``
with the argument types of ``gpu.signatures``. For CUDA 12 NVVM ships in the nvcc wheel that
``numba-cuda[cu12]`` installs (``cuda-toolkit[nvcc]``); numba-cuda finds it there through
cuda-pathfinder, no environment variable needed. The
compilation runs in a subprocess without ``NUMBA_ENABLE_CUDASIM`` (the simulator replaces
``numba.cuda`` wholesale, and the root conftest turns it on here). Compiling the device functions
the kernels call makes numba ask for the current device's compute capability; the subprocess
answers for the one being compiled for (``numba.cuda.dispatcher.get_current_device``).

This is the check the simulator cannot make: it runs Python the CUDA compiler would reject.
"""

import json
import os
import re
import subprocess
import sys

import pytest

pytestmark = pytest.mark.gpu

TARGETS = [(8, 0), (9, 0)]
DTYPES = ["float32", "float64"]

COMPILE_EVERY_KERNEL = """
import json, sys, types
import numba.cuda.dispatcher
from numba import cuda
from fastbp.kernels import gpu

current = {}
numba.cuda.dispatcher.get_current_device = lambda: types.SimpleNamespace(
    compute_capability=current["cc"])
ptx = {}
for cc in %(targets)r:
    current["cc"] = cc
    for dtype in %(dtypes)r:
        for name, (kernel, argtypes) in gpu.signatures(dtype).items():
            ptx[f"{name}/{dtype}/sm_{cc[0]}{cc[1]}"] = cuda.compile_ptx(
                kernel.py_func, argtypes, cc=cc)[0]
json.dump(ptx, open(sys.argv[1], "w"))
"""


@pytest.fixture(scope="module")
def ptx(tmp_path_factory):
    """``{"kernel/dtype/sm_XY": PTX text}`` for every kernel, dtype and target."""
    out = tmp_path_factory.mktemp("ptx") / "ptx.json"
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    script = COMPILE_EVERY_KERNEL % {"targets": TARGETS, "dtypes": DTYPES}
    done = subprocess.run([sys.executable, "-c", script, str(out)], env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"compiling the kernels to PTX failed:\n{done.stderr[-4000:]}"
    return json.loads(out.read_text())


def kernel_names():
    from fastbp.kernels import gpu

    return list(gpu.signatures("float32"))


@pytest.mark.parametrize("cc", TARGETS, ids=lambda cc: f"sm_{cc[0]}{cc[1]}")
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", kernel_names())
def test_kernel_compiles_to_ptx(ptx, name, dtype, cc):
    text = ptx[f"{name}/{dtype}/sm_{cc[0]}{cc[1]}"]
    assert re.search(rf"^\.target sm_{cc[0]}{cc[1]}\b", text, re.MULTILINE)
    assert re.search(rf"^\.visible \.entry \S*{name}", text, re.MULTILINE), "no kernel entry"
    if dtype == "float32":
        f64 = [line.strip() for line in text.splitlines() if re.search(r"\.f64\b", line)]
        assert not f64, f"float32 kernel {name} does float64 arithmetic: {f64[:3]}"


def is_kernel(obj) -> bool:
    """A ``cuda.jit`` kernel (not a device function), real or simulated."""
    if hasattr(obj, "_device"):  # the simulator's FakeCUDAKernel
        return not obj._device
    return getattr(obj, "targetoptions", {}).get("device") is False


def test_every_kernel_of_the_module_has_a_signature():
    """A kernel added to gpu.py without a signature would escape the PTX check."""
    from fastbp.kernels import gpu

    kernels = {name for name, obj in vars(gpu).items() if is_kernel(obj)}
    assert kernels == set(gpu.signatures("float32"))


# NumPy 2.5 as numba-cuda meets it: no ``np.row_stack``, in neither the module nor ``__all__``
# (SciPy, which numba-cuda imports at its first compilation, star-imports NumPy).
COMPILE_WITHOUT_ROW_STACK = """
import types
import numpy as np
del np.row_stack
np.__all__ = [name for name in np.__all__ if name != "row_stack"]
import numba.cuda.dispatcher
from numba import cuda
numba.cuda.dispatcher.get_current_device = lambda: types.SimpleNamespace(
    compute_capability=(9, 0))
%(prepare)s
kernel, argtypes = gpu.signatures("float32")["sgd_update"]
cuda.compile_ptx(kernel.py_func, argtypes, cc=(9, 0))
assert not hasattr(np, "row_stack"), "the stand-in was left in numpy"
"""


@pytest.mark.parametrize("prepare, compiles", [
    ("from fastbp.kernels import gpu", True),
    ("import fastbp.kernels.cuda_numpy_compat as compat\n"
     "compat.load_array_registry = lambda simulator: None\n"
     "from fastbp.kernels import gpu", False),
], ids=["with-the-workaround", "without-it"])
def test_kernels_compile_under_numpy_2_5(prepare, compiles):
    """numba-cuda 0.30 registers an overload of ``np.row_stack``, which NumPy 2.5 removed
    (NVIDIA/numba-cuda#907: every compilation failed on an H200 with numpy 2.5.2): importing
    ``fastbp.kernels.gpu`` loads that registry with a stand-in, and NumPy is left as found.
    The second case shows the failure is real here without the workaround."""
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    done = subprocess.run([sys.executable, "-c", COMPILE_WITHOUT_ROW_STACK % {"prepare": prepare}],
                          env=env, capture_output=True, text=True, timeout=300)
    if compiles:
        assert done.returncode == 0, done.stderr[-3000:]
    else:
        assert "has no attribute 'row_stack'" in done.stderr, done.stderr[-3000:]
