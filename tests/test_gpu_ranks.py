"""Which GPU a rank uses, decided when the backend is made (before any parameter lives on a
device), and what ``distributed="nccl"`` needs from CuPy."""

import pytest

from fastbp.distributed import device_for_rank, launcher_local_rank

pytestmark = pytest.mark.gpu

LAUNCHER_VARIABLES = ["MPI_LOCALRANKID", "OMPI_COMM_WORLD_LOCAL_RANK", "SLURM_LOCALID",
                      "LOCAL_RANK", "PMI_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK",
                      "SLURM_PROCID"]


@pytest.fixture
def no_launcher(monkeypatch):
    for name in LAUNCHER_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


@pytest.mark.parametrize("env,count,current,device", [
    ({}, 8, 3, 3),  # no launcher: the device the user made current
    ({"OMPI_COMM_WORLD_LOCAL_RANK": "5", "OMPI_COMM_WORLD_RANK": "13"}, 8, 0, 5),
    ({"MPI_LOCALRANKID": "2", "PMI_RANK": "10"}, 4, 0, 2),  # MPICH/Hydra
    ({"SLURM_LOCALID": "9", "SLURM_PROCID": "17"}, 8, 0, 1),  # more ranks than GPUs: wrap
    ({"LOCAL_RANK": "3"}, 1, 0, 0),  # the launcher shows each rank its one GPU
    ({"PMI_RANK": "6"}, 4, 0, 2),  # only a world rank: one machine, rank % count
])
def test_the_device_follows_the_launchers_local_rank(no_launcher, env, count, current, device):
    for name, value in env.items():
        no_launcher.setenv(name, value)
    assert device_for_rank(launcher_local_rank(), count, current) == device


def test_no_device_is_an_error_that_says_so():
    with pytest.raises(RuntimeError, match="0 devices"):
        device_for_rank(0, 0, 0)


def test_nccl_that_cupy_cannot_load_is_named(monkeypatch):
    pytest.importorskip("mpi4py")
    nccl = pytest.importorskip("cupy.cuda.nccl")
    from types import SimpleNamespace

    from fastbp.distributed import make_communicator

    monkeypatch.setattr(nccl, "available", False)
    with pytest.raises(RuntimeError, match=r"nccl.available is False.*fastbp\[nccl\]"):
        make_communicator("nccl", SimpleNamespace(name="cupy"))
