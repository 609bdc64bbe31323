"""PyTorch beside the backends (``--compare-torch``): a worker process of its own that times
eager epochs of the same network, and its :class:`~.runners.Runner` columns."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

from ..backends.gemm import bf16_missing
from .cases import LR
from .report import cpu_model, numpy_blas
from .runners import Runner


def torch_runner(worker: TorchWorker, dtype, autocast: bool = False) -> Runner:
    """PyTorch eager on the same case, timed by its worker process (``autocast``: under
    ``torch.autocast(dtype=torch.bfloat16)``, PyTorch's bf16 mixed precision)."""
    def make(case, _data):
        request = dict(sizes=list(case.sizes), batch=case.batch, steps=case.steps,
                       dtype=np.dtype(dtype).name, lr=LR, autocast=autocast)
        return lambda: worker.epoch(request)

    device = "gpu" if worker.info["device"] == "cuda" else "host"
    mode = " bf16 autocast" if autocast else ""
    return Runner(f"torch{mode} ({worker.info['device']})", device, "torch", make)


def torch_runners(worker: TorchWorker | None, plan) -> list[Runner]:
    """PyTorch's columns: float32 eager, and with ``--bf16`` its bf16 autocast -- skipped, with
    the reason, on a CPU without bf16 instructions, where PyTorch runs autocast on emulated
    bf16 kernels (a small step took 13x its float32 time on an AMD EPYC Zen 3, and a
    ``--bf16`` run there had not finished after 10 minutes) and fastbp has no bf16 column to
    compare it with."""
    if worker is None:
        return []
    columns = [torch_runner(worker, plan.dtype)]
    if plan.bf16:
        missing = None if worker.info["device"] == "cuda" else bf16_missing()
        if missing:
            plan.skipped["torch bf16 autocast"] = (f"{missing}: PyTorch's CPU autocast would "
                                                   f"run emulated bf16 kernels")
        else:
            columns.append(torch_runner(worker, plan.dtype, autocast=True))
    return columns


#: what the worker process runs: :func:`torch_worker`
WORKER_CODE = "from fastbp.bench.torch_peer import torch_worker; torch_worker()"


class TorchWorker:
    """PyTorch in a process of its own; :meth:`epoch` asks it to time one round of a case."""

    def __init__(self, threads: int):
        env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
        self.errors = tempfile.TemporaryFile(mode="w+")
        self.proc = subprocess.Popen(
            [sys.executable, "-c", WORKER_CODE, str(threads)], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=self.errors, text=True, env=env)
        self.info = json.loads(self.answer())

    def answer(self) -> str:
        line = self.proc.stdout.readline()
        if not line:
            self.errors.seek(0)
            tail = self.errors.read().strip().splitlines()[-1:] or ["no message"]
            raise RuntimeError(f"the PyTorch worker stopped (exit status {self.proc.wait()}): "
                               f"{tail[0]}")
        return line

    def epoch(self, request: dict) -> float:
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        return float(self.answer())

    def close(self):
        self.proc.stdin.close()
        self.proc.wait()
        self.errors.close()


def torch_worker():
    """The worker behind :class:`TorchWorker` (``python -c``; argv[1]: CPU threads). Says hello
    with a JSON line (versions, device), then answers each JSON case on stdin with the seconds
    of one epoch of it: ``steps`` eager SGD steps on resident random batches, synchronised."""
    import torch

    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    else:
        torch.set_num_threads(int(sys.argv[1]))
    print(json.dumps({"torch": torch.__version__, "device": device,
                      "threads": torch.get_num_threads(),
                      "name": torch.cuda.get_device_name() if cuda else cpu_model()}),
          flush=True)
    request = problem = None
    for line in sys.stdin:
        if line != request:
            request, problem = line, torch_problem(torch, device, **json.loads(line))
        print(torch_epoch(torch, cuda, *problem), flush=True)


def torch_problem(torch, device, sizes, batch, steps, dtype, lr, autocast=False):
    """``(model, optimizer, X, y, autocast)`` for one case: the network of
    :func:`.runners.backend_runner`."""
    torch.manual_seed(0)
    layers = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        layers += [torch.nn.Linear(n_in, n_out), torch.nn.ReLU()]
    dtype = getattr(torch, dtype)
    model = torch.nn.Sequential(*layers[:-1]).to(device, dtype)
    X = torch.randn(steps, batch, sizes[0], device=device, dtype=dtype)
    y = torch.randint(0, sizes[-1], (steps, batch), device=device)
    return model, torch.optim.SGD(model.parameters(), lr=lr), X, y, autocast


def torch_epoch(torch, cuda, model, optimizer, X, y, autocast=False) -> float:
    """Seconds of one pass over the batches ``X[i], y[i]``, synchronised on a GPU (``autocast``:
    the forward and the loss under bf16 autocast, float32 weights and optimizer)."""
    loss_fn = torch.nn.functional.cross_entropy
    device = "cuda" if cuda else "cpu"
    start = time.perf_counter()
    for Xb, yb in zip(X, y):
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device, dtype=torch.bfloat16, enabled=autocast):
            loss = loss_fn(model(Xb), yb)
        loss.backward()
        optimizer.step()
    if cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - start


def start_torch(plan) -> TorchWorker | None:
    """The PyTorch worker for ``--compare-torch``, or None (the reason lands in ``skipped``)."""
    if not plan.torch:
        return None
    if importlib.util.find_spec("torch") is None:
        plan.skipped["torch"] = "PyTorch is not installed (pip install torch)"
        return None
    blas_threads = [p["num_threads"] for p in numpy_blas()]
    try:
        return TorchWorker(blas_threads[0] if blas_threads else os.cpu_count())
    except (OSError, RuntimeError, ValueError) as exc:
        plan.skipped["torch"] = str(exc)
        return None
