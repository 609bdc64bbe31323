"""What ``fastbp bench`` prints and writes: the machine the numbers come from, the JSON
results file and the text table."""

from __future__ import annotations

import datetime
import math
import os
import platform

import numpy as np

from .. import __version__
from ..backend import get_backend
from ..backends.gemm import cpuinfo
from .measure import CaseResult


def numpy_blas() -> list[dict]:
    """NumPy's BLAS (threadpoolctl): library, version, kernel architecture, threads. Other
    packages may load BLAS libraries of their own; NumPy's is the one that sits in NumPy's
    install (a wheel), else every BLAS found."""
    from threadpoolctl import threadpool_info

    pools = [p for p in threadpool_info() if p["user_api"] == "blas"]
    mine = [p for p in pools if p["filepath"].startswith(os.path.dirname(np.__file__))]
    keys = ("internal_api", "version", "architecture", "num_threads")
    return [{key: p.get(key) for key in keys} for p in mine or pools]


def host_gemms() -> dict:
    """The host backends' GEMM providers and why they were chosen."""
    gemms = getattr(get_backend("numpy"), "gemms", None)
    return gemms.describe() if gemms is not None else {}


def cpu_model() -> str:
    """The CPU's model name (``AMD EPYC``), else what :mod:`platform` knows."""
    return cpuinfo("model name") or platform.processor() or platform.machine()


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
