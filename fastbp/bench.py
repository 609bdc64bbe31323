"""``fastbp bench``: every backend timed on identical work, side by side.

What one measurement is
-----------------------
A *round* is one epoch of :meth:`fastbp.MLP.fit` over ``steps`` batches of synthetic data
(random normal features, random class labels; ReLU hidden layers, softmax + cross-entropy,
plain SGD, shuffle off, no validation, ``verbose=0``), the same host arrays for every backend.
Its time is the epoch's wall time as ``fit`` records it (``History.seconds``): from the first
batch to the read of the epoch's loss, which is a device synchronisation, so queued GPU work is
inside the timed region; what a ``fit`` call does once (checking ``X`` and ``y``, copying them to
the device) is not charged to the steps. ms/step is that time over ``steps``.

Beside the backends, on the same shapes:

- the **GEMM floor**: ``backend.matmul`` of exactly the step's GEMMs -- ``a_{l-1} @ W_l`` and
  ``a_{l-1}.T @ delta_l`` for every layer, ``delta_l @ W_l.T`` for every layer but the first,
  in the step's order and sharing buffers as the step does (:func:`step_gemms`) -- ``steps``
  times, then ``synchronize()``; on NumPy's BLAS for the host backends and on CuPy (cuBLAS)
  for the GPU one. A step that runs these GEMMs cannot beat it;
- **PyTorch** (``--compare-torch``): ``nn.Sequential`` of ``Linear``/``ReLU``,
  ``CrossEntropyLoss``, ``optim.SGD``, eager, on the GPU when one answers (TF32 off), else on the
  CPU with as many threads as NumPy's BLAS, in a worker process of its own (its OpenMP threads
  would otherwise share this process, and the wait policy Numba's kernels set, with ours);
  it times its own epoch, ending with ``torch.cuda.synchronize()`` on a GPU.

Every runner first runs ``warmup`` rounds (compiling Numba kernels, filling caches and memory
pools), then ``repeats`` rounds, the runners taking turns round-robin -- and the turn order
rotating each repeat -- so that the drift of a shared machine falls on all of them alike.
Rounds moving into or out of PyTorch's process wait :data:`SETTLE_SECONDS` first.

GFLOP/s counts the nominal ``6 N sum_l n_{l-1} n_l`` flops of a step (three GEMMs per layer,
batch ``N``). "% floor" is the GEMM floor's time over the runner's: 100% would be a step that
costs nothing but its GEMMs.
"""

from __future__ import annotations

import datetime
import importlib.util
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from . import __version__
from .argtypes import figure_file, output_file
from .backend import backend_names, get_backend, probe
from .files import atomic_write_text, save_figure

EXTRA_HINT = "pip install 'fastbp[bench]'"


@dataclass(frozen=True)
class Case:
    """One network and batch size to time: layer sizes (input first), batch size ``N`` and the
    batches per timed epoch (``steps``)."""

    name: str
    sizes: tuple
    batch: int
    steps: int

    @property
    def gflop(self) -> float:
        """Nominal GFLOP of one training step: ``6 N sum_l n_{l-1} n_l``."""
        return step_flops(self.sizes, self.batch) / 1e9

    @property
    def shape(self) -> str:
        return "-".join(map(str, self.sizes))


#: the standard configs: (layer sizes, batch size); "xlarge" is meant for a GPU
CONFIGS = {
    "small": ((784, 256, 256, 10), 256),
    "mid": ((784, 1024, 1024, 10), 512),
    "large": ((784, 2048, 2048, 2048, 10), 1024),
    "xlarge": ((784, 4096, 4096, 4096, 10), 4096),
}
DEFAULT_CONFIGS = ("small", "mid")
GPU_DEFAULT_CONFIGS = ("small", "mid", "large", "xlarge")
#: the config a sweep varies when --configs does not name one
SWEEP_CONFIG = "mid"
#: seconds a sweep may take unless --budget says otherwise
SWEEP_BUDGET = 180.0
SWEEPS = {"batch": [2 ** k for k in range(5, 14)], "width": [2 ** k for k in range(6, 13)]}
#: backends that only simulate a device (correct, far too slow to time)
SIMULATORS = ("cupy-sim",)
#: the default steps per round aim at this much work, within [MIN_STEPS, MAX_STEPS]
ROUND_GFLOP = 50.0
MIN_STEPS, MAX_STEPS = 2, 64
LR = 1e-3
#: pause when the rounds move between processes: OpenBLAS threads spin ~0.1 s before sleeping
SETTLE_SECONDS = 0.25
#: the floor of a device: which backend's matmul (its GEMM provider names the row)
FLOORS = {"host": "numpy", "gpu": "cupy"}
#: the row of NumPy's own BLAS, shown beside a host floor on another provider (MKL)
NUMPY_FLOOR = "GEMM floor (numpy BLAS)"


