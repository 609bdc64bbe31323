"""``fastbp bench`` on tiny networks (seconds, not minutes), and a smoke run of the
pytest-benchmark suites so that they cannot rot."""

import argparse
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

import fastbp
from fastbp import bench
from fastbp.bench import cases, floor, measure, runners

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--configs", "32-16-4@8,64-32-10@16", "--steps", "2", "--repeats", "2"]


def bench_args(*flags):
    return bench.configure_parser(argparse.ArgumentParser()).parse_args(list(flags))


def test_run_prints_the_table_and_writes_json_and_plot(tmp_path, capsys):
    out_json, out_png = tmp_path / "b.json", tmp_path / "b.png"
    bench.run(bench_args(*TINY, "--backends", "numpy", "--json", str(out_json),
                         "--plot", str(out_png)))
    printed = capsys.readouterr().out
    assert "ms/step" in printed and floor.floor_label("host") in printed
    assert out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    result = json.loads(out_json.read_text())
    assert {"fastbp", "date", "machine", "settings", "skipped", "cases"} <= set(result)
    assert result["machine"]["cores"] >= 1 and result["settings"]["repeats"] == 2
    assert [c["name"] for c in result["cases"]] == ["32-16-4@8", "64-32-10@16"]
    case = result["cases"][1]
    assert case["sizes"] == [64, 32, 10] and case["batch"] == 16 and case["steps"] == 2
    numpy_blas_row = {floor.NUMPY_FLOOR} if floor.gemm_provider("host") != "numpy" else set()
    assert set(case["runners"]) == {"numpy", floor.floor_label("host")} | numpy_blas_row
    numpy_row = case["runners"]["numpy"]
    assert len(numpy_row["ms_samples"]) == 2
    assert numpy_row["ms_min"] <= numpy_row["ms_median"] <= numpy_row["ms_max"]
    assert numpy_row["speedup_vs_numpy"] == 1.0
    assert numpy_row["gflops"] == pytest.approx(
        case["gflop_per_step"] / numpy_row["ms_median"] * 1e3, rel=1e-2)
    assert case["runners"][floor.floor_label("host")]["pct_of_floor"] == 100


def test_an_unusable_backend_is_skipped_with_its_reason(monkeypatch, tmp_path, capsys):
    real_probe = cases.probe
    monkeypatch.setattr(cases, "probe", lambda name: (False, "no such device here")
                        if name == "numba" else real_probe(name))
    out_json = tmp_path / "b.json"
    bench.run(bench_args(*TINY, "--backends", "numpy,numba", "--json", str(out_json)))
    assert "skipped numba: no such device here" in capsys.readouterr().out
    result = json.loads(out_json.read_text())
    assert result["skipped"] == {"numba": "no such device here"}
    assert "numba" not in result["cases"][0]["runners"]


def test_nothing_usable_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(cases, "probe", lambda name: (False, "unplugged"))
    with pytest.raises(RuntimeError, match="no backend left to time: numpy: unplugged"):
        bench.run(bench_args(*TINY, "--backends", "numpy"))


@pytest.mark.parametrize("flags, message", [
    (["--configs", "huge"], "neither a config"),
    (["--configs", "784-x-10@32"], "SIZES@BATCH"),
    (["--backends", "numpy,fortran"], "'fortran'"),
    (["--sweep", "batch", "--configs", "small,mid"], "one config"),
    (["--values", "32,64"], "--sweep"),
    (["--sweep", "width", "--values", "64,zero"], "--values"),
    (["--repeats", "0"], "--repeats"),
    (["--budget", "-1"], "--budget"),
])
def test_bad_values_raise_a_value_error_naming_them(flags, message):
    with pytest.raises(ValueError, match=message):
        bench.run(bench_args(*flags))


def test_a_sweep_plots_every_point_and_a_budget_stops_it(tmp_path, capsys):
    out_png, out_json = tmp_path / "s.png", tmp_path / "s.json"
    sweep = ["--sweep", "batch", "--configs", "64-32-10@16", "--values", "8,16", "--steps", "2",
             "--repeats", "2", "--backends", "numpy"]
    bench.run(bench_args(*sweep, "--plot", str(out_png), "--json", str(out_json)))
    assert out_png.stat().st_size > 0
    result = json.loads(out_json.read_text())
    assert [c["batch"] for c in result["cases"]] == [8, 16]
    assert result["settings"]["sweep"] == "batch"
    capsys.readouterr()
    results = bench.run(bench_args(*sweep, "--budget", "1e-9"))
    assert [r.case.batch for r in results] == [8]
    assert "stopped before batch 16" in capsys.readouterr().out


def test_rounds_take_turns_and_the_warmup_is_not_counted():
    from tqdm import tqdm

    calls = []

    def runner(label):
        def make(case, data):
            return lambda: calls.append(label) or 0.002  # seconds per round of 2 steps
        return runners.Runner(label, "host", "backend", make)

    case = cases.Case("t", (4, 3, 2), 2, 2)
    result = measure.measure_case(case, [runner("a"), runner("b"), runner("c")], "float32",
                                  repeats=3, warmup=1, bar=tqdm(disable=True))
    assert "".join(calls) == "cab" + "abc" + "bca" + "cab"
    assert result.ms == {label: [1.0, 1.0, 1.0] for label in "abc"}


