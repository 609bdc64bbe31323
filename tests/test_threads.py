"""Thread pools that never fight: the Numba loops never run on a libgomp that spins.

Timing is for ``benchmarks/``; these tests check that the mechanism is in force, in fresh
processes (the threading layer is chosen once per process), with PyTorch imported first.
"""

import json
import os
import subprocess
import sys

import pytest

from fastbp.kernels import openmp

pytest.importorskip("numba")

#: trains a few steps with every loop parallel (where parallel loops are allowed at all) and
#: prints what decided the threads, and the threading layer the loops started (None if none)
SCRIPT = """
import json, sys
{first}
import numpy as np
import fastbp
from fastbp.backends import threads
from fastbp.kernels import kernel, openmp
net = fastbp.MLP([32, 1024, 10], backend="numba", seed=0)
kernel.PARALLEL_MIN_WORK = 0  # after the backend's probe, whose loop ran serially
rng = np.random.default_rng(0)
net.fit(rng.standard_normal((1024, 32)), rng.integers(0, 10, 1024), epochs=1, batch_size=512,
        verbose=0)
import numba
try:
    running = numba.threading_layer()
except ValueError:  # no parallel loop ran: no layer was started
    running = None
print(json.dumps({{"plan": net.backend.thread_plan.as_dict(), "running": running,
                  "libgomp_first": openmp.GOMP_STATE.loaded_early,
                  "parallel": kernel.PARALLEL_ENABLED, "torch": "torch" in sys.modules}}))
"""


