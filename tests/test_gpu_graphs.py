"""Capturing whole training steps as CUDA graphs, as far as a machine without a GPU can go.

Numba's simulator has no streams or graphs, so :func:`fastbp.backends.graphs.capture` and
:class:`~fastbp.backends.graphs.StepRunner` run here against a stand-in of the few CuPy calls
they make (a stream that records what is launched while it captures, a graph that replays it,
CuPy's allocator hook). What the stand-in checks is fastbp's side of the protocol: nothing
allocates while capturing, every array the step touches is kept by the graph, the clock
ticks inside it, a failed capture leaves an eager runner and a reason. Whether CUDA accepts a
real capture is for ``benchmarks/gpu.sh`` on a device.
"""

import warnings
from types import SimpleNamespace

import numpy as np
import pytest

import fastbp
from fastbp.backends import graphs

pytestmark = pytest.mark.gpu


class FakeStream:
    """A stream that, between begin_capture and end_capture, records instead of running."""

    capturing = None

    def __init__(self, non_blocking=False):
        self.ptr = 42
        self.recorded = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        FakeStream.capturing = None

    def begin_capture(self):
        self.recorded = []
        FakeStream.capturing = self

    def end_capture(self):
        FakeStream.capturing = None
        return FakeGraph(self.recorded)


class FakeGraph:
    def __init__(self, work):
        self.work = work
        self.launches = 0

    def launch(self, stream):
        self.launches += 1
        for fn in self.work:
            fn()


def fake_cupy():
    """The CuPy calls graphs.py makes: Stream, get_current_stream, the allocator hook."""
    allocator = [lambda size: size]
    cuda = SimpleNamespace(Stream=FakeStream, get_current_stream=lambda: SimpleNamespace(ptr=0),
                           get_allocator=lambda: allocator[0],
                           set_allocator=lambda fn: allocator.__setitem__(0, fn))
    return SimpleNamespace(cuda=cuda, allocate=lambda size: allocator[0](size))


class FakeBackend:
    """Device work is a Python closure: run now, or recorded while a FakeStream captures.
    ``launch(fn, *arrays)`` is a kernel launch; the arrays go to the capture record."""

    def __init__(self):
        self.xp = fake_cupy()
        self.record = graphs.CaptureRecord()
        self.counter = np.zeros(1, np.int64)
        self.kernels = SimpleNamespace(clock=None, tick=lambda clock: self.launch(
            lambda: clock.counter.__setitem__(0, clock.counter[0] + 1), clock.counter))

    def launch(self, fn, *arrays):
        self.record.note(arrays)
        if FakeStream.capturing is not None:
            FakeStream.capturing.recorded.append(fn)
        else:
            fn()

    def capture_step(self, step_fn, clock):
        return graphs.capture(self.xp, self.record, step_fn, lambda: self.kernels.tick(clock))


def test_a_step_is_captured_on_the_second_call_and_replayed_after():
    be = FakeBackend()
    x = np.zeros(3)
    python_calls = []

    def step():
        python_calls.append(1)
        be.launch(lambda: x.__iadd__(1), x)

    clock = graphs.StepClock(np.zeros(1, np.int64))
    runner = graphs.StepRunner(be, step, clock, capture=True)
    for _ in range(5):
        runner()
    assert runner.captured and runner.reason is None
    assert len(python_calls) == 2  # eager, then the capture records the step once
    assert x.tolist() == [5.0] * 3  # 1 eager + 4 launches of the graph (the first on capture)
    assert clock.counter.tolist() == [5] and clock.host == 5
    assert runner.graph.launches == 4


def test_the_graph_keeps_every_array_its_step_touches():
    """A layer may drop a workspace (it keeps a few batch sizes): the graph must not lose it."""
    be = FakeBackend()
    buffers = [np.zeros(2) for _ in range(3)]

    def step():
        for buf in buffers:
            be.launch(lambda buf=buf: buf.__iadd__(1), buf)

    clock = graphs.StepClock(np.zeros(1, np.int64))
    runner = graphs.StepRunner(be, step, clock, capture=True)
    runner()
    runner()
    kept = {id(a) for a in runner.keep}
    assert {id(b) for b in buffers} | {id(clock.counter)} <= kept
    be.launch(lambda: None, np.zeros(1))  # after the capture nothing more is kept
    assert len(runner.keep) == len(buffers) + 1


def test_a_step_that_allocates_while_captured_is_refused_and_runs_eagerly():
    be = FakeBackend()
    x = np.zeros(1)

    def step():
        if FakeStream.capturing is not None:
            be.xp.allocate(256)  # a temporary: the pool would hand it out again
        be.launch(lambda: x.__iadd__(1), x)

    runner = graphs.StepRunner(be, step, graphs.StepClock(np.zeros(1, np.int64)), capture=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(4):
            runner()
    assert not runner.captured
    assert "allocated 256 bytes" in runner.reason
    assert len([w for w in caught if "capture failed" in str(w.message)]) == 1
    assert x[0] == 4  # every call ran eagerly (the second after its capture was abandoned)
    assert FakeStream.capturing is None  # the capture was ended: the stream is usable


def test_without_capture_the_runner_says_why(gpu_backend):
    runner = gpu_backend.step_runner(lambda: None, gpu_backend.step_clock())
    runner()
    runner()
    if gpu_backend.name == "cupy-sim":
        assert not runner.captured and "does not capture" in runner.reason


def test_the_simulated_backend_records_what_a_capture_would_keep(gpu_backend):
    """Every kernel launch and GEMM of the backend reports its arrays to the capture record."""
    be = gpu_backend
    x, W = be.asarray(np.ones((3, 2))), be.asarray(np.ones((2, 4)))
    z, a = be.empty((3, 4), np.float64), be.empty((3, 4), np.float64)
    b = be.zeros((4,), np.float64)
    with be.record.recording() as arrays:
        be.linear_forward(x, W, b, fastbp.kernels.codes.RELU, 0.0, z, a)
    kept = {id(arr) for arr in arrays}
    assert {id(x), id(W), id(z)} <= kept  # the GEMM's operands and output
    assert any(arr.shape == (4,) for arr in arrays)  # the bias, seen by the fused kernel


# -- on a device (benchmarks/gpu.sh runs these; the simulator skips them) ----------------------

@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "adam"])
def test_a_real_step_is_captured_and_replays_like_eager_steps(gpu_backend, optimizer):
    if gpu_backend.name == "cupy-sim":
        pytest.skip("the simulator has no CUDA graphs: benchmarks/gpu.sh runs this on a device")
    from fastbp.optim import make_optimizer

    rng = np.random.default_rng(0)
    X = rng.standard_normal((32, 6)).astype(np.float32)
    Y = np.eye(3, dtype=np.float32)[rng.integers(0, 3, 32)]
    params = []
    for capture in (True, False):
        net = fastbp.MLP([6, 8, 3], backend=gpu_backend, seed=0)
        be = gpu_backend
        Xb, Yb, acc = be.asarray(X), be.asarray(Y), be.zeros((1,), np.float32)
        opt = make_optimizer(optimizer, be, net.n_params, "float32", 0.01, 0.9)

        def step():
            net.forward_device(Xb, training=True)
            net.backward_device(Yb, 1.0 / 32, 0.0, acc)
            opt.apply(net.params, net.grads)

        runner = graphs.StepRunner(be, step, be.step_clock(), capture=capture)
        for _ in range(5):
            opt.advance()
            runner()
        assert runner.captured == capture, runner.reason
        params.append(be.to_numpy(net.params))
    np.testing.assert_allclose(params[0], params[1], rtol=1e-6, atol=1e-7)
