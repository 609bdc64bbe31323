"""Data-parallel scaling, measured here and projected to bigger machines.

Measured (this machine): ms per global training step through ``fit`` for one process using
2 threads against ``mpiexec -n 2`` ranks using 1 thread each, same global batch, float32,
relu, softmax + cross-entropy, plain SGD, shuffle off.

Projected: every step all-reduces the flat gradient vector, ``bytes = 4 * n_params``; a ring
all-reduce over ``P`` ranks moves ``2 (P-1)/P * bytes`` through each link, so
``t_allreduce = 2 (P-1)/P * bytes / bandwidth + 2 (P-1) * latency``. The step's compute is
``6 * N * sum_l n_in n_out`` FLOPs at an assumed sustained rate. fastbp all-reduces after the
whole backward pass (no overlap), so the efficiency is ``t_compute / (t_compute + t_allreduce)``
with each GPU keeping the config's batch (weak scaling).

    python benchmarks/scaling.py [--configs small,mid] [--steps 20] [--backend numba]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

CONFIGS = {
    "small": ([784, 256, 256, 10], 256),
    "mid": ([784, 1024, 1024, 10], 512),
    "large": ([784, 2048, 2048, 2048, 10], 1024),
    "xlarge": ([784, 4096, 4096, 4096, 10], 4096),
}
#: (name, ranks, link bandwidth bytes/s, per-hop latency s); NVLink 4: ~360 GB/s NCCL bus
#: bandwidth per H100; 100 Gb/s Ethernet/InfiniBand: 12.5 GB/s at best
FABRICS = [("8 GPUs, NVLink", 8, 360e9, 5e-6), ("4 nodes, 100 Gb/s", 4, 12.5e9, 10e-6)]
#: assumed sustained float32 (non-TF32) GEMM rate of one H100, FLOP/s
GPU_FLOPS = 45e12


def n_params(sizes) -> int:
    return sum(i * o + o for i, o in zip(sizes, sizes[1:]))


def step_flops(sizes, batch) -> float:
    return 6.0 * batch * sum(i * o for i, o in zip(sizes, sizes[1:]))


def allreduce_seconds(nbytes, ranks, bandwidth, latency) -> float:
    """Ring all-reduce: ``2 (P-1)/P * bytes / bandwidth + 2 (P-1) * latency``."""
    return 2 * (ranks - 1) / ranks * nbytes / bandwidth + 2 * (ranks - 1) * latency


def projection_rows(configs):
    """One row per (config, fabric): compute ms, all-reduce ms, efficiency."""
    rows = []
    for name in configs:
        sizes, batch = CONFIGS[name]
        compute = step_flops(sizes, batch) / GPU_FLOPS
        for fabric, ranks, bandwidth, latency in FABRICS:
            comm = allreduce_seconds(4 * n_params(sizes), ranks, bandwidth, latency)
            rows.append((name, fabric, compute * 1e3, comm * 1e3, compute / (compute + comm)))
    return rows


def worker(config, steps, backend, out):
    """Time ``steps`` global steps through fit (after a warm-up epoch); rank 0 writes ms."""
    import fastbp

    sizes, batch = CONFIGS[config]
    rng = np.random.default_rng(0)
    X = rng.normal(size=(batch * steps, sizes[0])).astype(np.float32)
    y = rng.integers(0, sizes[-1], batch * steps)
    net = fastbp.MLP(sizes, backend=backend, seed=0)
    options = dict(batch_size=batch, lr=0.01, shuffle=False, verbose=0, distributed="auto")
    net.fit(X[:2 * batch], y[:2 * batch], epochs=1, **options)
    start = time.perf_counter()
    net.fit(X, y, epochs=1, **options)
    elapsed = (time.perf_counter() - start) / steps * 1e3
    from fastbp.distributed import launcher_rank

    if launcher_rank() == 0:
        Path(out).write_text(f"{elapsed}\n")


def measure(config, steps, backend, ranks) -> float:
    """ms per step with ``ranks`` processes sharing this machine's 2 cores."""
    threads = str(max(1, (os.cpu_count() or 2) // ranks))
    env = dict(os.environ, NUMBA_NUM_THREADS=threads, OMP_NUM_THREADS=threads,
               OPENBLAS_NUM_THREADS=threads)
    out = Path(f"/tmp/fastbp-scaling-{os.getpid()}-{ranks}.txt")
    cmd = [sys.executable, __file__, "--worker", config, "--steps", str(steps),
           "--backend", backend, "--out", str(out)]
    if ranks > 1:
        cmd = [str(Path(sys.executable).with_name("mpiexec")), "-n", str(ranks), *cmd]
    subprocess.run(cmd, check=True, env=env, timeout=600)
    value = float(out.read_text())
    out.unlink()
    return value


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--configs", default="small,mid")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--backend", default="numba")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--worker")
    p.add_argument("--out")
    args = p.parse_args(argv)
    if args.worker:
        return worker(args.worker, args.steps, args.backend, args.out)
    configs = args.configs.split(",")
    print(f"measured on {os.cpu_count()} cores, backend {args.backend}, ms per global step "
          f"(median of {args.repeats}, interleaved)")
    print(f"{'config':8s} {'1 rank x 2 threads':>20s} {'2 ranks x 1 thread':>20s} {'ratio':>7s}")
    for config in configs:
        one, two = [], []
        for _ in range(args.repeats):
            one.append(measure(config, args.steps, args.backend, 1))
            two.append(measure(config, args.steps, args.backend, 2))
        a, b = float(np.median(one)), float(np.median(two))
        print(f"{config:8s} {a:20.2f} {b:20.2f} {b / a:7.2f}")
    print(f"\nprojected, float32 gradients, {GPU_FLOPS / 1e12:.0f} TFLOP/s per GPU, "
          "per-GPU batch as in the config, no compute/communication overlap")
    print(f"{'config':8s} {'fabric':20s} {'compute ms':>11s} {'all-reduce ms':>14s} "
          f"{'efficiency':>10s}")
    for name, fabric, compute, comm, eff in projection_rows(list(CONFIGS)):
        print(f"{name:8s} {fabric:20s} {compute:11.3f} {comm:14.3f} {eff:10.0%}")


if __name__ == "__main__":
    main()
