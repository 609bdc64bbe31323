"""The command line: ``fastbp train``, ``fastbp predict``, ``fastbp info``.

Every bad flag or input is one line on stderr (``fastbp: error: ...``) and exit status 2.
"""

from __future__ import annotations

import argparse
import platform
import sys

import numpy as np

from . import __version__, data, diagnostics
from .activations import HIDDEN_NAMES, NAMES as ACTIVATION_NAMES
from .backend import backend_names, probe
from .bench import configure_parser as configure_bench
from .bench import run as run_bench
from .distributed import launcher_rank
from .init import INITS
from .losses import LOSSES
from .optim import OPTIMIZERS
from .preprocess import PREPROCESSORS

#: output activation and loss for each kind of task, unless --output / --loss say otherwise
TASK_DEFAULTS = {
    "classification": ("softmax", "cross_entropy"),
    "binary": ("sigmoid", "binary_cross_entropy"),
    "regression": ("identity", "mse"),
}


class CliError(Exception):
    """A user error reported as one line."""


class Parser(argparse.ArgumentParser):
    """argparse that reports errors as one line and exit status 2."""

    def error(self, message):
        raise CliError(f"{self.prog}: error: {message}")


def int_list(text: str) -> list[int]:
    """'256,128' -> [256, 128]; '' -> []."""
    try:
        sizes = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}")
    if any(s < 1 for s in sizes):
        raise argparse.ArgumentTypeError(f"layer sizes must be positive, got {text!r}")
    return sizes


def batch_size(text: str):
    """An integer, or 'full' for full-batch gradient descent."""
    if text == "full":
        return None
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer or 'full', got {text!r}")


def add_model_flags(p):
    g = p.add_argument_group("model")
    g.add_argument("--hidden", type=int_list, default=[256], metavar="N[,N...]",
                   help="hidden layer sizes, comma-separated; '' for none (default: 256)")
    g.add_argument("--activation", default="relu", metavar="NAME[,NAME...]",
                   help=f"hidden activation(s): {', '.join(HIDDEN_NAMES)} (default: relu)")
    g.add_argument("--output", choices=ACTIVATION_NAMES,
                   help="output activation (default: softmax, sigmoid or identity by task)")
    g.add_argument("--loss", choices=list(LOSSES),
                   help="loss (default: cross_entropy, binary_cross_entropy or mse by task)")
    g.add_argument("--init", choices=INITS, default="he", help="weight initialiser (default: he)")
    g.add_argument("--init-scale", type=float, help="std (normal) or bound (uniform)")
    g.add_argument("--leaky-slope", type=float, default=0.01, help="leaky_relu slope (0.01)")
    g.add_argument("--elu-alpha", type=float, default=1.0, help="elu alpha (1.0)")
    g.add_argument("--preprocess", choices=["none", *PREPROCESSORS], default="standardize",
                   help="feature preprocessing fitted on the training data: standardize "
                   "(default), pca or zca whitening, none")
    g.add_argument("--maxout-pieces", type=int, default=2, help="linear pieces per maxout unit")
    g.add_argument("--prelu-init", type=float, default=0.25, help="initial PReLU slope")
    g.add_argument("--backend", default="auto", choices=["auto"] + backend_names(),
                   help="array backend (default: auto)")
    g.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    g.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")