def test_width_sweep_varies_every_hidden_layer():
    points = cases.make_cases(bench_args("--sweep", "width", "--configs", "large",
                                         "--values", "64,128"), ["numpy"])
    assert [c.sizes for c in points] == [(784, 64, 64, 64, 10), (784, 128, 128, 128, 10)]
    assert all(c.batch == 1024 for c in points)


def test_step_gemms_are_the_steps_gemms():
    backend = fastbp.get_backend("numpy")
    sizes, batch = (20, 8, 6, 3), 5
    gemms = floor.step_gemms(backend, sizes, batch, "float32")
    assert [out.shape for _, _, out in gemms] == [
        (5, 8), (5, 6), (5, 3), (6, 3), (5, 6), (8, 6), (5, 8), (20, 8)]
    # 3 GEMMs per layer but the first layer's delta: 6 N sum n_in n_out minus 2 N n_0 n_1
    assert floor.gemm_flops(gemms) == cases.step_flops(sizes, batch) - 2 * batch * 20 * 8


def hide_module(monkeypatch, module):
    """Make ``importlib.util.find_spec`` say that ``module`` is not installed."""
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == module else real_find_spec(name, *a))


def test_torch_column(capsys):
    pytest.importorskip("torch")
    results = bench.run(bench_args("--configs", "32-16-4@8", "--steps", "2", "--repeats", "1",
                                   "--backends", "numpy", "--compare-torch"))
    torch_label = [label for label in results[0].ms if label.startswith("torch (")]
    assert len(torch_label) == 1 and torch_label[0] in capsys.readouterr().out


def test_compare_torch_without_torch_skips_it(monkeypatch, capsys):
    hide_module(monkeypatch, "torch")
    bench.run(bench_args(*TINY, "--backends", "numpy", "--compare-torch"))
    assert "skipped torch: PyTorch is not installed (pip install torch)" in \
        capsys.readouterr().out


def test_plot_without_matplotlib_names_the_extra(monkeypatch, tmp_path):
    hide_module(monkeypatch, "matplotlib")
    with pytest.raises(ImportError, match=r"needs matplotlib: pip install 'fastbp\[bench\]'"):
        bench.run(bench_args(*TINY, "--plot", str(tmp_path / "b.png")))


def test_benchmark_suites_smoke():
    """The small-config benchmarks run once each (timing off), so that API changes break CI."""
    pytest.importorskip("pytest_benchmark")
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--benchmark-disable",
         "-k", "small", "benchmarks/test_ops.py", "benchmarks/test_steps.py"],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert " passed" in run.stdout


def test_bf16_rows_and_the_torch_autocast_column(capsys):
    backend = fastbp.get_backend("numpy")
    if "bf16" not in backend.precisions:
        pytest.skip(backend.unavailable_precisions["bf16"])
    pytest.importorskip("torch")
    results = bench.run(bench_args(*TINY, "--backends", "numpy", "--compare-torch", "--bf16"))
    labels = set(results[0].ms)
    assert {"numpy", "numpy bf16", "torch (cpu)", "torch bf16 autocast (cpu)"} <= labels
    assert "numpy bf16" in capsys.readouterr().out


@pytest.mark.parametrize("flags", [{"avx512_bf16"}, set()])
def test_torch_autocast_is_timed_only_on_a_cpu_with_bf16_instructions(monkeypatch, capsys,
                                                                      flags):
    """Without bf16 instructions PyTorch's CPU autocast runs emulated kernels (minutes a large
    step): the column is skipped with the reason, PyTorch's float32 column stays."""
    pytest.importorskip("torch")
    from fastbp.backends import gemm

    monkeypatch.setattr(gemm, "cpu_flags", lambda: flags)
    results = bench.run(bench_args(*TINY, "--backends", "numpy", "--compare-torch", "--bf16"))
    labels = set(results[0].ms)
    assert "torch (cpu)" in labels
    assert ("torch bf16 autocast (cpu)" in labels) == bool(flags)
    printed = capsys.readouterr().out
    assert ("skipped torch bf16 autocast: this CPU lacks bf16 instructions" in printed) \
        == (not flags)


def test_bf16_where_no_backend_offers_it_is_skipped_with_the_reason(monkeypatch, capsys):
    from fastbp.backends import gemm

    backend = fastbp.get_backend("numpy")
    monkeypatch.setattr(backend, "gemms", gemm.select(2, mkl_path="", flags=set()))
    results = bench.run(bench_args(*TINY, "--backends", "numpy", "--bf16"))
    assert "numpy bf16" not in results[0].ms
    assert "skipped numpy bf16: this CPU lacks bf16" in capsys.readouterr().out


def test_bf16_needs_float32():
    with pytest.raises(ValueError, match="--bf16.*float64"):
        bench.run(bench_args(*TINY, "--backends", "numpy", "--bf16", "--dtype", "float64"))
