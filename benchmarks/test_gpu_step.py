"""Milliseconds per training step on the GPU: fastbp ``cupy`` against PyTorch and cuBLAS.

Run by ``benchmarks/gpu.sh`` as a script, one process per (config, precision)::

    python benchmarks/test_gpu_step.py --config small --precision float32 --json out.json

It needs CuPy, Numba with numba-cuda, fastbp and (for the torch columns) PyTorch; no
pytest-benchmark: each implementation is timed by a plain loop, ``ROUNDS`` rounds of ``steps``
steps ended by a device synchronisation, the median round counting. Same model, batches and
arithmetic everywhere: relu hidden layers, softmax + cross-entropy, plain SGD, batches copied in
order from a training set resident on the device into fixed buffers.

- ``fastbp-eager``: fastbp's step (forward_device, backward_device, the optimizer), launched
  from Python every step;
- ``fastbp-graph``: the same step through ``CupyBackend.step_runner``: captured as a CUDA graph
  on its second call and replayed (``graph`` and ``graph_failure`` say whether it was);
- ``torch-eager`` and ``torch-graph``: ``torch.nn`` with ``torch.optim.SGD``, eagerly and replayed
  from a ``torch.cuda.graph``;
- ``cublas-floor``: only the step's GEMMs (forward, ``a_prev.T @ delta``, ``delta @ W.T``) on
  fastbp's cuBLAS handle with the same compute type, replayed from a graph where it captures:
  the floor no implementation of the step can beat.

``float32`` is exact IEEE float32 (``precision="highest"``, torch's ``allow_tf32=False``); ``tf32``
runs the GEMMs on TF32 tensor cores in both; ``bf16`` is fastbp's ``precision="bf16"`` (GEMM
operands rounded to bfloat16, float32 accumulation, weights and updates) against PyTorch's
``torch.autocast("cuda", torch.bfloat16)`` over the forward pass and the loss. Under pytest (no
GPU: every test skips) one small smoke test checks that each implementation runs and that
fastbp's step was captured.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import numpy as np

CONFIGS = {  # name: (layer sizes, batch, batches of the training set, steps per timed round)
    "small": ([784, 256, 256, 10], 256, 8, 200),
    "large": ([784, 4096, 4096, 4096, 10], 4096, 2, 10),
}
PRECISIONS = {"float32": "highest", "tf32": "tf32", "bf16": "bf16"}
IMPLS = ("fastbp-eager", "fastbp-graph", "torch-eager", "torch-graph", "cublas-floor")
ROUNDS = 5
WARMUP_STEPS = 3
LR = 0.01


def gemm_flops(sizes, batch) -> float:
    """FLOPs of one step's GEMMs: forward and ``dW`` of every layer, ``delta`` of all but the
    first: ``2 N (3 sum_l n_{l-1} n_l - n_0 n_1)``."""
    products = [n_in * n_out for n_in, n_out in zip(sizes[:-1], sizes[1:])]
    return 2.0 * batch * (3 * sum(products) - products[0])


def problem(config):
    """Host float32 features and integer labels for ``batches`` batches of the config."""
    sizes, batch, batches, _ = CONFIGS[config]
    rng = np.random.default_rng(0)
    X = rng.standard_normal((batch * batches, sizes[0]), dtype=np.float32)
    return X, rng.integers(0, sizes[-1], batch * batches)


def time_steps(step, steps, synchronize) -> float:
    """Median ms per step of ``ROUNDS`` rounds of ``steps`` calls of ``step(i)``."""
    for i in range(WARMUP_STEPS):
        step(i)
    synchronize()
    rounds = []
    for _ in range(ROUNDS):
        start = time.perf_counter()
        for i in range(steps):
            step(i)
        synchronize()
        rounds.append((time.perf_counter() - start) * 1e3 / steps)
    return statistics.median(rounds)


def fastbp_step(config, precision, graphed):
    """``(step(i), info)`` for fastbp's step on the ``cupy`` backend."""
    import fastbp
    from fastbp.backends import graphs
    from fastbp.optim import make_optimizer

    sizes, batch, batches, _ = CONFIGS[config]
    X, y = problem(config)
    net = fastbp.MLP(sizes, activation="relu", backend="cupy", dtype="float32", seed=0)
    be = net.backend
    be.set_precision(PRECISIONS[precision])
    X_dev, Y_dev = be.asarray(X, np.float32), be.asarray(np.eye(sizes[-1], dtype=np.float32)[y])
    Xb, Yb = be.empty((batch, sizes[0]), np.float32), be.empty((batch, sizes[-1]), np.float32)
    loss_acc = be.zeros((1,), np.float32)
    optimizer = make_optimizer("sgd", be, net.n_params, "float32", LR, 0.0)

    def one_step():
        net.forward_device(Xb, training=True)
        net.backward_device(Yb, 1.0 / batch, 0.0, loss_acc)
        optimizer.apply(net.params, net.grads)

    clock = be.step_clock()
    runner = (be.step_runner(one_step, clock) if graphed
              else graphs.StepRunner(be, one_step, clock, capture=False))

    def step(i):
        lo = (i % batches) * batch
        be.copy(X_dev[lo:lo + batch], Xb)
        be.copy(Y_dev[lo:lo + batch], Yb)
        runner()

    def info():
        return {"graph": runner.captured, "graph_failure": runner.reason,
                "gemm": be.gemm_info()["float32 gemm"]}

    return step, info


