"""``benchmarks/gpu.sh``, the first device run in one script, tested where there is no device:
its dry run walks every stage and writes the report's skeleton, and the report's summary and
the benchmark's arithmetic are checked on made-up numbers."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STAGES = ["environment", "install", "probe", "tests", "bench small float32", "bench small tf32",
          "bench small bf16", "bench large float32", "bench large tf32", "bench large bf16",
          "summary"]


def load_module(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_dry_run_walks_every_stage_and_writes_the_skeleton(tmp_path):
    report = tmp_path / "gpu.json"
    env = {**os.environ, "PYTHON": sys.executable}
    done = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu.sh"), "--dry-run", "--out",
                           str(report)], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    stages = json.loads(report.read_text())["stages"]
    assert list(stages) == STAGES
    assert {entry["status"] for entry in stages.values()} == {"dry-run"}
    assert "--no-deps --no-build-isolation -e ." in stages["install"]["detail"]
    assert "test_gpu_step.py --config large --precision tf32" in stages["bench large tf32"][
        "detail"]
    assert "test_gpu_ptx" not in stages["tests"]["detail"]  # needs no GPU: CI runs it


def test_a_bad_option_is_refused():
    done = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu.sh"), "--fast"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "usage" in done.stderr


def test_the_summary_says_whether_the_step_was_captured_and_the_ratios(tmp_path, capsys):
    report_mod = load_module("gpu_report")
    path, bench = tmp_path / "r.json", tmp_path / "bench.json"
    bench.write_text(json.dumps({
        "config": "784-256-256-10, batch 256", "gemm_tflop_per_step": 0.0003,
        "results": {"fastbp-eager": {"ms_per_step": 0.5},
                    "fastbp-graph": {"ms_per_step": 0.1, "graph": False,
                                     "graph_failure": "steps run eagerly: no nvmath"},
                    "torch-eager": {"error": "ModuleNotFoundError: torch"}},
        "ratios": {"fastbp-graph / cublas-floor": 2.0}}))
    report_mod.record(str(path), "bench small float32", "ok", "", str(bench))
    report_mod.record(str(path), "tests", "timeout", "")
    report_mod.summary(str(path))
    summary = json.loads(path.read_text())["summary"]
    row = summary["small float32 (784-256-256-10, batch 256)"]
    assert row["fastbp-graph"] == 0.1 and row["graph captured"] is False
    assert row["why not"] == "steps run eagerly: no nvmath"
    assert row["torch-eager"].startswith("ModuleNotFoundError")
    assert row["cublas-floor"] == "not run"
    assert "timeout" in capsys.readouterr().out


def test_the_large_config_is_the_0_878_tflop_step():
    step = load_module("test_gpu_step")
    sizes, batch = step.CONFIGS["large"][:2]
    assert step.gemm_flops(sizes, batch) / 1e12 == pytest.approx(0.878, abs=5e-4)
    ratios = step.ratios({"fastbp-graph": {"ms_per_step": 2.0},
                          "cublas-floor": {"ms_per_step": 1.0}, "torch-eager": {"error": "x"}})
    assert ratios == {"fastbp-graph / cublas-floor": 2.0}
