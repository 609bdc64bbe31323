"""Whole training steps and epochs, per standard config, on every backend (float32, ReLU hidden
layers, softmax + cross-entropy, plain SGD; the network and data of ``fastbp bench``):

- ``step[config]``: one training step as ``fit`` runs it -- ``forward_device``,
  ``backward_device``, the SGD update -- through the backend's step runner (a CUDA-graph replay
  on cupy) on a fixed batch, then ``synchronize()``;
- ``epoch[config]``: one call ``MLP.fit(X, y, epochs=1)`` over ``bench.cases.default_steps``
  batches, shuffle off, as a user calls it (checking and placing the data included), then
  ``synchronize()``.

``extra_info``: ``gflops`` (``6 N sum n_in n_out`` per step) and ``floor_fraction``, the step's
GEMMs alone (``bench.floor.step_gemms``) over the step (per epoch: over the epoch's steps).
"""

import numpy as np
import pytest

import fastbp
from fastbp.bench.cases import CONFIGS, LR, Case, default_steps, step_flops
from fastbp.bench.floor import GEMM_KINDS
from fastbp.bench.runners import synthetic_data
from fastbp.optim import make_optimizer

pytest.importorskip("pytest_benchmark")

#: timed rounds of a whole epoch (pytest-benchmark's calibration would repeat one more often)
EPOCH_ROUNDS = 5


def make_net(config, backend):
    sizes, batch = CONFIGS[config]
    return fastbp.MLP(list(sizes), activation="relu", output="softmax", loss="cross_entropy",
                      backend=backend, dtype="float32", seed=0), sizes, batch


def test_step(timed, record, config, backend):
    net, sizes, batch = make_net(config, backend)
    rng = np.random.default_rng(0)
    Xb = backend.asarray(rng.standard_normal((batch, sizes[0])).astype(np.float32))
    Yb = backend.asarray(np.eye(sizes[-1], dtype=np.float32)[rng.integers(0, sizes[-1], batch)])
    loss_acc = backend.zeros((1,), np.float32)
    optimizer = make_optimizer("sgd", backend, net.n_params, "float32", LR, 0.0)

    def compute():
        net.forward_device(Xb, training=True)
        net.backward_device(Yb, 1.0 / batch, 0.0, loss_acc)
        optimizer.step(net.params, net.grads)

    runner = backend.step_runner(compute, backend.step_clock())

    def step():
        runner()
        backend.synchronize()

    timed(f"step[{config}]", step)
    record(flop=step_flops(sizes, batch), floor=(sizes, batch, GEMM_KINDS))


def test_epoch(benchmark, record, config, backend):
    net, sizes, batch = make_net(config, backend)
    case = Case(config, sizes, batch, default_steps(sizes, batch))
    X, y = synthetic_data(case, np.float32)
    options = dict(epochs=1, batch_size=batch, lr=LR, optimizer="sgd", shuffle=False,
                   verbose=0)

    def epoch():
        net.fit(X, y, **options)
        backend.synchronize()

    benchmark.group = f"epoch[{config}]"
    benchmark.extra_info["steps"] = case.steps
    benchmark.pedantic(epoch, rounds=EPOCH_ROUNDS, warmup_rounds=1)
    record(flop=step_flops(sizes, batch) * case.steps,
           floor=(sizes, batch, GEMM_KINDS), floor_times=case.steps)