def torch_step(config, precision, graphed):
    """``(step(i), info)`` for the same network in PyTorch."""
    import torch

    torch.backends.cuda.matmul.allow_tf32 = precision == "tf32"
    torch.backends.cudnn.allow_tf32 = precision == "tf32"
    sizes, batch, batches, _ = CONFIGS[config]
    layers = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        layers += [torch.nn.Linear(n_in, n_out), torch.nn.ReLU()]
    model = torch.nn.Sequential(*layers[:-1]).cuda()
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)
    X_host, y_host = problem(config)
    X, y = torch.as_tensor(X_host, device="cuda"), torch.as_tensor(y_host, device="cuda")
    static_x, static_y = X[:batch].clone(), y[:batch].clone()

    def body():
        # no autocast cache: a graph must recast the weights each replay, as fastbp rounds them
        with torch.autocast("cuda", torch.bfloat16, enabled=precision == "bf16",
                            cache_enabled=False):
            loss = torch.nn.functional.cross_entropy(model(static_x).float(), static_y)
        loss.backward()
        optimizer.step()

    def eager(i):
        lo = (i % batches) * batch
        static_x.copy_(X[lo:lo + batch])
        static_y.copy_(y[lo:lo + batch])
        optimizer.zero_grad(set_to_none=True)
        body()

    if not graphed:
        return eager, lambda: {"torch": torch.__version__}
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm up outside the graph, as torch's recipe asks
        for i in range(3):
            eager(i)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    optimizer.zero_grad(set_to_none=True)
    with torch.cuda.graph(graph):
        body()

    def replay(i):
        lo = (i % batches) * batch
        static_x.copy_(X[lo:lo + batch])
        static_y.copy_(y[lo:lo + batch])
        graph.replay()

    return replay, lambda: {"torch": torch.__version__}


def floor_step(config, precision):
    """``(step(i), info)``: one step's GEMMs alone, on fastbp's handle, graphed if it can."""
    import fastbp

    sizes, batch, _, _ = CONFIGS[config]
    be = fastbp.get_backend("cupy")
    be.set_precision(PRECISIONS[precision])
    rng = np.random.default_rng(0)

    def rand(*shape):
        return be.asarray(rng.standard_normal(shape, dtype=np.float32))

    gemms = []
    for layer, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        a_prev, W, delta = rand(batch, n_in), rand(n_in, n_out), rand(batch, n_out)
        gemms.append((a_prev, W, be.empty((batch, n_out), np.float32)))  # forward
        gemms.append((a_prev.T, delta, be.empty((n_in, n_out), np.float32)))  # dW
        if layer > 0:
            gemms.append((delta, W.T, be.empty((batch, n_in), np.float32)))  # delta below

    def all_gemms():
        for a, b, out in gemms:
            be.matmul(a, b, out)

    runner = be.step_runner(all_gemms, be.step_clock())
    return lambda i: runner(), lambda: {"graph": runner.captured,
                                        "graph_failure": runner.reason}


def make_step(impl, config, precision):
    if impl.startswith("fastbp"):
        return fastbp_step(config, precision, graphed=impl == "fastbp-graph")
    if impl.startswith("torch"):
        return torch_step(config, precision, graphed=impl == "torch-graph")
    return floor_step(config, precision)


def measure(config, precision, impls=IMPLS, steps=None) -> dict:
    """``{impl: {"ms_per_step": ..., ...}}`` for each implementation (an error is recorded and
    the others still run)."""
    import cupy

    steps = steps or CONFIGS[config][3]
    results = {}
    for impl in impls:
        try:
            step, info = make_step(impl, config, precision)
            ms = time_steps(step, steps, cupy.cuda.Device().synchronize)
            results[impl] = {"ms_per_step": ms, **info()}
        except Exception as exc:  # a missing torch, a failed capture: say so, go on
            results[impl] = {"error": f"{type(exc).__name__}: {exc}"}
        print(f"{config} {precision} {impl}: {results[impl]}", flush=True)
    return results


def ratios(results) -> dict:
    """The ratios the goals are stated in, where both sides were measured."""
    ms = {impl: r["ms_per_step"] for impl, r in results.items() if "ms_per_step" in r}
    out = {}
    for impl in ("fastbp-eager", "fastbp-graph"):
        for base in ("torch-eager", "torch-graph", "cublas-floor"):
            if impl in ms and base in ms:
                out[f"{impl} / {base}"] = ms[impl] / ms[base]
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", choices=CONFIGS, required=True)
    parser.add_argument("--precision", choices=PRECISIONS, required=True)
    parser.add_argument("--json", required=True, help="write the results here")
    parser.add_argument("--steps", type=int, default=None, help="steps per timed round")
    args = parser.parse_args(argv)
    sizes, batch = CONFIGS[args.config][:2]
    results = measure(args.config, args.precision, steps=args.steps)
    report = {"config": f"{'-'.join(map(str, sizes))}, batch {batch}",
              "gemm_tflop_per_step": gemm_flops(sizes, batch) / 1e12,
              "results": results, "ratios": ratios(results)}
    with open(args.json, "w") as f:
        json.dump(report, f, indent=2)
    return 0


# -- under pytest: a smoke test on a GPU (skipped without one) ----------------------------------

def test_every_implementation_runs_and_fastbp_captures_its_step():
    import pytest

    cupy = pytest.importorskip("cupy")
    try:
        if cupy.cuda.runtime.getDeviceCount() < 1:
            raise RuntimeError("0 devices")
    except Exception as exc:  # no driver, no device
        pytest.skip(f"no CUDA GPU answers: {exc}")
    impls = [impl for impl in IMPLS if not impl.startswith("torch")
             or __import__("importlib").util.find_spec("torch")]
    results = measure("small", "float32", impls, steps=2)
    assert all("ms_per_step" in r for r in results.values()), results
    assert results["fastbp-graph"]["graph"], results["fastbp-graph"]["graph_failure"]


if __name__ == "__main__":
    sys.exit(main())
