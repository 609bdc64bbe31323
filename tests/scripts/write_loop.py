"""Write one kind of fastbp output over and over until killed: ``python write_loop.py KIND
TARGET WORKDIR``. KIND is model, checkpoint, predictions, json or figure; the two versions
written alternately are described in ``tests/test_files.py`` (which kills this with SIGKILL
at random moments and checks that TARGET is always one complete version)."""

import sys
from pathlib import Path

import numpy as np

import fastbp
from fastbp import cli, files


def two_models():
    """Two networks of the same architecture with different weights, ~4 MB each."""
    return [fastbp.MLP([200, 2500, 3], backend="numpy", dtype="float64", seed=s) for s in (1, 2)]


def main():
    kind, target, work = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    if kind == "model":
        nets = two_models()
        writers = [lambda n=n: n.save(target) for n in nets]
    elif kind == "checkpoint":
        X, y = np.random.default_rng(0).normal(size=(64, 200)), np.arange(64) % 3
        net = two_models()[0]
        writers = [lambda: net.fit(X, y, epochs=10 ** 6, batch_size=64, verbose=0,
                                   checkpoint=target)]
    elif kind == "predictions":
        writers = [lambda m=m: cli.main(["predict", str(work / m), str(work / "X.csv"), "-o",
                                         target]) for m in ("a.npz", "b.npz")]
    elif kind == "json":
        texts = [("[" + ",".join([str(v)] * 400_000) + "]\n") for v in (1, 2)]
        writers = [lambda t=t: files.atomic_write_text(target, t) for t in texts]
    else:
        history = fastbp.History(epoch=list(range(1, 201)),
                                 train_loss=list(np.linspace(2, 1, 200)),
                                 val_loss=[None] * 200, val_score=[None] * 200,
                                 seconds=[0.0] * 200)
        writers = [lambda: history.plot(target)]
    print("ready", flush=True)
    while True:
        for write in writers:
            write()


if __name__ == "__main__":
    main()
