"""The figures of ``fastbp bench --plot`` (matplotlib, imported when drawing): grouped bars
of the configs, or log-log curves of a sweep."""

from __future__ import annotations

import datetime
import math

from ..files import save_figure
from .cases import Case
from .runners import Runner


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
    from ..plots import new_figure

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

    from ..plots import new_figure

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
