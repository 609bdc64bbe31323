"""What the pytest-benchmark suites ``test_ops.py`` and ``test_steps.py`` share.

A test that takes ``config`` and ``backend_name`` runs once per standard config (small and mid;
large, and xlarge on a GPU backend, with ``--bench-large``) and per backend usable here
(``fastbp.available_backends()`` without the CUDA simulator, which is correct but far too slow to
time). Each test names its ``benchmark.group`` after its work and config, so each group of the
report compares the backends on identical work. Every timed function ends with
``backend.synchronize()``, so queued GPU work is inside the measurement.

The ``record`` fixture adds to ``benchmark.extra_info``, from the median time: ``gflops``,
``gb_per_s`` for the memory-bound ops, and ``floor_fraction``: the time of the same GEMMs alone
(NumPy's BLAS for host backends, CuPy for the GPU) over the benchmark's, 1.0 being an op that
costs nothing beyond its GEMMs.

The other modules here (``test_numba_floor.py``, ``test_gpu_step.py``) use none of this.
"""

import time
from functools import cache

import pytest

import fastbp
from fastbp.bench.cases import SIMULATORS
from fastbp.bench.floor import device_of, floor_backend, run_gemms, step_gemms

CONFIGS = ("small", "mid")
LARGE_CONFIGS = ("large", "xlarge")
#: repeats of the floor measurement (the fastest counts), each at least FLOOR_MIN_SECONDS
FLOOR_TRIALS, FLOOR_MIN_SECONDS = 5, 0.005


def pytest_addoption(parser):
    parser.addoption("--bench-large", action="store_true", default=False,
                     help="fastbp benchmarks: also time the large config "
                     "(784-2048-2048-2048-10, batch 1024), and xlarge on a GPU backend")


def config_backend_pairs(pytest_config) -> list[tuple[str, str]]:
    """``(config, backend)`` to time; xlarge only on GPU backends."""
    configs = CONFIGS + (LARGE_CONFIGS if pytest_config.getoption("--bench-large") else ())
    backends = [n for n in fastbp.available_backends() if n not in SIMULATORS]
    return [(c, b) for c in configs for b in backends
            if c != "xlarge" or device_of(fastbp.get_backend(b)) == "gpu"]


def pytest_generate_tests(metafunc):
    if {"config", "backend_name"} <= set(metafunc.fixturenames):
        pairs = config_backend_pairs(metafunc.config)
        metafunc.parametrize("config, backend_name", pairs, ids=[f"{c}-{b}" for c, b in pairs])


@pytest.fixture
def backend(backend_name):
    return fastbp.get_backend(backend_name)


@pytest.fixture
def record(benchmark, backend, config, backend_name):
    """``record(flop=, nbytes=, floor=, floor_times=1)``: after the benchmark ran, GFLOP/s
    (``flop`` per call), GB/s (``nbytes`` moved per call) and the fraction of the GEMM floor
    into ``extra_info``; ``floor`` is ``(sizes, batch, kinds)``, the arguments of
    ``step_gemms`` that give the call's GEMMs, run ``floor_times`` times per call."""
    def write(flop=None, nbytes=None, floor=None, floor_times=1):
        benchmark.extra_info.update(config=config, backend=backend_name)
        if benchmark.stats is None:  # --benchmark-disable: nothing was timed
            return
        median = benchmark.stats.stats.median
        if flop:
            benchmark.extra_info["gflops"] = round(flop / median / 1e9, 2)
        if nbytes:
            benchmark.extra_info["gb_per_s"] = round(nbytes / median / 1e9, 2)
        if floor:
            seconds = floor_seconds(floor_backend(backend).name, *floor)
            benchmark.extra_info["floor_fraction"] = round(floor_times * seconds / median, 3)
    return write


@cache
def floor_seconds(floor_backend_name, sizes, batch, kinds) -> float:
    """Seconds of ``step_gemms(sizes, batch, kinds)`` alone on the floor backend: the
    fastest of :data:`FLOOR_TRIALS` timings, each repeating them long enough to read a clock."""
    be = fastbp.get_backend(floor_backend_name)
    gemms = step_gemms(be, sizes, batch, "float32", kinds)
    run_gemms(be, gemms)  # warm up
    start = time.perf_counter()
    run_gemms(be, gemms)
    times = max(1, int(FLOOR_MIN_SECONDS / max(time.perf_counter() - start, 1e-9)))
    best = float("inf")
    for _ in range(FLOOR_TRIALS):
        start = time.perf_counter()
        run_gemms(be, gemms, times)
        best = min(best, (time.perf_counter() - start) / times)
    return best


@pytest.fixture
def timed(benchmark):
    """``timed(group, call)``: benchmark ``call`` (which synchronises) in ``group``, after one
    untimed call that compiles or loads the Numba kernels and allocates the buffers."""
    def run(group, call):
        benchmark.group = group
        call()
        benchmark(call)
    return run
