"""What ``fastbp bench`` times: the cases (network, batch, steps), the standard configs and
sweeps, a step's nominal FLOP count, and the flags validated into a :class:`Plan`."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass

from ..backend import backend_names, probe

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


def step_flops(sizes, batch) -> int:
    """``6 N sum_l n_{l-1} n_l``: forward, weight-gradient and delta GEMMs of every layer."""
    return 6 * batch * sum(n_in * n_out for n_in, n_out in zip(sizes[:-1], sizes[1:]))


def default_steps(sizes, batch) -> int:
    """Batches per timed epoch: about :data:`ROUND_GFLOP` of work, within
    [:data:`MIN_STEPS`, :data:`MAX_STEPS`]."""
    return min(MAX_STEPS, max(MIN_STEPS, round(ROUND_GFLOP * 1e9 / step_flops(sizes, batch))))


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