def add_fit_flags(p):
    g = p.add_argument_group("training")
    g.add_argument("--epochs", type=int, default=30, help="passes over the data (default: 30)")
    g.add_argument("--batch-size", type=batch_size, default=32,
                   help="minibatch size, or 'full' (default: 32)")
    g.add_argument("--lr", type=float, default=0.005, help="learning rate (default: 0.005)")
    g.add_argument("--optimizer", choices=[*OPTIMIZERS, "lbfgs"], default="adam",
                   help="(default: adam; lbfgs: full batch, --epochs iterations)")
    g.add_argument("--momentum", type=float, default=0.9, help="for --optimizer momentum")
    g.add_argument("--weight-decay", type=float, default=1e-4, help="L2 lambda (default: 1e-4)")
    g.add_argument("--dropout", type=float, default=0.0, help="hidden-unit drop probability")
    g.add_argument("--input-noise", type=float, default=0.0, metavar="SIGMA",
                   help="std of Gaussian noise added to training inputs")
    g.add_argument("--precision", choices=["highest", "tf32", "bf16"], default="highest",
                   help="GEMM precision (tf32: TF32 tensor cores, cupy backend only; bf16: "
                   "bf16 GEMM inputs, float32 accumulation and weights)")
    g.add_argument("--plot", metavar="CURVES.png",
                   help="write the training and validation cost per epoch to this figure")
    g.add_argument("--validation-split", type=float, default=0.1,
                   help="fraction of the training data held out for validation (default: 0.1)")
    g.add_argument("--early-stopping", type=int, metavar="PATIENCE",
                   help="stop after this many epochs without a better validation loss")
    g.add_argument("--no-shuffle", action="store_true", help="keep the data order each epoch")
    g.add_argument("--checkpoint", metavar="RUN.ckpt",
                   help="write a checkpoint here after every epoch and on Ctrl-C / SIGTERM")
    g.add_argument("--resume", action="store_true",
                   help="continue from --checkpoint (a missing file starts afresh)")
    g.add_argument("--distributed", action="store_const", const="auto",
                   help="data-parallel over the ranks of mpiexec (MPI on CPUs, NCCL on GPUs); "
                   "--batch-size is the global batch")
    g.add_argument("--quiet", action="store_true", help="no progress bar or epoch lines")


def build_parser() -> Parser:
    parser = Parser(prog="fastbp", description="Train multilayer perceptrons by backpropagation "
                    "on NumPy, Numba (CPU) or CuPy (GPU).")
    parser.add_argument("--version", action="version", version=f"fastbp {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    train = sub.add_parser("train", help="train a network and report test accuracy",
                           description="Train an MLP on a bundled data set or a file, report "
                           "the test score, optionally save the model.")
    train.add_argument("data", nargs="?", default="digits",
                       help=f"bundled set ({', '.join(data.BUNDLED)}) or a .npz/.csv file "
                       "(default: digits)")
    train.add_argument("--target", default="-1",
                       help="CSV target column, name or index (default: last)")
    train.add_argument("--test-size", type=float, default=0.2,
                       help="fraction held out as the test set (default: 0.2)")
    train.add_argument("--save", metavar="MODEL.npz", help="write the trained model here")
    add_model_flags(train)
    add_fit_flags(train)

    predict = sub.add_parser("predict", help="predict with a saved model",
                             description="Write one prediction per row of a CSV of features.")
    predict.add_argument("model", help="a model saved by 'fastbp train --save'")
    predict.add_argument("data", help="CSV (or .npz with X) of features")
    predict.add_argument("--target", help="a target column to drop and score against")
    predict.add_argument("--output", "-o", help="write predictions to this CSV (default: stdout)")
    predict.add_argument("--proba", action="store_true", help="write class probabilities")
    predict.add_argument("--backend", default="auto", choices=["auto"] + backend_names())

    bench = sub.add_parser(
        "bench", help="compare the backends on identical training steps",
        description="Time training steps through fit on every usable backend (interleaved), "
        "against the GEMM floor and optionally PyTorch; print a table, write JSON and plots.")
    configure_bench(bench)

    diagnose = sub.add_parser(
        "diagnose", help="rerun the notes' initialisation experiment",
        description="Push unit-Gaussian input through a deep stack of layers and print the "
        "mean and std of every layer's activations; optionally plot their histograms.")
    diagnostics.configure_parser(diagnose)

    sub.add_parser("info", help="backends usable here, versions, BLAS and threads",
                   description="Print each backend, whether it is usable here and why not, "
                   "the versions, the BLAS in use and its thread count.")
    return parser