def step_flops(sizes, batch) -> int:
    """``6 N sum_l n_{l-1} n_l``: forward, weight-gradient and delta GEMMs of every layer."""
    return 6 * batch * sum(n_in * n_out for n_in, n_out in zip(sizes[:-1], sizes[1:]))


def default_steps(sizes, batch) -> int:
    """Batches per timed epoch: about :data:`ROUND_GFLOP` of work, within
    [:data:`MIN_STEPS`, :data:`MAX_STEPS`]."""
    return min(MAX_STEPS, max(MIN_STEPS, round(ROUND_GFLOP * 1e9 / step_flops(sizes, batch))))


# -- the GEMMs of a step ---------------------------------------------------------------------

GEMM_KINDS = ("forward", "weights", "delta")


def step_gemms(backend, sizes, batch, dtype, kinds=GEMM_KINDS, seed=0) -> list:
    """``(a, b, out)`` for ``backend.matmul`` of every GEMM of one training step, in the step's
    order and sharing buffers as the step does: "forward" ``a_{l-1} @ W_l -> z_l`` for
    ``l = 1..L``, then for ``l = L..1`` "weights" ``a_{l-1}.T @ delta_l -> dW_l`` and, but for the
    first layer (the input needs no delta), "delta" ``delta_l @ W_l.T -> delta_{l-1}``. Only
    the GEMMs of ``kinds`` are kept. Operands are drawn on the host and copied to the device."""
    rng = np.random.default_rng(seed)

    def draw(*shape, scale=1.0):
        return backend.asarray((scale * rng.standard_normal(shape)).astype(dtype))

    layers = list(zip(sizes[:-1], sizes[1:]))
    a = [draw(batch, n_in) for n_in, _ in layers]
    W = [draw(n_in, n_out, scale=n_in ** -0.5) for n_in, n_out in layers]
    delta = [draw(batch, n_out) for _, n_out in layers]
    z = [backend.empty((batch, n_out), dtype) for _, n_out in layers]
    dW = [backend.empty(w.shape, dtype) for w in W]
    gemms = [("forward", a[l], W[l], z[l]) for l in range(len(layers))]
    for l in reversed(range(len(layers))):
        gemms.append(("weights", a[l].T, delta[l], dW[l]))
        if l > 0:
            gemms.append(("delta", delta[l], W[l].T, delta[l - 1]))
    return [(x, y, out) for kind, x, y, out in gemms if kind in kinds]


def gemm_flops(gemms) -> int:
    """``2 m k n`` summed over the GEMMs ``(a, b, out)``, ``a`` of shape ``(m, k)``."""
    return sum(2 * a.shape[0] * a.shape[1] * b.shape[1] for a, b, _ in gemms)


def device_of(backend) -> str:
    """"host" for a backend on NumPy arrays, "gpu" otherwise: whose GEMM floor applies."""
    return "host" if backend.xp is np else "gpu"


def floor_backend(backend):
    """The backend whose ``matmul`` is the GEMM floor of ``backend``'s device."""
    return get_backend(FLOORS[device_of(backend)])


def gemm_provider(device: str) -> str:
    """The name of the library behind the GEMM floor of ``device`` (``numpy``, ``mkl``,
    ``cupy``)."""
    gemms = getattr(get_backend(FLOORS[device]), "gemms", None)
    return gemms.fp32.name if gemms is not None else FLOORS[device]


def floor_label(device: str) -> str:
    """The row label of ``device``'s GEMM floor, naming the provider."""
    return f"GEMM floor ({gemm_provider(device)})"


def run_gemms(backend, gemms, times=1, matmul=None):
    """``backend.matmul`` (or ``matmul``) over ``gemms``, ``times`` times, then
    ``backend.synchronize()``."""
    matmul = matmul or backend.matmul
    for _ in range(times):
        for a, b, out in gemms:
            matmul(a, b, out)
    backend.synchronize()


