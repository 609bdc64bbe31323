#!/usr/bin/env bash
# The whole GPU check in one command, from a bare checkout on a machine with an NVIDIA GPU and
# CuPy, Numba, numba-cuda, PyTorch, pytest and pytest-benchmark already installed (no network):
#
#     bash benchmarks/gpu.sh
#
# 1. installs fastbp in place without fetching anything;
# 2. checks that the `cupy` backend can run (a GPU answers, a Numba kernel runs) and says why not;
# 3. runs the GPU tests on `cupy` (the root conftest keeps the simulator off when a GPU answers);
# 4. times a training step (benchmarks/test_gpu_step.py) against PyTorch and the cuBLAS floor and
#    writes benchmarks/results/gpu_step-<UTC time>.json (pytest-benchmark) and -summary.json.
# PYTHON=/path/to/python picks the interpreter (default: python3).
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-python3}
unset NUMBA_ENABLE_CUDASIM

"$py" -m pip install --quiet --no-deps --no-build-isolation -e .
"$py" -c "
from fastbp.backend import probe
usable, reason = probe('cupy')
print('cupy backend:', reason)
raise SystemExit(0 if usable else 1)"

"$py" -m pytest -q -p no:cacheprovider tests/test_gpu_kernels.py tests/test_gpu_ptx.py \
    tests/test_gpu_backend.py

"$py" -c "import pytest_benchmark" 2>/dev/null || {
    echo "pytest-benchmark is not installed: pip install pytest-benchmark (or its wheel and" \
         "py-cpuinfo's, copied here, with --no-index), then run this again" >&2
    exit 1
}
stamp=$(date -u +%Y%m%dT%H%M%SZ)
out="benchmarks/results/gpu_step-$stamp.json"
"$py" -m pytest -q -p no:cacheprovider benchmarks/test_gpu_step.py --benchmark-json "$out" \
    --benchmark-columns=median,iqr,rounds
"$py" - "$out" <<'EOF'
"""ms per step per configuration and implementation, and the ratios the goals are stated in."""
import json
import sys

path = sys.argv[1]
rows = [b["extra_info"] for b in json.load(open(path))["benchmarks"]]
summary = {}
for row in rows:
    summary.setdefault(row["config"], {})[row["impl"]] = row["ms_per_step"]
for config, ms in summary.items():
    for impl in ("fastbp-fit", "fastbp-graph"):
        for base in ("torch-eager", "torch-graph", "cublas-floor"):
            if impl in ms and base in ms:
                ms[f"{impl} / {base}"] = ms[impl] / ms[base]
    print(f"\n{config} ({rows[0]['device']}):")
    for key, value in ms.items():
        print(f"  {key:34s} {value:9.3f}" + ("" if "/" in key else " ms/step"))
json.dump(summary, open(path.replace(".json", "-summary.json"), "w"), indent=2)
print(f"\nwrote {path} and its -summary.json")
EOF
