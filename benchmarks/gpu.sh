#!/usr/bin/env bash
# The whole first GPU check in one command, from a bare checkout on a fresh machine with an
# NVIDIA GPU and CuPy, Numba, numba-cuda, PyTorch and pytest installed (no network; nvmath-python
# if present: without it fastbp's step cannot be captured, and the report says so):
#
#     bash benchmarks/gpu.sh [--dry-run] [--out REPORT.json]
#
# Stages, each under its own `timeout`, none stopping the ones after it; the JSON report
# (default benchmarks/results/gpu-<UTC time>.json) is rewritten after every stage:
#   environment   nvidia-smi, python and package versions
#   install       the wheels in benchmarks/wheels/ if any (git-ignored: carried, no index), then
#                 pip install --no-deps --no-build-isolation -e . ; if that fails, a path shim
#                 (fastbp/ with kernels/ as fastbp.kernels, on PYTHONPATH)
#   probe         can the `cupy` backend run here, and why not
#   tests         the GPU tests on `cupy`: kernels, backend, a real captured step (the PTX checks
#                 and the stand-in tests of cuBLAS, graphs and transfers need no GPU: CI runs them)
#   bench CONFIG PRECISION   benchmarks/test_gpu_step.py for small / large x float32 / tf32 / bf16
#   summary       graph captured or why not; ms/step of fastbp eager and graphed, PyTorch eager
#                 and graphed, the cuBLAS floor; the ratios
# --dry-run walks every stage and writes the report's skeleton without running anything heavy
# (the test suite runs it). PYTHON=/path/to/python picks the interpreter (default: python3).
# Budget on a fresh machine: under 9 minutes (the timeouts below add up to 9; the H200 ran the
# float32 and tf32 stages in 2.5 minutes all told).
set -uo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-python3}
dry=0
out="benchmarks/results/gpu-$(date -u +%Y%m%dT%H%M%SZ).json"
while [ $# -gt 0 ]; do
    case "$1" in
        --dry-run) dry=1 ;;
        --out) out="$2"; shift ;;
        *) echo "usage: bash benchmarks/gpu.sh [--dry-run] [--out REPORT.json]" >&2; exit 2 ;;
    esac
    shift
done
mkdir -p "$(dirname "$out")"
rm -f "$out"
unset NUMBA_ENABLE_CUDASIM
export py
export PYTHONDONTWRITEBYTECODE=1
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

record() {  # record STAGE STATUS [DETAIL...] ; with RESULT=file, that file's JSON too
    "$py" benchmarks/gpu_report.py record "$out" "$@" ${RESULT:+--file "$RESULT"} || true
}

# stage NAME SECONDS COMMAND...: run it under timeout (or only name it, in a dry run)
stage() {
    local name=$1 seconds=$2
    shift 2
    echo "== $name (at most ${seconds}s): $*"
    if [ "$dry" = 1 ]; then
        record "$name" dry-run "would run: $*"
        return 0
    fi
    if declare -F "$1" >/dev/null; then  # a function of this script: run it in a child bash
        set -- bash -c "$(declare -f "$1"); $1"
    fi
    timeout --kill-after=10 "$seconds" "$@" >"$work/log" 2>&1
    local rc=$?
    tail -n 15 "$work/log"
    local status=ok
    [ $rc = 124 ] || [ $rc = 137 ] && status=timeout
    [ $rc != 0 ] && [ "$status" = ok ] && status="failed (exit $rc)"
    record "$name" "$status" "$(tail -n 3 "$work/log" | tr '\n' ' ' | cut -c1-400)"
    return 0
}

environment() {
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
    "$py" - <<'EOF'
import importlib.metadata as md, sys
print("python", sys.version.split()[0])
for name in ("numpy", "cupy-cuda12x", "cupy-cuda13x", "numba", "numba-cuda", "cuda-bindings",
             "cuda-core", "nvmath-python", "torch", "pytest", "pytest-benchmark"):
    try:
        print(name, md.version(name))
    except md.PackageNotFoundError:
        print(name, "not installed")
EOF
}

install() {
    # wheels carried to a machine without the network (e.g. nvmath-python and cuda-core:
    # `pip download --no-deps nvmath-python cuda-core -d benchmarks/wheels` beforehand)
    if ls benchmarks/wheels/*.whl >/dev/null 2>&1; then
        "$py" -m pip install --quiet --no-deps --no-index benchmarks/wheels/*.whl \
            || echo "the wheels in benchmarks/wheels did not install" >&2
    fi
    if "$py" -m pip install --quiet --no-deps --no-build-isolation -e .; then
        return 0
    fi
    echo "pip install failed: using a path shim" >&2
    mkdir -p "$work/shim/fastbp"
    for entry in fastbp/*; do ln -s "$PWD/$entry" "$work/shim/fastbp/"; done
    ln -s "$PWD/kernels" "$work/shim/fastbp/kernels"
    echo "$work/shim" >"$work/pythonpath"
}

probe() {
    "$py" -c "
from fastbp.backend import probe
usable, reason = probe('cupy')
print('cupy backend:', reason)
raise SystemExit(0 if usable else 1)"
}

stage environment 20 environment
if [ "$dry" = 1 ]; then
    record install dry-run "would run: pip install --no-deps --no-build-isolation -e . (or a path shim)"
else
    echo "== install (at most 60s)"
    timeout 60 bash -c "$(declare -f install); work=$work py=$py install" >"$work/log" 2>&1
    rc=$?
    tail -n 5 "$work/log"
    if [ -s "$work/pythonpath" ]; then
        export PYTHONPATH="$(cat "$work/pythonpath")${PYTHONPATH:+:$PYTHONPATH}"
        export PYTHONSAFEPATH=1  # else `python -m` puts ./fastbp (no kernels/ inside) first
        record install "path shim" "$(tail -n 2 "$work/log" | tr '\n' ' ' | cut -c1-300)"
    elif [ $rc = 0 ]; then
        record install ok "pip install -e ."
    else
        record install "failed (exit $rc)" "$(tail -n 2 "$work/log" | tr '\n' ' ' | cut -c1-300)"
    fi
fi
stage probe 40 probe
stage tests 150 "$py" -m pytest -q -p no:cacheprovider tests/test_gpu_kernels.py \
    tests/test_gpu_backend.py \
    tests/test_gpu_graphs.py::test_a_real_step_is_captured_and_replays_like_eager_steps
for config in small large; do
    for precision in float32 tf32 bf16; do
        RESULT="$work/bench-$config-$precision.json" stage "bench $config $precision" 45 \
            "$py" benchmarks/test_gpu_step.py --config "$config" --precision "$precision" \
            --json "$work/bench-$config-$precision.json"
    done
done
if [ "$dry" = 1 ]; then
    record summary dry-run "would print the summary"
fi
"$py" benchmarks/gpu_report.py summary "$out"
