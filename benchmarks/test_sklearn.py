"""fastbp's MLPClassifier against scikit-learn's and against MLP.fit, at equal epochs.

The data sets (``HIDDEN`` gives each its hidden ReLU layers):

- ``digits``: 1797 x 64, 10 classes, float64 as ``load_digits`` gives it; two layers of 512;
- ``digits-100``: the same, at scikit-learn's default ``hidden_layer_sizes=(100,)``;
- ``mnist``: MNIST-shaped synthetic data (60000 x 784, 10 classes) as MNIST comes, ``uint8``
  pixels (``keras.datasets.mnist``; ``fetch_openml`` gives float64, and scikit-learn computes
  in float64 either way); two layers of 512;
- ``mnist-f32``: the same pixels cast to float32 by the user, which scikit-learn keeps: its
  float32 GEMMs are about twice as fast as its float64 ones.

Adam at scikit-learn's defaults (lr 1e-3, batch 200, alpha 1e-4), ``EPOCHS`` epochs with the
stopping rule off (``tol=0``, ``n_iter_no_change`` past the end), shuffling on. Contenders:

- ``sklearn``: ``sklearn.neural_network.MLPClassifier`` (NumPy, in float64 unless given
  float32);
- ``estimator``: ``fastbp.MLPClassifier`` with the same parameters (float32, backend auto);
- ``fit``: ``fastbp.MLP([d, *hidden, 10]).fit(...)`` with the same options -- the estimator
  should cost no more than a few percent above it.

``pytest benchmarks/test_sklearn.py --benchmark-only`` times each (the group is the data set;
``extra_info["seconds_per_epoch"]``). ``python benchmarks/test_sklearn.py [ROUNDS [DATA ...]]``
runs them interleaved, round-robin in a rotating order, and prints per-epoch seconds and the
ratios side by side. Each run starts after the pause ``fastbp bench`` takes
(:data:`fastbp.bench.measure.SETTLE_SECONDS`): scikit-learn's GEMMs leave NumPy's OpenBLAS
threads spinning for about 0.1 s, and a contender started inside that time lost a core to them
(measured on 2 vCPUs: the estimator, which the rotation runs right after scikit-learn in most
rounds, read 1.13x the cost of ``MLP.fit`` on digits without the pause).
"""

import sys
import time
import warnings

import numpy as np
import pytest

import fastbp
from fastbp.bench.measure import SETTLE_SECONDS

#: the hidden layers per data set: two of 512, and scikit-learn's default (100,) on digits
HIDDEN = {"digits": (512, 512), "digits-100": (100,), "mnist": (512, 512),
          "mnist-f32": (512, 512)}
EPOCHS = {"digits": 10, "digits-100": 10, "mnist": 3, "mnist-f32": 3}
ROUNDS = {"digits": 3, "digits-100": 3, "mnist": 1, "mnist-f32": 1}


def dataset(name):
    """``(X, y)``: digits, or MNIST-shaped random pixels (``uint8``, or float32 for
    ``mnist-f32``) with a learnable linear labelling of the centred pixels (10 classes of
    about 6000 rows each, as in MNIST; uncentred, one class took 76% of the rows and one
    never occurred, so the estimator, sizing its output from the classes present, had 9
    outputs where ``MLP.fit`` had 10)."""
    if name.startswith("digits"):
        from sklearn.datasets import load_digits

        return load_digits(return_X_y=True)
    rng = np.random.default_rng(0)
    X = rng.integers(0, 256, (60000, 784), dtype=np.uint8)
    y = ((X - np.float32(127.5)) @ rng.standard_normal((784, 10), dtype=np.float32)).argmax(1)
    return (X.astype(np.float32) if name == "mnist-f32" else X), y


def estimator_params(epochs, hidden):
    return dict(hidden_layer_sizes=hidden, max_iter=epochs, tol=0.0,
                n_iter_no_change=epochs + 1, random_state=0)


def run_sklearn(X, y, epochs, hidden):
    from sklearn.neural_network import MLPClassifier

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        MLPClassifier(**estimator_params(epochs, hidden)).fit(X, y)


def run_estimator(X, y, epochs, hidden):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fastbp.MLPClassifier(**estimator_params(epochs, hidden)).fit(X, y)


def run_fit(X, y, epochs, hidden):
    net = fastbp.MLP([X.shape[1], *hidden, 10], init="glorot_uniform", seed=0)
    net.fit(X, y, epochs=epochs, batch_size=200, lr=1e-3, optimizer="adam",
            weight_decay=1e-4 / 200, verbose=0)


CONTENDERS = {"sklearn": run_sklearn, "estimator": run_estimator, "fit": run_fit}


@pytest.fixture(scope="module", params=list(EPOCHS))
def data(request):
    pytest.importorskip("sklearn")
    return request.param, dataset(request.param)


@pytest.mark.parametrize("contender", list(CONTENDERS))
def test_epochs(benchmark, data, contender):
    name, (X, y) = data
    epochs = EPOCHS[name]
    benchmark.group = f"sklearn-vs-fastbp[{name}]"
    CONTENDERS[contender](X[:400], y[:400], 1, HIDDEN[name])  # compile and warm up
    benchmark.pedantic(CONTENDERS[contender], args=(X, y, epochs, HIDDEN[name]),
                       rounds=ROUNDS[name],
                       iterations=1)
    benchmark.extra_info["seconds_per_epoch"] = benchmark.stats.stats.median / epochs


def side_by_side(rounds=3, names=tuple(EPOCHS)):
    """Interleaved rounds of every contender on each data set; median seconds per epoch."""
    for name in names:
        epochs = EPOCHS[name]
        X, y = dataset(name)
        for run in CONTENDERS.values():
            run(X[:400], y[:400], 1, HIDDEN[name])
        times = {key: [] for key in CONTENDERS}
        keys = list(CONTENDERS)
        for r in range(rounds):  # the order rotates: no contender always follows another
            for key in keys[r % len(keys):] + keys[:r % len(keys)]:
                time.sleep(SETTLE_SECONDS)
                start = time.perf_counter()
                CONTENDERS[key](X, y, epochs, HIDDEN[name])
                times[key].append((time.perf_counter() - start) / epochs)
        med = {key: float(np.median(t)) for key, t in times.items()}
        print(f"{name}: ms/epoch sklearn {med['sklearn'] * 1e3:.1f}  estimator "
              f"{med['estimator'] * 1e3:.1f}  fit {med['fit'] * 1e3:.1f}  ->  sklearn/estimator "
              f"{med['sklearn'] / med['estimator']:.2f}x, estimator/fit "
              f"{med['estimator'] / med['fit']:.3f}")


if __name__ == "__main__":
    side_by_side(int(sys.argv[1]) if len(sys.argv) > 1 else 3, tuple(sys.argv[2:]) or
                 tuple(EPOCHS))