def run(first="", **env):
    environ = {k: v for k, v in os.environ.items()
               if k not in ("NUMBA_THREADING_LAYER", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    environ.update(env)
    done = subprocess.run([sys.executable, "-c", SCRIPT.format(first=first)], env=environ,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_with_torch_imported_first_the_loops_run_on_threads_that_sleep():
    pytest.importorskip("torch")
    info = run("import torch")
    assert info["torch"] and info["libgomp_first"]  # the trap is set: torch's libgomp is loaded
    assert info["running"] == info["plan"]["threading_layer"] == "workqueue"
    assert info["parallel"]


def test_without_torch_the_same_layer_is_chosen():
    info = run()
    assert info["running"] == "workqueue" and info["parallel"]
    assert "fastbp chose workqueue" in info["plan"]["threads_reason"]


def test_the_users_layer_is_kept():
    info = run(NUMBA_THREADING_LAYER="workqueue")
    assert info["running"] == "workqueue" and "NUMBA_THREADING_LAYER" in \
        info["plan"]["threads_reason"]


def test_omp_on_a_libgomp_torch_started_runs_the_loops_serially():
    """The user insists on OpenMP after torch started libgomp without a passive policy: the
    loops must not run on its spinning threads."""
    pytest.importorskip("torch")
    info = run("import torch", NUMBA_THREADING_LAYER="omp")
    assert not info["parallel"] and "spins" in info["plan"]["threads_reason"]


def test_omp_with_the_users_wait_policy_stays_parallel():
    pytest.importorskip("torch")
    info = run("import torch", NUMBA_THREADING_LAYER="omp", OMP_WAIT_POLICY="PASSIVE")
    assert info["running"] == "omp" and info["parallel"]


@pytest.mark.parametrize("path, shared", [
    ("/site-packages/torch/lib/libgomp.so.1", True),
    ("/usr/lib/x86_64-linux-gnu/libgomp.so.1.0.0", True),
    ("/site-packages/scikit_learn.libs/libgomp-a34b3233.so.1.0.0", False),
])
def test_only_an_unrenamed_libgomp_counts_as_shared(path, shared):
    assert bool(openmp.SHARED_LIBGOMP.search(path)) is shared


def test_mkl_with_torch_imported_first_threads_on_tbb_and_multiplies_right():
    """MKL left alone would thread on torch's spinning libgomp, and its own OpenMP computes
    wrong products beside it: the provider must thread it on oneTBB."""
    pytest.importorskip("torch")
    from fastbp.backends import gemm

    if not gemm.find_mkl():
        pytest.skip("MKL is not installed (pip install 'fastbp[mkl]')")
    script = ("import torch, numpy as np\n"
              "from fastbp.backends import gemm\n"
              "g = gemm.MklGemm(gemm.find_mkl(), 2)\n"
              "a = np.ones((512, 512), np.float32); out = np.empty_like(a)\n"
              "g.matmul(a, a, out)\n"
              "maps = open('/proc/self/maps').read()\n"
              "print(bool((out == 512).all()), g.threading, 'mkl_gnu_thread' in maps)\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split()[-4:] == ["True", "oneTBB", "threads", "False"]


def test_a_numba_variable_set_after_numba_was_imported_does_not_undo_the_choice():
    """Numba's compiler re-reads ``NUMBA_*`` whenever one changed since it last did, and would
    then reset the layer fastbp chose to the default (``omp``) just before the first parallel
    loop: here the variable changes after ``import numba``, and a fresh loop compiles after
    the backend made its choice."""
    script = """
import os, json, numba
os.environ["NUMBA_OPT"] = "3"  # changed after numba read the environment
import numpy as np
from numba import njit, prange
import fastbp
be = fastbp.get_backend("numba")

@njit(parallel=True)
def double(x):
    for i in prange(x.shape[0]):
        x[i] *= 2.0

double(np.ones(1 << 16))
print(json.dumps({"running": numba.threading_layer(), "plan": be.thread_plan.as_dict()}))
"""
    environ = {k: v for k, v in os.environ.items()
               if k not in ("NUMBA_THREADING_LAYER", "OMP_WAIT_POLICY", "NUMBA_OPT")}
    done = subprocess.run([sys.executable, "-c", script], env=environ, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    info = json.loads(done.stdout.strip().splitlines()[-1])
    assert info["running"] == info["plan"]["threading_layer"] == "workqueue"


#: imports torch through the bf16 provider, with a stand-in torch that records the wait policy
#: its libgomp would read when loaded
POLICY_SCRIPT = """
import json, os
from fastbp.backends import gemm, threads  # loads fastbp's Numba kernels, which set a policy
gemm.TorchBf16Gemm(2)._import()
import torch
print(json.dumps({"at_import": torch.POLICY_AT_IMPORT,
                  "after": os.environ.get("OMP_WAIT_POLICY")}))
"""

FAKE_TORCH = """
import os
POLICY_AT_IMPORT = os.environ.get("OMP_WAIT_POLICY")
def set_num_threads(n):
    pass
"""


def policy_at_torch_import(tmp_path, **env):
    (tmp_path / "torch.py").write_text(FAKE_TORCH)
    environ = {k: v for k, v in os.environ.items()
               if k not in ("NUMBA_THREADING_LAYER", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    environ.update(env, PYTHONPATH=os.pathsep.join([str(tmp_path)] + sys.path))
    done = subprocess.run([sys.executable, "-c", POLICY_SCRIPT], env=environ,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_torch_imported_for_bf16_gemms_loads_its_libgomp_with_its_own_default(tmp_path):
    """fastbp's passive policy is for Numba's OpenMP, not for the pool that runs nothing but
    the bf16 GEMMs; it is in force again after the import."""
    assert policy_at_torch_import(tmp_path) == {"at_import": None, "after": "PASSIVE"}


def test_the_users_wait_policy_reaches_torch(tmp_path):
    assert policy_at_torch_import(tmp_path, OMP_WAIT_POLICY="PASSIVE") == {
        "at_import": "PASSIVE", "after": "PASSIVE"}


def test_with_numba_on_openmp_torch_waits_passively(tmp_path):
    """The loops may share torch's libgomp: its threads must not spin beside the BLAS's."""
    assert policy_at_torch_import(tmp_path, NUMBA_THREADING_LAYER="omp")["at_import"] == \
        "PASSIVE"