# -- runners: each times one round of a case ---------------------------------------------------

@dataclass
class Runner:
    """One column of the comparison: ``label``, the ``device`` whose GEMM floor it is compared
    with ("host" or "gpu"), and ``kind`` ("backend", "torch" or "floor"). ``make(case, data)``
    returns the callable that runs one round of ``case`` and returns its seconds."""

    label: str
    device: str
    kind: str
    make: Callable


def synthetic_data(case: Case, dtype):
    """``steps`` batches of random normal features and random class labels (host arrays)."""
    rng = np.random.default_rng(0)
    n = case.batch * case.steps
    X = rng.standard_normal((n, case.sizes[0])).astype(dtype)
    return X, rng.integers(0, case.sizes[-1], n)


def backend_runner(name: str, dtype, precision: str = "highest") -> Runner:
    """A fastbp backend timed through ``MLP.fit`` (see the module doc for what is timed), at
    GEMM ``precision`` (labelled ``"<name> bf16"`` when not the default)."""
    from .model import MLP

    def make(case, data):
        X, y = data
        net = MLP(list(case.sizes), activation="relu", output="softmax", loss="cross_entropy",
                  backend=name, dtype=dtype, seed=0)
        options = dict(epochs=1, batch_size=case.batch, lr=LR, optimizer="sgd", shuffle=False,
                       verbose=0, precision=precision)
        return lambda: net.fit(X, y, **options).seconds[-1]

    label = name if precision == "highest" else f"{name} {precision}"
    return Runner(label, device_of(get_backend(name)), "backend", make)


def gemm_floor_runner(label, device, dtype, matmul=None) -> Runner:
    """The step's GEMMs alone, ``steps`` times, synchronised, on ``device``'s floor backend:
    through its provider, or through ``matmul``."""
    backend = get_backend(FLOORS[device])

    def make(case, _data):
        gemms = step_gemms(backend, case.sizes, case.batch, dtype)

        def round_seconds():
            start = time.perf_counter()
            run_gemms(backend, gemms, case.steps, matmul)
            return time.perf_counter() - start
        return round_seconds

    return Runner(label, device, "floor", make)


def floor_runner(device: str, dtype) -> Runner:
    """The GEMM floor of ``device``, on the GEMM provider its backends use."""
    return gemm_floor_runner(floor_label(device), device, dtype)


def numpy_floor_runner(dtype) -> Runner:
    """The host GEMM floor on NumPy's own BLAS (``np.matmul``), whatever the provider."""
    return gemm_floor_runner(NUMPY_FLOOR, "host", dtype,
                             lambda a, b, out: np.matmul(a, b, out=out))


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


