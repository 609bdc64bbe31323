"""``fastbp bench`` on the command line: its flags, and :func:`run`, which validates them,
times, prints the table and writes the JSON and the plot."""

from __future__ import annotations

import json

from ..argtypes import figure_file, output_file
from ..backend import backend_names
from ..files import atomic_write_text
from .cases import CONFIGS, MAX_STEPS, MIN_STEPS, ROUND_GFLOP, SWEEP_BUDGET, SWEEPS, make_plan
from .figures import plot_configs, plot_sweep
from .measure import measure
from .report import as_json, format_table, machine_info
from .runners import bf16_backends, order_runners
from .torch_peer import start_torch, torch_runners


def run(args):
    """``fastbp bench``: validate, time, print the table, write the JSON and the plot."""
    plan = make_plan(args)
    worker = start_torch(plan)
    try:
        bf16 = bf16_backends(plan) if plan.bf16 else []
        torch_columns = torch_runners(worker, plan)
        for name, why in plan.skipped.items():
            print(f"skipped {name}: {why}")
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
