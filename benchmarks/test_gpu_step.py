"""Milliseconds per training step on the GPU: fastbp ``cupy`` against PyTorch and cuBLAS.

Same model, batches and arithmetic everywhere: float32 (no TF32), relu hidden layers, softmax
+ cross-entropy, plain SGD, batches taken in order from a training set resident on the device.

- ``fastbp-fit``: through ``MLP.fit`` (several epochs per call, the set copied to the device
  once per call, the loss read once per epoch);
- ``fastbp-graph``: fastbp's step (forward_device, backward_device, the optimizer) replayed from
  a CUDA graph by ``CupyBackend.step_runner``, the batch copied into fixed buffers first;
- ``torch-eager`` and ``torch-graph``: ``torch.nn`` with ``torch.optim.SGD``, eagerly and replayed
  from a ``torch.cuda.graph``;
- ``cublas-floor``: only the step's GEMMs (``cupy.matmul`` with the shapes and transposes of the
  step: forward, ``a_prev.T @ delta``, ``delta @ W.T``) — the floor no implementation can beat.

Every timed call ends with a device synchronisation. Run ``benchmarks/gpu.sh``; without a GPU
(or without pytest-benchmark) the whole module skips.
"""

import numpy as np
import pytest

pytest.importorskip("pytest_benchmark")
cupy = pytest.importorskip("cupy")
try:
    if cupy.cuda.runtime.getDeviceCount() < 1:
        raise RuntimeError("0 devices")
except Exception as exc:  # no driver, no device
    pytest.skip(f"no CUDA GPU answers: {exc}", allow_module_level=True)

CONFIGS = {  # name: (layer sizes, batch, batches per epoch, epochs per timed call)
    "small": ([784, 256, 256, 10], 256, 40, 5),
    "large": ([784, 4096, 4096, 4096, 10], 4096, 4, 5),
}
LR = 0.01


def steps_per_call(config):
    _, _, batches, epochs = CONFIGS[config]
    return batches * epochs


def problem(config):
    """Host float32 features and integer labels: ``batches`` batches of the config."""
    sizes, batch, batches, _ = CONFIGS[config]
    rng = np.random.default_rng(0)
    X = rng.standard_normal((batch * batches, sizes[0]), dtype=np.float32)
    return X, rng.integers(0, sizes[-1], batch * batches)


def device_name():
    return cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)["name"].decode()


def run(benchmark, config, impl, step_fn, steps):
    """Time ``step_fn`` (which runs ``steps`` steps and synchronises); record ms per step."""
    benchmark.extra_info.update(config=config, impl=impl, steps_per_call=steps,
                                device=device_name())
    benchmark.pedantic(step_fn, rounds=5, warmup_rounds=2, iterations=1)
    benchmark.extra_info["ms_per_step"] = benchmark.stats.stats.median * 1e3 / steps


def in_batches(config, step):
    """A call that runs ``step(lo, hi)`` over every batch of every epoch, then synchronises."""
    _, batch, batches, epochs = CONFIGS[config]

    def call():
        for _ in range(epochs):
            for lo in range(0, batch * batches, batch):
                step(lo, lo + batch)
        cupy.cuda.Device().synchronize()

    return call


@pytest.mark.parametrize("config", CONFIGS)
def test_fastbp_fit(benchmark, config):
    import fastbp

    sizes, batch, _, epochs = CONFIGS[config]
    X, y = problem(config)
    net = fastbp.MLP(sizes, activation="relu", backend="cupy", dtype="float32", seed=0)

    def call():
        net.fit(X, y, epochs=epochs, batch_size=batch, lr=LR, optimizer="sgd", shuffle=False,
                verbose=0)
        cupy.cuda.Device().synchronize()

    run(benchmark, config, "fastbp-fit", call, steps_per_call(config))


