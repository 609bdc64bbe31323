"""What the input converter (fastbp.arrays) costs: ``predict_proba`` on the same features
handed in as each array type, side by side in one group (numpy backend, 784-256-10, 4096 rows).

Zero-copy types (float32 NumPy, CPU tensors, DLPack-only objects) should time like NumPy;
the rest pay one conversion (a cast, or pandas' ``to_numpy``).

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE .venv/bin/python -m pytest \\
        benchmarks/test_inputs.py --benchmark-only
"""

import numpy as np
import pytest

import fastbp
from tests.doubles import DLPackOnly

torch = pytest.importorskip("torch")
pd = pytest.importorskip("pandas")

X = np.random.default_rng(0).standard_normal((4096, 784)).astype(np.float32)


INPUTS = {
    "numpy-float32": lambda: X,
    "numpy-float64": lambda: X.astype(np.float64),
    "numpy-float16": lambda: X.astype(np.float16),
    "torch": lambda: torch.from_numpy(X),
    "torch-requires-grad": lambda: torch.from_numpy(X.copy()).requires_grad_(True),
    "torch-bfloat16": lambda: torch.from_numpy(X).to(torch.bfloat16),
    "dlpack-only": lambda: DLPackOnly(X),
    "pandas": lambda: pd.DataFrame(X),
}


@pytest.mark.parametrize("kind", list(INPUTS))
def test_predict_from(benchmark, kind):
    net = fastbp.MLP([784, 256, 10], seed=0, backend="numpy")
    features = INPUTS[kind]()
    benchmark.group = "predict_proba by input type (numpy backend, 4096 x 784)"
    benchmark(net.predict_proba, features)
