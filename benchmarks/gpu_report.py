"""The JSON report of ``benchmarks/gpu.sh``: one entry per stage, written after every stage.

    python benchmarks/gpu_report.py record REPORT STAGE STATUS [DETAIL] [--file JSON]
    python benchmarks/gpu_report.py summary REPORT

``record`` sets ``stages[STAGE] = {"status": STATUS, "detail": DETAIL, ...}`` (with the JSON of
``--file`` under ``"result"`` when given and readable) and rewrites the report atomically, so
a run cut short still leaves every finished stage on disk. ``summary`` prints what the goals
need: whether fastbp's step was captured as a graph (and why not), ms/step for fastbp eager and
graphed, PyTorch eager and graphed and the cuBLAS floor, per config and precision, and the
ratios; it also stores them under ``"summary"``. Only the standard library is used.
"""

from __future__ import annotations

import json
import os
import sys
import time

IMPLS = ("fastbp-eager", "fastbp-graph", "torch-eager", "torch-graph", "cublas-floor")


def load(path) -> dict:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {"stages": {}}


def save(path, report):
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(report, f, indent=2)
    os.replace(tmp, path)


def record(path, stage, status, detail="", result_file=None):
    report = load(path)
    entry = {"status": status, "detail": detail, "at": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                     time.gmtime())}
    if result_file:
        result = load(result_file)
        if result != {"stages": {}}:
            entry["result"] = result
    report.setdefault("stages", {})[stage] = entry
    save(path, report)


def summarize(report) -> dict:
    """``{"config precision": {impl: ms, "graph": ..., ratios...}}`` from the bench stages."""
    summary = {}
    for stage, entry in report.get("stages", {}).items():
        result = entry.get("result")
        if not stage.startswith("bench ") or not result:
            continue
        row = {}
        for impl in IMPLS:
            got = result["results"].get(impl, {})
            row[impl] = got.get("ms_per_step", got.get("error", "not run"))
        fastbp_graph = result["results"].get("fastbp-graph", {})
        row["graph captured"] = fastbp_graph.get("graph")
        if not fastbp_graph.get("graph"):
            row["why not"] = fastbp_graph.get("graph_failure") or fastbp_graph.get("error")
        row.update(result.get("ratios", {}))
        summary[f"{stage[len('bench '):]} ({result['config']})"] = row
    return summary


def summary(path):
    report = load(path)
    report["summary"] = summarize(report)
    save(path, report)
    for stage, entry in report["stages"].items():
        print(f"{stage:28s} {entry['status']:10s} {entry.get('detail', '')}")
    for name, row in report["summary"].items():
        print(f"\n{name}")
        for key, value in row.items():
            shown = f"{value:9.3f}" if isinstance(value, float) else str(value)
            unit = " ms/step" if key in IMPLS and isinstance(value, float) else ""
            print(f"  {key:34s} {shown}{unit}")
    print(f"\nreport: {path}")


def main(argv):
    if len(argv) >= 4 and argv[0] == "record":
        file = None
        if "--file" in argv:
            at = argv.index("--file")
            file, argv = argv[at + 1], argv[:at] + argv[at + 2:]
        record(argv[1], argv[2], argv[3], " ".join(argv[4:]), file)
        return 0
    if len(argv) == 2 and argv[0] == "summary":
        summary(argv[1])
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
