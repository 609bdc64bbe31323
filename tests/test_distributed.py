"""Data-parallel training equals single-process training: MPI ranks and the in-process
stand-in that exercises the NCCL/MPI logic without GPUs or MPI."""

import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

import fastbp
from fastbp.distributed import ThreadGroup, launcher_size, make_communicator, rank_slice

SCRIPT = Path(__file__).parent / "scripts" / "train_run.py"
sys.path.insert(0, str(SCRIPT.parent))
from train_run import problem  # noqa: E402


def train(comm=None, backend="numpy", batch_size=16, X=None):
    X_, y = problem()
    net = fastbp.MLP([7, 12, 9, 3], activation=["tanh", "relu"], backend=backend,
                     dtype="float64", seed=3)
    net.fit(X_ if X is None else X, y, epochs=3, batch_size=batch_size, lr=0.05,
            optimizer="momentum", momentum=0.9, weight_decay=1e-3, shuffle=True, verbose=0,
            validation_split=0.1, distributed=comm)
    return net


def train_in_threads(size, **kwargs):
    group, results, errors = ThreadGroup(size), [None] * size, []

    def rank_main(rank):
        try:
            be = fastbp.get_backend(kwargs.get("backend", "numpy"))
            results[rank] = train(group.communicator(rank, be), **kwargs)
        except Exception as exc:  # surfaced below
            errors.append(exc)
            group.barrier.abort()

    threads = [threading.Thread(target=rank_main, args=(r,)) for r in range(size)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    if errors:
        raise errors[0]
    return results


def assert_same_weights(a, b, rtol=1e-9):
    np.testing.assert_allclose(a.get_flat_params(), b.get_flat_params(), rtol=rtol, atol=1e-12)


@pytest.mark.parametrize("size,batch_size", [(2, 16), (2, 15), (3, 10), (2, 203), (4, 3)])
def test_ranks_in_threads_match_single_process(size, batch_size):
    single = train(batch_size=batch_size)
    ranks = train_in_threads(size, batch_size=batch_size)
    for net in ranks:
        assert_same_weights(net, single)


def test_rank_slices_cover_every_row_once():
    for n, size in [(16, 2), (15, 2), (3, 4), (1, 2), (10, 3)]:
        parts = [rank_slice(5, 5 + n, r, size) for r in range(size)]
        assert parts[0][0] == 5 and parts[-1][1] == 5 + n
        assert all(a[1] == b[0] for a, b in zip(parts, parts[1:]))
        assert parts[-1][1] > parts[-1][0]  # the last rank is never empty


def test_memory_mapped_data_trains_the_same(tmp_path):
    X, _ = problem()
    np.save(tmp_path / "X.npy", X)
    mapped = np.load(tmp_path / "X.npy", mmap_mode="r")
    single = train()
    ranks = train_in_threads(2, X=mapped)
    assert_same_weights(ranks[0], single)


def test_auto_without_a_launcher_is_single_process(monkeypatch):
    for name in ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_SIZE", "MPI_LOCALNRANKS",
                 "SLURM_NTASKS"):
        monkeypatch.delenv(name, raising=False)
    assert launcher_size() == 1
    assert make_communicator("auto", fastbp.get_backend("numpy")) is None
    monkeypatch.setenv("PMI_SIZE", "1")
    assert make_communicator("auto", fastbp.get_backend("numpy")) is None


def test_bad_distributed_modes():
    be = fastbp.get_backend("numpy")
    with pytest.raises(ValueError, match="distributed must be"):
        make_communicator("gloo", be)
    with pytest.raises(ValueError, match="needs backend='cupy'"):
        make_communicator("nccl", be)


def mpiexec():
    exe = Path(sys.executable).with_name("mpiexec")
    return str(exe) if exe.exists() else shutil.which("mpiexec")


@pytest.mark.skipif(mpiexec() is None, reason="no mpiexec (pip install mpi4py mpich)")
@pytest.mark.parametrize("backend", [b for b in ("numpy", "numba")
                                     if fastbp.backend.probe(b)[0]])
@pytest.mark.parametrize("batch_size", [16, 15])
def test_mpiexec_two_ranks_match_single_process(tmp_path, backend, batch_size):
    pytest.importorskip("mpi4py")
    single, parallel = tmp_path / "single.npy", tmp_path / "parallel.npy"
    common = ["--backend", backend, "--batch-size", str(batch_size), "--epochs", "3",
              "--optimizer", "momentum"]
    env = dict(os.environ, NUMBA_NUM_THREADS="1", OMP_NUM_THREADS="1")
    subprocess.run([sys.executable, str(SCRIPT), str(single), *common], check=True, env=env,
                   timeout=300)
    result = subprocess.run([mpiexec(), "-n", "2", sys.executable, str(SCRIPT), str(parallel),
                             *common, "--distributed", "auto"], capture_output=True, text=True,
                            env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    np.testing.assert_allclose(np.load(parallel), np.load(single), rtol=1e-9, atol=1e-12)