class TorchWorker:
    """PyTorch in a process of its own; :meth:`epoch` asks it to time one round of a case."""

    def __init__(self, threads: int):
        env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
        self.errors = tempfile.TemporaryFile(mode="w+")
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "from fastbp.bench import torch_worker; torch_worker()",
             str(threads)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.errors,
            text=True, env=env)
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
    :func:`backend_runner`."""
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


# -- measuring ------------------------------------------------------------------------------

@dataclass
class CaseResult:
    """The ms per step of every runner on one case, one sample per repeat."""

    case: Case
    runners: dict  # label -> Runner
    ms: dict = field(default_factory=dict)  # label -> [ms per step, ...]

    def median(self, label) -> float | None:
        return statistics.median(self.ms[label]) if label in self.ms else None

    def metrics(self, label) -> dict:
        """ms/step (median, min, max), samples/s, GFLOP/s, speed-up over numpy, % of floor."""
        ms = self.ms[label]
        median = statistics.median(ms)
        numpy_ms = self.median("numpy")
        floor_ms = self.median(floor_label(self.runners[label].device))
        return {"ms_median": median, "ms_min": min(ms), "ms_max": max(ms),
                "samples_per_s": self.case.batch / median * 1e3,
                "gflops": self.case.gflop / median * 1e3,
                "speedup_vs_numpy": numpy_ms / median if numpy_ms else None,
                "pct_of_floor": 100 * floor_ms / median if floor_ms else None}


def measure_case(case, runners, dtype, repeats, warmup, bar) -> CaseResult:
    """Warm every runner up, then time ``repeats`` rounds each, round-robin; the turn order
    rotates by one each repeat so that no runner always goes first. Before a round in another
    process than the last one (PyTorch's worker), wait :data:`SETTLE_SECONDS`: idle BLAS and
    OpenMP threads spin for a while before they sleep, and would steal the cores."""
    data = synthetic_data(case, dtype)
    rounds = {r.label: r.make(case, data) for r in runners}
    by_label = {r.label: r for r in runners}
    labels = list(rounds)
    result = CaseResult(case, by_label, {label: [] for label in labels})
    in_worker = False
    for repeat in range(-warmup, repeats):
        shift = repeat % len(labels)
        for label in labels[shift:] + labels[:shift]:
            bar.set_description(f"{case.name}: {label}")
            if (by_label[label].kind == "torch") != in_worker:
                in_worker = not in_worker
                time.sleep(SETTLE_SECONDS)
            seconds = rounds[label]()
            if repeat >= 0:
                result.ms[label].append(seconds / case.steps * 1e3)
            bar.update()
    return result


def measure(plan, runners) -> list[CaseResult]:
    """Every case of ``plan`` in order, stopping before a case whose expected time (the last
    case's, scaled by the work) would overrun ``plan.budget`` seconds (a sweep's, by default)."""
    from tqdm.auto import tqdm

    results, spent, last = [], 0.0, None
    per_case = len(runners) * (plan.warmup + plan.repeats)
    with tqdm(total=per_case * len(plan.cases), unit="round", leave=False,
              dynamic_ncols=True, disable=None) as bar:
        for case in plan.cases:
            if last is not None and plan.budget is not None:
                expected = last[1] * (case.gflop * case.steps) / (last[0].gflop * last[0].steps)
                if spent + expected > plan.budget:
                    bar.write(f"stopped before {case.name}: it would take about "
                              f"{expected:.0f} s more than --budget {plan.budget:g} s allows")
                    break
            start = time.perf_counter()
            results.append(measure_case(case, runners, plan.dtype, plan.repeats, plan.warmup,
                                        bar))
            last = (case, time.perf_counter() - start)
            spent += last[1]
    return results


# -- the plan: what the flags ask for ---------------------------------------------------------

@dataclass
class Plan:
    """The validated request: cases in order, backends to time, those skipped and why."""

    cases: list
    backends: list
    skipped: dict
    dtype: str
    repeats: int
    warmup: int
    sweep: str | None
    budget: float | None
    torch: bool
    bf16: bool = False


def names_list(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def select_backends(text: str | None) -> tuple[list, dict]:
    """``(usable names, {skipped name: why})`` for ``--backends`` (default: every usable
    backend but the simulators). An unregistered name is a ValueError."""
    registered = backend_names()
    names = names_list(text) if text is not None else [
        n for n in registered if n not in SIMULATORS]
    unknown = [n for n in names if n not in registered]
    if unknown or not names:
        raise ValueError(f"--backends must list some of {', '.join(registered)}, got "
                         f"{', '.join(map(repr, unknown)) if unknown else repr(text)}")
    usable = [n for n in dict.fromkeys(names) if probe(n)[0]]
    return usable, {n: probe(n)[1] for n in dict.fromkeys(names) if n not in usable}


def parse_config(item: str) -> tuple[str, tuple, int]:
    """``(name, sizes, batch)`` of a config name or of a ``SIZES@BATCH`` spec such as
    ``784-512-10@128``."""
    if item in CONFIGS:
        return (item, *CONFIGS[item])
    sizes, _, batch = item.partition("@")
    try:
        numbers = [int(s) for s in sizes.split("-")] + [int(batch)]
    except ValueError:
        numbers = []
    if len(numbers) < 3 or min(numbers) < 1:
        raise ValueError(f"--configs: {item!r} is neither a config ({', '.join(CONFIGS)}) nor "
                         f"SIZES@BATCH like 784-512-10@128")
    return item, tuple(numbers[:-1]), numbers[-1]


def make_cases(args, backends) -> list[Case]:
    """The cases to time: the configs, or the points of a sweep over one config."""
    if args.configs is not None:
        configs = [parse_config(item) for item in names_list(args.configs)]
    elif args.sweep:
        configs = [parse_config(SWEEP_CONFIG)]
    else:
        names = GPU_DEFAULT_CONFIGS if "cupy" in backends else DEFAULT_CONFIGS
        configs = [parse_config(name) for name in names]
    if not configs:
        raise ValueError("--configs must name at least one config")
    if not args.sweep:
        return [Case(name, sizes, batch, args.steps or default_steps(sizes, batch))
                for name, sizes, batch in configs]
    if len(configs) != 1:
        raise ValueError(f"--sweep varies one config; --configs names {len(configs)}")
    _, sizes, batch = configs[0]
    return sweep_cases(args, sizes, batch)


def sweep_cases(args, sizes, batch) -> list[Case]:
    """The points of ``--sweep batch`` (the batch size) or ``--sweep width`` (every hidden
    layer's width) of the network ``sizes`` at ``batch``, in increasing order of work."""
    values = sorted(set(int_values(args.values))) if args.values else SWEEPS[args.sweep]
    cases = []
    for value in values:
        if args.sweep == "batch":
            point_sizes, point_batch = sizes, value
        else:
            point_sizes, point_batch = (sizes[0], *[value] * (len(sizes) - 2), sizes[-1]), batch
        cases.append(Case(f"{args.sweep} {value}", point_sizes, point_batch,
                          args.steps or default_steps(point_sizes, point_batch)))
    return cases


def int_values(text: str) -> list[int]:
    try:
        values = [int(v) for v in names_list(text)]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        raise ValueError(f"--values must be positive integers like 32,64,128, got {text!r}")
    return values


def check_count(value, flag, low):
    if value is not None and value < low:
        raise ValueError(f"{flag} must be at least {low}, got {value}")


def make_plan(args) -> Plan:
    """Validate every flag before anything runs; a ValueError names the flag."""
    check_count(args.repeats, "--repeats", 1)
    check_count(args.warmup, "--warmup", 0)
    check_count(args.steps, "--steps", 1)
    if args.budget is not None and args.budget <= 0:
        raise ValueError(f"--budget must be positive seconds, got {args.budget}")
    if args.values and not args.sweep:
        raise ValueError("--values gives the points of a --sweep; add --sweep batch|width")
    backends, skipped = select_backends(args.backends)
    cases = make_cases(args, backends)
    if args.plot:
        require("matplotlib", "--plot")
    if not backends:
        raise RuntimeError("no backend left to time: " + "; ".join(
            f"{name}: {why}" for name, why in skipped.items()))
    budget = (args.budget or SWEEP_BUDGET) if args.sweep else args.budget
    if args.bf16 and args.dtype != "float32":
        raise ValueError(f"--bf16 times float32 networks, got --dtype {args.dtype}")
    return Plan(cases, backends, skipped, args.dtype, args.repeats, args.warmup, args.sweep,
                budget, args.compare_torch, args.bf16)


def require(module: str, flag: str):
    """An ImportError naming the extra to install when ``module`` is missing."""
    if importlib.util.find_spec(module) is None:
        raise ImportError(f"{flag} needs {module}: {EXTRA_HINT}")


# -- reporting ------------------------------------------------------------------------------

def numpy_blas() -> list[dict]:
    """NumPy's BLAS (threadpoolctl): library, version, kernel architecture, threads. Other
    packages may load BLAS libraries of their own; NumPy's is the one that sits in NumPy's
    install (a wheel), else every BLAS found."""
    from threadpoolctl import threadpool_info

    pools = [p for p in threadpool_info() if p["user_api"] == "blas"]
    mine = [p for p in pools if p["filepath"].startswith(os.path.dirname(np.__file__))]
    return [{key: p.get(key) for key in ("internal_api", "version", "architecture",
                                          "num_threads")} for p in mine or pools]


def host_gemms() -> dict:
    """The host backends' GEMM providers and why they were chosen."""
    gemms = getattr(get_backend("numpy"), "gemms", None)
    return gemms.describe() if gemms is not None else {}


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(plan, torch_info) -> dict:
    """Where the numbers come from: CPU, cores, BLAS, versions, each backend's settings."""
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "platform": platform.platform(),
            "python": platform.python_version(), "numpy": np.__version__,
            "blas": numpy_blas(), "gemm": host_gemms(),
            "backends": {name: get_backend(name).describe() for name in plan.backends},
            "torch": torch_info}


def rounded(value, digits=4):
    """``value`` to ``digits`` significant digits (JSON stays short)."""
    if value is None or value == 0:
        return value
    return round(value, digits - 1 - int(math.floor(math.log10(abs(value)))))


def as_json(plan, results, machine) -> dict:
    """The results file: machine, settings, skipped backends, and per case every runner's
    metrics and ms/step samples."""
    return {
        "fastbp": __version__,
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": machine,
        "settings": {"dtype": plan.dtype, "repeats": plan.repeats, "warmup": plan.warmup,
                     "sweep": plan.sweep, "optimizer": "sgd", "activation": "relu",
                     "output": "softmax", "loss": "cross_entropy"},
        "skipped": plan.skipped,
        "cases": [{"name": r.case.name, "sizes": list(r.case.sizes), "batch": r.case.batch,
                   "steps": r.case.steps, "gflop_per_step": rounded(r.case.gflop),
                   "runners": {label: {**{k: rounded(v) for k, v in r.metrics(label).items()},
                                       "ms_samples": [rounded(v) for v in r.ms[label]]}
                               for label in r.ms}}
                  for r in results],
    }


def format_case(result: CaseResult) -> list[str]:
    """One block of the table: a header line, then a row per runner."""
    case = result.case
    lines = [f"{case.name}: {case.shape}, batch {case.batch}, {case.steps} steps/epoch, "
             f"{case.gflop:.3g} GFLOP/step",
             f"  {'':22}{'ms/step':>9}  {'min-max':>15}{'samples/s':>11}{'GFLOP/s':>9}"
             f"{'vs numpy':>10}{'% floor':>9}"]
    for label in result.ms:
        m = result.metrics(label)
        speedup = f"{m['speedup_vs_numpy']:.2f}x" if m["speedup_vs_numpy"] else "-"
        floor = f"{m['pct_of_floor']:.0f}%" if m["pct_of_floor"] else "-"
        spread = f"{m['ms_min']:.4g}-{m['ms_max']:.4g}"
        lines.append(f"  {label:22}{m['ms_median']:>9.4g}  {spread:>15}"
                     f"{m['samples_per_s']:>11,.0f}{m['gflops']:>9.1f}{speedup:>10}{floor:>9}")
    return lines


def format_table(results, machine) -> str:
    pools = ", ".join(f"{p['internal_api']} {p['version']} ({p['architecture']}, "
                      f"{p['num_threads']} threads)" for p in machine["blas"])
    lines = [f"{machine['cpu']}, {machine['cores']} cores; NumPy's BLAS: "
             f"{pools or 'none found'}"]
    gemms = machine.get("gemm") or {}
    if gemms:
        lines.append(f"GEMM provider: {gemms['gemm']} ({gemms['gemm_reason']}); bf16: "
                     f"{gemms['gemm_bf16']} ({gemms['gemm_bf16_reason']})")
    for result in results:
        lines += [""] + format_case(result)
    lines += ["", "ms/step: median over the repeats (min-max beside it); GFLOP/s: 6 N sum "
              "n_in n_out per step; % floor: the GEMM floor's time over the runner's"]
    return "\n".join(lines)


def bf16_backends(plan) -> list[str]:
    """The backends of ``plan`` that offer ``precision="bf16"``; the others land in
    ``skipped`` with the reason."""
    offering = []
    for name in plan.backends:
        backend = get_backend(name)
        if "bf16" in backend.precisions:
            offering.append(name)
        else:
            why = getattr(backend, "unavailable_precisions", {}).get("bf16", "not offered")
            plan.skipped[f"{name} bf16"] = why
    return offering


def order_runners(backends, torch_columns, dtype, bf16=()) -> list[Runner]:
    """The backends, their bf16 runs (``bf16``: the backends to time at precision bf16), then
    PyTorch (``torch_columns``), then the GEMM floor of every device they run on (a GPU's only
    with the cupy backend), and NumPy's BLAS floor beside a host floor on another provider."""
    runners = [backend_runner(name, dtype) for name in backends]
    runners += [backend_runner(name, dtype, "bf16") for name in bf16]
    runners += list(torch_columns)
    devices = dict.fromkeys(r.device for r in runners)
    usable_floors = [d for d in devices if d == "host" or "cupy" in backends]
    floors = [floor_runner(device, dtype) for device in usable_floors]
    if "host" in usable_floors and gemm_provider("host") != "numpy":
        floors.append(numpy_floor_runner(dtype))
    return runners + floors


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


def run(args):
    """``fastbp bench``: validate, time, print the table, write the JSON and the plot."""
    plan = make_plan(args)
    worker = start_torch(plan)
    bf16 = bf16_backends(plan) if plan.bf16 else []
    for name, why in plan.skipped.items():
        print(f"skipped {name}: {why}")
    try:
        torch_columns = [torch_runner(worker, plan.dtype, autocast)
                         for autocast in ((False, True) if plan.bf16 else (False,))
                         ] if worker else []
        results = measure(plan, order_runners(plan.backends, torch_columns, plan.dtype, bf16))
    finally:
        if worker is not None:
            worker.close()
    machine = machine_info(plan, worker.info if worker else None)
    print(format_table(results, machine))
    if args.json:
        atomic_write_text(args.json,
                          json.dumps(as_json(plan, results, machine), indent=1) + "\n")
        print(f"wrote {args.json}")
    if args.plot:
        if plan.sweep:
            plot_sweep(plan, results, machine, args.plot)
        else:
            plot_configs(results, machine, args.plot)
        print(f"wrote {args.plot}")
    return results


# -- figures --------------------------------------------------------------------------------

def figure_title(machine) -> str:
    blas = next((f"{p['internal_api']} {p['version']}" for p in machine["blas"]),
                "no BLAS found")
    return f"{machine['cpu']} ({machine['cores']} cores, {blas}), {datetime.date.today()}"


def runner_style(runner: Runner, index: int) -> dict:
    """Colours by runner; the GEMM floors grey and hatched (bars) or dashed (lines)."""
    if runner.kind == "floor":
        return {"color": "0.55" if runner.device == "host" else "0.3", "floor": True}
    return {"color": f"C{index}", "floor": False}


def styles(results) -> dict:
    labels = dict.fromkeys(label for r in results for label in r.ms)
    runners = {label: r.runners[label] for r in results for label in r.ms}
    return {label: runner_style(runners[label], i) for i, label in enumerate(labels)}


def plot_configs(results, machine, path):
    """Grouped bars, one group per config: GFLOP/s of every runner (higher is better), each
    bar labelled with its ms/step; whiskers span the repeats' min..max."""
    from .plots import new_figure

    style = styles(results)
    fig = new_figure(figsize=(max(6.0, 1.0 + 1.1 * len(style) * len(results)), 5.0))
    ax = fig.add_subplot()
    width = 0.8 / len(style)
    for i, (label, st) in enumerate(style.items()):
        xs, heights, errors, texts = [], [], [[], []], []
        for g, result in enumerate(results):
            if label not in result.ms:
                continue
            m = result.metrics(label)
            low = result.case.gflop / m["ms_max"] * 1e3
            high = result.case.gflop / m["ms_min"] * 1e3
            xs.append(g + (i - (len(style) - 1) / 2) * width)
            heights.append(m["gflops"])
            errors[0].append(m["gflops"] - low)
            errors[1].append(high - m["gflops"])
            texts.append(f"{m['ms_median']:.3g} ms")
        bars = ax.bar(xs, heights, width * 0.92, yerr=errors, capsize=3, label=label,
                      color=st["color"], hatch="//" if st["floor"] else None,
                      edgecolor="white" if st["floor"] else None, error_kw={"lw": 1})
        ax.bar_label(bars, texts, padding=3, fontsize=8, rotation=90 if len(style) > 4 else 0)
    ax.set_xticks(range(len(results)), [case_label(r.case) for r in results])
    ax.set_ylabel("GFLOP/s  (higher is better)")
    ax.margins(y=0.2)
    ax.grid(True, axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    rows = math.ceil(len(style) / 4)
    ax.legend(loc="upper left", ncols=math.ceil(len(style) / rows), fontsize=9)
    ax.set_title(f"Training-step throughput through fit (bar labels: ms/step)\n"
                 f"{figure_title(machine)}", fontsize=10)
    save_figure(fig, path, dpi=120)


def case_label(case: Case) -> str:
    """``name / layer sizes / batch`` on three lines (a SIZES@BATCH name is not repeated)."""
    lines = [f"{case.shape}", f"batch {case.batch}"]
    return "\n".join(lines if case.name == f"{case.shape}@{case.batch}" else [case.name, *lines])


def plot_sweep(plan, results, machine, path):
    """ms/step and GFLOP/s against the swept batch size or width, every runner on the same
    log-log axes, so that where each saturates and where one overtakes another shows."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter, NullLocator

    from .plots import new_figure

    xs = [r.case.batch if plan.sweep == "batch" else r.case.sizes[1] for r in results]
    fig = new_figure(figsize=(12, 5))
    panels = fig.subplots(1, 2)
    for label, st in styles(results).items():
        points = [(x, r.metrics(label)) for x, r in zip(xs, results) if label in r.ms]
        line = dict(color=st["color"], linestyle="--" if st["floor"] else "-", marker="o",
                    markersize=4, label=label)
        panels[0].plot([x for x, _ in points], [m["ms_median"] for _, m in points], **line)
        panels[1].plot([x for x, _ in points], [m["gflops"] for _, m in points], **line)
    fixed = results[0].case
    if plan.sweep == "batch":
        swept, setup = "batch size N", f"layers {fixed.shape}"
    else:
        hidden = "-".join(["W"] * (len(fixed.sizes) - 2))
        swept, setup = "hidden width W", f"{fixed.sizes[0]}-{hidden}-{fixed.sizes[-1]}, " \
                                         f"batch {fixed.batch}"
    for ax, ylabel in zip(panels, ("ms per step  (lower is better)",
                                   "GFLOP/s  (higher is better)")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(xs, [str(x) for x in xs])
        ax.xaxis.set_minor_locator(NullLocator())
        low, high = ax.get_ylim()
        subs = (1, 2, 5) if high / low > 30 else (1, 1.5, 2, 3, 4, 5, 7)
        ax.yaxis.set_major_locator(LogLocator(subs=subs))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.yaxis.set_minor_formatter(NullFormatter())
        ax.set(xlabel=swept, ylabel=ylabel)
        ax.grid(True, which="both", alpha=0.3)
    panels[0].legend(loc="upper left", fontsize=9)
    fig.suptitle(f"Training step vs {swept} ({setup})\n{figure_title(machine)}", fontsize=11)
    save_figure(fig, path, dpi=120)


# -- the command line -----------------------------------------------------------------------

def configure_parser(parser):
    """The flags of ``fastbp bench`` on an argparse (sub)parser; returns it."""
    parser.add_argument("--configs", metavar="NAME[,NAME...]",
                        help="configs to time: " + "; ".join(
                            f"{name} {'-'.join(map(str, s))} batch {b}"
                            for name, (s, b) in CONFIGS.items())
                        + "; or SIZES@BATCH like 784-512-10@128 (default: small,mid; "
                        "all four when cupy is usable; a sweep varies mid)")
    parser.add_argument("--backends", metavar="NAME[,NAME...]",
                        help=f"backends to time, of {', '.join(backend_names())} (default: "
                        "every usable one; unusable ones are skipped with the reason)")
    parser.add_argument("--compare-torch", action="store_true",
                        help="add PyTorch (eager; CUDA when a GPU answers) on the same model")
    parser.add_argument("--bf16", action="store_true",
                        help="also time precision='bf16' on every backend that offers it (and "
                        "PyTorch's bf16 autocast, with --compare-torch)")
    parser.add_argument("--json", metavar="OUT.json", type=output_file("results (JSON)"),
                        help="write the results here")
    parser.add_argument("--plot", metavar="OUT.png", type=figure_file,
                        help="write a bar chart (or the sweep's log-log curves) here")
    parser.add_argument("--sweep", choices=sorted(SWEEPS),
                        help="time one config over batch sizes 32..8192 or hidden widths "
                        "64..4096 (powers of 2), within --budget")
    parser.add_argument("--values", metavar="N[,N...]",
                        help="the sweep's batch sizes or widths instead of the powers of 2")
    parser.add_argument("--budget", type=float, metavar="SECONDS",
                        help="skip the cases (sweep points) that would overrun this many "
                        f"seconds, judged by the last one (default: {SWEEP_BUDGET:g} for a "
                        "sweep, none otherwise)")
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32",
                        help="(default: float32)")
    parser.add_argument("--repeats", type=int, default=5,
                        help="timed epochs per runner and case (default: 5)")
    parser.add_argument("--warmup", type=int, default=1,
                        help="untimed epochs first (default: 1)")
    parser.add_argument("--steps", type=int,
                        help=f"batches per timed epoch (default: about {ROUND_GFLOP:g} GFLOP "
                        f"of work, {MIN_STEPS} to {MAX_STEPS})")
    return parser
