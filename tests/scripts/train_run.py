"""A training run driven by the checkpoint and MPI tests: ``python train_run.py OUT.npz
[--checkpoint C] [--resume] [--kill-after-epoch E] [--backend B] [--distributed MODE]
[--batch-size N] [--epochs N] [--optimizer O] [--slow]``. Writes the final flat weights."""

import argparse
import os
import signal
import time

import numpy as np

import fastbp


def problem():
    rng = np.random.default_rng(42)
    X = rng.normal(size=(203, 7))
    y = (X[:, 0] + X[:, 1] * X[:, 2] > 0).astype(int) + (X[:, 3] > 1)
    return X, y


def main():
    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument("--checkpoint")
    p.add_argument("--resume", action="store_true")
    p.add_argument("--kill-after-epoch", type=int)
    p.add_argument("--backend", default="numpy")
    p.add_argument("--distributed")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--optimizer", default="adam")
    p.add_argument("--slow", action="store_true", help="sleep in every epoch's callback")
    args = p.parse_args()
    X, y = problem()
    net = fastbp.MLP([7, 12, 9, 3], activation=["tanh", "relu"], backend=args.backend,
                     dtype="float64", seed=3)

    def callback(epoch, logs):
        if args.slow:
            time.sleep(0.5)
        if epoch == args.kill_after_epoch:
            os.kill(os.getpid(), signal.SIGKILL)

    net.fit(X, y, epochs=args.epochs, batch_size=args.batch_size, lr=0.01,
            optimizer=args.optimizer, momentum=0.9, weight_decay=1e-3, shuffle=True,
            verbose=0, checkpoint=args.checkpoint, resume=args.resume,
            distributed=args.distributed, callbacks=[callback])
    if args.distributed is None or int(os.environ.get("PMI_RANK", "0")) == 0:
        np.save(args.out, net.get_flat_params())


if __name__ == "__main__":
    main()
