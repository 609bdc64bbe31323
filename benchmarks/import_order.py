"""Does the numba step depend on what the process imported first? Fresh processes, interleaved.

Each sample is one fresh process that (B) imports fastbp alone or (A) imports PyTorch first --
which loads PyTorch's libgomp before fastbp can ask it to wait passively -- then times
``fit`` epochs of the numba backend on a config and prints the median ms/step. The two kinds
alternate, A B A B ..., so a shared machine's drift falls on both; the ratio A/B is taken pair
by pair and its median printed per config. Extra arguments go to every process's environment,
e.g. ``NUMBA_THREADING_LAYER=omp`` to see a layer the user forces. Run::

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/import_order.py \\
        [--configs small,mid,large] [--pairs 3] [--json out.json]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys

CHILD = """
import sys, json
if sys.argv[1] == "torch":
    import torch
import numpy as np
from fastbp.bench.cases import CONFIGS, Case, default_steps
from fastbp.bench.runners import backend_runner, synthetic_data
sizes, batch = CONFIGS[sys.argv[2]]
case = Case(sys.argv[2], sizes, batch, default_steps(sizes, batch))
run = backend_runner("numba", "float32").make(case, synthetic_data(case, "float32"))
run()
ms = [run() / case.steps * 1e3 for _ in range(int(sys.argv[3]))]
import fastbp
print(json.dumps({"ms": sorted(ms)[len(ms) // 2],
                  "layer": fastbp.get_backend("numba").describe()["threading_layer"]}))
"""


def sample(first: str, config: str, rounds: int, env: dict) -> dict:
    done = subprocess.run([sys.executable, "-c", CHILD, first, config, str(rounds)],
                          capture_output=True, text=True, env=env, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default="small,mid,large")
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3, help="timed epochs per process")
    parser.add_argument("--json", help="write the samples here")
    parser.add_argument("env", nargs="*", help="NAME=VALUE for every process")
    args = parser.parse_args()
    env = dict(os.environ, **dict(item.split("=", 1) for item in args.env))
    results = {}
    for config in args.configs.split(","):
        pairs = []
        for _ in range(args.pairs):
            a = sample("torch", config, args.rounds, env)
            b = sample("none", config, args.rounds, env)
            pairs.append({"torch_first": a["ms"], "alone": b["ms"], "ratio": a["ms"] / b["ms"],
                          "layer": a["layer"]})
        ratio = statistics.median(p["ratio"] for p in pairs)
        results[config] = {"pairs": pairs, "median_ratio": ratio}
        each = ", ".join(f"{p['ratio']:.3f}" for p in pairs)
        print(f"{config}: torch first {statistics.median(p['torch_first'] for p in pairs):.2f} "
              f"ms/step, alone {statistics.median(p['alone'] for p in pairs):.2f}; ratio median "
              f"{ratio:.3f} (pairs {each}; layer {pairs[0]['layer']})", flush=True)
    if args.json:
        with open(args.json, "w") as out:
            json.dump(results, out, indent=1)


if __name__ == "__main__":
    main()