def run_train(args):
    from .model import MLP

    ds = data.load_any(args.data, args.target)
    output, loss = TASK_DEFAULTS[ds.task]
    output, loss = args.output or output, args.loss or loss
    X_train, X_test, y_train, y_test = data.train_test_split(ds.X, ds.y, args.test_size,
                                                             seed=args.seed)
    activation = args.activation.split(",")
    net = MLP([ds.X.shape[1], *args.hidden, ds.n_outputs],
              activation=activation[0] if len(activation) == 1 else activation,
              output=output, loss=loss, init=args.init, init_scale=args.init_scale,
              backend=args.backend, dtype=args.dtype, seed=args.seed,
              leaky_slope=args.leaky_slope, elu_alpha=args.elu_alpha,
              preprocess=None if args.preprocess == "none" else args.preprocess,
              maxout_pieces=args.maxout_pieces, prelu_init=args.prelu_init)
    say = (lambda *a: None) if args.quiet or launcher_rank() else print
    say(f"data: {ds.name} ({ds.task}), {len(X_train)} train / {len(X_test)} test samples, "
        f"{ds.X.shape[1]} features")
    say(f"backend: {net.backend.name} ({net.backend.reason})")
    say(f"model: {net}")
    history = net.fit(
        X_train, y_train, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
        optimizer=args.optimizer, momentum=args.momentum, weight_decay=args.weight_decay,
        dropout=args.dropout, input_noise=args.input_noise, precision=args.precision,
        validation_split=args.validation_split or 0.0, early_stopping=args.early_stopping,
        shuffle=not args.no_shuffle, verbose=0 if args.quiet else 1,
        checkpoint=args.checkpoint, resume=args.resume, distributed=args.distributed)
    if launcher_rank():
        return  # only rank 0 reports and saves
    if args.plot:
        history.plot(args.plot)
        say(f"wrote training curves to {args.plot}")
    metric = "R^2" if net.task == "regression" else "accuracy"
    print(f"test {metric}: {net.score(X_test, y_test):.4f}")
    if args.save:
        net.save(args.save)
        say(f"saved model to {args.save}")


def run_predict(args):
    from .io import load

    net = load(args.model, backend=args.backend)
    if args.data.endswith(".npz"):
        ds = data.load_npz(args.data)
        X, y = ds.X, ds.y
    else:
        header, table = data.read_csv(args.data)
        y = None
        if args.target is not None:
            col = data.column_index(header, args.target, table.shape[1])
            y, table = table[:, col], np.delete(table, col, axis=1)
        X = table
    out = net.predict_proba(X) if args.proba else net.predict(X)
    out = np.asarray(out)
    fmt = "%d" if out.dtype.kind in "iu" else "%.6g"
    np.savetxt(args.output or sys.stdout, out.reshape(len(X), -1), fmt=fmt, delimiter=",")
    if y is not None:
        metric = "R^2" if net.task == "regression" else "accuracy"
        print(f"{metric}: {net.score(X, y):.4f}", file=sys.stderr)


def run_info(_args):
    print(f"fastbp {__version__}, Python {platform.python_version()}, "
          f"numpy {np.__version__}, {platform.machine()}")
    from .backend import resolve

    for name in backend_names():
        usable, reason = probe(name)
        print(f"  {name:9s} {'usable  ' if usable else 'unusable'}  {reason}")
    try:
        print(f"auto -> {resolve('auto')[1]}")
    except RuntimeError as exc:
        print(f"auto -> {exc}")
    for line in blas_lines():
        print(line)
    for line in cpu_gemm_lines():
        print(line)


def cpu_gemm_lines() -> list[str]:
    """The CPU backends' GEMM providers and the Numba threads, each with why it was chosen."""
    name = "numba" if probe("numba")[0] else "numpy"
    from .backend import get_backend

    info = get_backend(name).describe()
    lines = [f"CPU GEMMs: {info['gemm']} ({info['gemm_reason']})",
             f"CPU bf16 GEMMs: {info['gemm_bf16']} ({info['gemm_bf16_reason']})"]
    if "threading_layer" in info:
        lines.append(f"Numba threads: {info['threads']} on {info['threading_layer']} "
                     f"({info['threads_reason']})")
    return lines


def blas_lines() -> list[str]:
    """The BLAS libraries loaded by NumPy and their thread counts."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return ["BLAS: install threadpoolctl to see the BLAS in use"]
    lines = []
    for pool in threadpool_info():
        lines.append(f"{pool.get('user_api')}: {pool.get('internal_api')} "
                     f"{pool.get('version')} ({pool.get('architecture', '?')}), "
                     f"{pool.get('num_threads')} threads")
    return lines or ["BLAS: none found"]


COMMANDS = {"train": run_train, "predict": run_predict, "info": run_info,
            "diagnose": diagnostics.run, "bench": run_bench}


def main(argv=None) -> int:
    try:
        args = build_parser().parse_args(argv)
        COMMANDS[args.command](args)
    except CliError as exc:
        print(exc, file=sys.stderr)
        return 2
    except (ValueError, TypeError, OSError, ImportError, RuntimeError, FloatingPointError) as exc:
        print(f"fastbp: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("fastbp: interrupted", file=sys.stderr)
        return 130
    return 0
