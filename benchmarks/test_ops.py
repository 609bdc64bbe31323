"""One backend op per group, at a standard config's shapes, on every backend (float32).

The Dense-layer ops take the config's second layer, ``n_1 -> n_2`` at batch ``N`` (small:
256 -> 256, N 256; mid: 1024 -> 1024, N 512), ReLU:

- ``linear_forward``: ``z_2 = a_1 @ W_2 + b_2; a_2 = relu(z_2)``;
- ``backprop_delta``: ``delta_1 = (delta_2 @ W_2.T) * relu'(z_1)``;
- ``weight_grads``: ``dW_2 = a_1.T @ delta_2; db_2 = sum_rows(delta_2)``;

each with its GFLOP/s (of the GEMM) and the fraction of its GEMM's floor;

and besides them:

- ``gemm``: every GEMM of one training step of the config (the floor of ``test_steps``);
- ``output_forward``: the output layer's ``linear_forward``, ``n_{L-1} -> n_L`` with softmax
  (10 classes: the GEMM is narrow, and the softmax's exponentials a large share);
- ``output_delta_loss``: softmax + cross-entropy on the output layer, ``N x n_L``: ``delta_L``
  and the batch's loss sum (GB/s of the four arrays);
- ``sgd`` / ``momentum`` / ``adam`` update: one optimizer step over the config's whole flat
  parameter vector (memory-bound: GB/s of the vectors read and written).
"""

import numpy as np
import pytest

from fastbp.activations import make_activation
from fastbp.bench.cases import CONFIGS
from fastbp.bench.floor import GEMM_KINDS, gemm_flops, run_gemms, step_gemms
from fastbp.losses import LOSSES
from fastbp.optim import make_optimizer

pytest.importorskip("pytest_benchmark")

RELU = make_activation("relu").code
SOFTMAX = make_activation("softmax").code
CROSS_ENTROPY = LOSSES["cross_entropy"].code
#: float32 vectors each optimizer reads plus writes per parameter (p, g; v; m, v)
UPDATE_VECTORS = {"sgd": 3, "momentum": 5, "adam": 7}


def draw(backend, *shape, seed=0):
    """A float32 device array of standard-normal values drawn on the host."""
    rng = np.random.default_rng(seed)
    return backend.asarray(rng.standard_normal(shape).astype(np.float32))


def synchronized(backend, op, *args):
    """A call of ``op(*args)`` that waits for the device."""
    def call():
        op(*args)
        backend.synchronize()
    return call


def second_layer(config):
    """``(N, n_1, n_2)`` of the config's second layer."""
    sizes, batch = CONFIGS[config]
    return batch, sizes[1], sizes[2]


def test_gemm(timed, record, config, backend):
    sizes, batch = CONFIGS[config]
    gemms = step_gemms(backend, sizes, batch, "float32")
    timed(f"gemm[{config}]", lambda: run_gemms(backend, gemms))
    record(flop=gemm_flops(gemms), floor=(sizes, batch, GEMM_KINDS))


def test_linear_forward(timed, record, config, backend):
    N, n1, n2 = second_layer(config)
    z, a = backend.empty((N, n2), np.float32), backend.empty((N, n2), np.float32)
    timed(f"linear_forward[{config}]", synchronized(
        backend, backend.linear_forward, draw(backend, N, n1), draw(backend, n1, n2),
        draw(backend, n2), RELU, 0.0, z, a))
    record(flop=2 * N * n1 * n2, floor=((n1, n2), N, ("forward",)))


def test_backprop_delta(timed, record, config, backend):
    N, n1, n2 = second_layer(config)
    z1 = draw(backend, N, n1, seed=1)
    a1 = backend.xp.maximum(z1, 0)
    timed(f"backprop_delta[{config}]", synchronized(
        backend, backend.backprop_delta, draw(backend, N, n2), draw(backend, n1, n2), z1, a1,
        RELU, 0.0, backend.empty((N, n1), np.float32)))
    sizes, _ = CONFIGS[config]
    record(flop=2 * N * n1 * n2, floor=(sizes[:3], N, ("delta",)))


def test_weight_grads(timed, record, config, backend):
    N, n1, n2 = second_layer(config)
    W = draw(backend, n1, n2)
    timed(f"weight_grads[{config}]", synchronized(
        backend, backend.weight_grads, draw(backend, N, n1), draw(backend, N, n2), W, 0.0,
        backend.empty((n1, n2), np.float32), backend.empty((n2,), np.float32)))
    record(flop=2 * N * n1 * n2, floor=((n1, n2), N, ("weights",)))


def test_output_forward(timed, record, config, backend):
    sizes, N = CONFIGS[config]
    n1, n2 = sizes[-2], sizes[-1]
    z, a = backend.empty((N, n2), np.float32), backend.empty((N, n2), np.float32)
    timed(f"output_forward[{config}]", synchronized(
        backend, backend.linear_forward, draw(backend, N, n1), draw(backend, n1, n2),
        draw(backend, n2), SOFTMAX, 0.0, z, a))
    record(flop=2 * N * n1 * n2, floor=((n1, n2), N, ("forward",)))


def test_output_delta_loss(timed, record, config, backend):
    sizes, N = CONFIGS[config]
    rng = np.random.default_rng(0)
    z = rng.standard_normal((N, sizes[-1])).astype(np.float32)
    a = np.exp(z - z.max(axis=1, keepdims=True))
    a /= a.sum(axis=1, keepdims=True)
    y = np.eye(sizes[-1], dtype=np.float32)[rng.integers(0, sizes[-1], N)]
    z, a, y = (backend.asarray(v) for v in (z, a, y))
    delta, loss_acc = backend.empty(z.shape, np.float32), backend.zeros((1,), np.float32)
    timed(f"output_delta_loss[{config}]", synchronized(
        backend, backend.output_delta_loss, z, a, y, CROSS_ENTROPY, SOFTMAX, 0.0, 1.0 / N,
        delta, loss_acc))
    record(nbytes=4 * z.size * 4)


@pytest.mark.parametrize("optimizer", list(UPDATE_VECTORS))
def test_update(timed, record, config, backend, optimizer):
    sizes, _ = CONFIGS[config]
    n_params = sum((n_in + 1) * n_out for n_in, n_out in zip(sizes[:-1], sizes[1:]))
    opt = make_optimizer(optimizer, backend, n_params, "float32", 1e-6, 0.9)
    params, grads = draw(backend, n_params), draw(backend, n_params, seed=1)
    timed(f"{optimizer}_update[{config}]", synchronized(backend, opt.step, params, grads))
    record(nbytes=UPDATE_VECTORS[optimizer] * n_params * 4)