@pytest.mark.parametrize("config", CONFIGS)
def test_fastbp_graph(benchmark, config):
    import fastbp
    from fastbp.optim import make_optimizer

    sizes, batch, _, _ = CONFIGS[config]
    X, y = problem(config)
    net = fastbp.MLP(sizes, activation="relu", backend="cupy", dtype="float32", seed=0)
    be = net.backend
    X_dev = be.asarray(X, np.float32)
    Y_dev = be.asarray(np.eye(sizes[-1], dtype=np.float32)[y])
    Xb, Yb = be.empty((batch, sizes[0]), np.float32), be.empty((batch, sizes[-1]), np.float32)
    loss_acc = be.zeros((1,), np.float32)
    optimizer = make_optimizer("sgd", be, net.n_params, "float32", LR, 0.0)

    def one_step():
        net.forward_device(Xb, training=True)
        net.backward_device(Yb, 1.0 / batch, 0.0, loss_acc)
        optimizer.step(net.params, net.grads)

    runner = be.step_runner(one_step, be.step_clock())

    def step(lo, hi):
        be.copy(X_dev[lo:hi], Xb)
        be.copy(Y_dev[lo:hi], Yb)
        runner()

    run(benchmark, config, "fastbp-graph", in_batches(config, step), steps_per_call(config))
    benchmark.extra_info["graph"] = runner.graph is not None
    benchmark.extra_info["graph_failure"] = runner.reason


def torch_model(config):
    torch = pytest.importorskip("torch")
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    sizes = CONFIGS[config][0]
    layers = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        layers += [torch.nn.Linear(n_in, n_out), torch.nn.ReLU()]
    model = torch.nn.Sequential(*layers[:-1]).cuda()
    X, y = problem(config)
    return (torch, model, torch.optim.SGD(model.parameters(), lr=LR),
            torch.as_tensor(X, device="cuda"), torch.as_tensor(y, device="cuda"))


@pytest.mark.parametrize("config", CONFIGS)
def test_torch_eager(benchmark, config):
    torch, model, optimizer, X, y = torch_model(config)

    def step(lo, hi):
        loss = torch.nn.functional.cross_entropy(model(X[lo:hi]), y[lo:hi])
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    run(benchmark, config, "torch-eager", in_batches(config, step), steps_per_call(config))


@pytest.mark.parametrize("config", CONFIGS)
def test_torch_graph(benchmark, config):
    torch, model, optimizer, X, y = torch_model(config)
    batch = CONFIGS[config][1]
    static_x, static_y = X[:batch].clone(), y[:batch].clone()

    def body():
        loss = torch.nn.functional.cross_entropy(model(static_x), static_y)
        loss.backward()
        optimizer.step()

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm up outside the graph, as torch's recipe asks
        for _ in range(3):
            optimizer.zero_grad(set_to_none=True)
            body()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    optimizer.zero_grad(set_to_none=True)
    with torch.cuda.graph(graph):
        body()

    def step(lo, hi):
        static_x.copy_(X[lo:hi])
        static_y.copy_(y[lo:hi])
        graph.replay()

    run(benchmark, config, "torch-graph", in_batches(config, step), steps_per_call(config))


def step_gemms(config):
    """``(a, b, out)`` for every GEMM of one training step, transposes as the backend has them."""
    sizes, batch, _, _ = CONFIGS[config]
    rng = cupy.random.default_rng(0)

    def rand(*shape):
        return rng.standard_normal(shape, dtype=np.float32)

    gemms = []
    for l, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        a_prev, W, delta = rand(batch, n_in), rand(n_in, n_out), rand(batch, n_out)
        gemms.append((a_prev, W, cupy.empty((batch, n_out), np.float32)))  # forward
        gemms.append((a_prev.T, delta, cupy.empty((n_in, n_out), np.float32)))  # dW
        if l > 0:
            gemms.append((delta, W.T, cupy.empty((batch, n_in), np.float32)))  # delta below
    return gemms


@pytest.mark.parametrize("config", CONFIGS)
def test_cublas_floor(benchmark, config):
    gemms = step_gemms(config)

    def step(lo, hi):
        for a, b, out in gemms:
            cupy.matmul(a, b, out=out)

    run(benchmark, config, "cublas-floor", in_batches(config, step), steps_per_call(config))
