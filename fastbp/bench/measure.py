"""Timing the runners: warm-up, then repeats taken round-robin with a rotating turn order,
case after case within the budget; :class:`CaseResult` holds the samples and their metrics."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field

from .cases import Case
from .floor import floor_label
from .runners import synthetic_data

#: pause before every round: OpenBLAS threads spin ~0.1 s before sleeping
SETTLE_SECONDS = 0.25


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
    rotates by one each repeat so that no runner always goes first. Before every round, wait
    :data:`SETTLE_SECONDS`: idle BLAS and OpenMP threads spin for a while before they sleep,
    and would steal the cores from the next runner (measured: a numba mid step right after
    five ``np.matmul`` calls on OpenBLAS's threads took 25-28 ms against 21 ms)."""
    data = synthetic_data(case, dtype)
    rounds = {r.label: r.make(case, data) for r in runners}
    by_label = {r.label: r for r in runners}
    labels = list(rounds)
    result = CaseResult(case, by_label, {label: [] for label in labels})
    for repeat in range(-warmup, repeats):
        shift = repeat % len(labels)
        for label in labels[shift:] + labels[:shift]:
            bar.set_description(f"{case.name}: {label}")
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
