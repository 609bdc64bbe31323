"""The command line: ``fastbp train``, ``fastbp predict``, ``fastbp export``, ``fastbp info``.

Every user error is one line on stderr (``fastbp: error: ...``) and exit status 2, never a
traceback: a message that names an argument (``batch_size must be ...``) names the flag as
typed instead (``--batch-size must be ...``), for every flag of every command. Flags are
checked before data, backend and model start up (output files when parsed, see
:mod:`fastbp.argtypes`; training options, activations and sizes before the data load).
Output to a closed pipe (``fastbp predict ... | head``) ends quietly (status 141, like a
process killed by SIGPIPE); Ctrl-C says where the checkpoint went (status 130).
"""

from __future__ import annotations

import argparse
import csv
import os
import re
import sys

import numpy as np

from . import __version__, data, diagnostics, info
from .activations import HIDDEN_NAMES, NAMES as ACTIVATION_NAMES
from .argtypes import figure_file, output_file
from .backend import backend_names
from .bench import configure_parser as configure_bench
from .bench import run as run_bench
from .checkpoint import CheckpointedInterrupt
from .distributed import launcher_rank
from .files import atomic_write, check_distinct
from .init import INITS
from .csvfile import Columns
from .labels import LabelCoder, class_index
from .losses import LOSSES
from .optim import OPTIMIZERS
from .preprocess import PREPROCESSORS
from .train_flags import check_train_flags, fit_options, held_out

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


def int_list(text: str) -> tuple[int, ...]:
    """'256,128' -> (256, 128); '' -> () (no hidden layers); an empty item ('4,,4') is an
    error. A tuple: argparse leaves ``[]`` for a bare ``--`` (see :func:`check_single_values`)."""
    if not text.strip():
        return ()
    try:
        sizes = tuple(int(s) for s in text.split(","))
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
    g.add_argument("--hidden", type=int_list, default=(256,), metavar="N[,N...]",
                   help="hidden layer sizes, comma-separated; '' for none (default: 256)")
    g.add_argument("--activation", default="relu", metavar="NAME[,NAME...]",
                   help=f"hidden activation(s): {', '.join(HIDDEN_NAMES)} (default: relu)")
    g.add_argument("--output", choices=ACTIVATION_NAMES,
                   help="output activation (default: softmax, sigmoid or identity by task)")
    g.add_argument("--loss", choices=list(LOSSES),
                   help="loss (default: cross_entropy, binary_cross_entropy or mse by task)")
    g.add_argument("--init", choices=INITS, default="he", help="weight initialiser (default: he)")
    g.add_argument("--init-scale", type=float,
                   help="std (normal), bound (uniform) or gain (glorot_uniform)")
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
    g.add_argument("--plot", metavar="CURVES.png", type=figure_file,
                   help="write the training and validation cost per epoch to this figure")
    g.add_argument("--validation-split", type=float, default=None,
                   help="fraction of the training data held out for validation (default: 0.1; "
                   "0 for a set of under 20 rows)")
    g.add_argument("--early-stopping", type=int, metavar="PATIENCE",
                   help="stop after this many epochs without a better validation loss")
    g.add_argument("--no-shuffle", action="store_true", help="keep the data order each epoch")
    g.add_argument("--checkpoint", metavar="RUN.ckpt", type=output_file("checkpoint"),
                   help="write a checkpoint here after every epoch and on Ctrl-C / SIGTERM")
    g.add_argument("--resume", action="store_const", const=True, default=False,
                   help="continue from --checkpoint (a missing file starts afresh); refused "
                   "if the data or a trajectory-changing flag differ")
    g.add_argument("--resume-new-lr", dest="resume", action="store_const", const="new_lr",
                   help="like --resume, continuing with this run's --lr")
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
    add_header_flag(train)
    train.add_argument("--test-size", type=float, default=None,
                       help="fraction held out as the test set (default: 0.2, or 0 for a set "
                       "of under 20 rows; 0: train on all the data, no test score)")
    train.add_argument("--task", choices=list(TASK_DEFAULTS),
                       help="override the task guessed from the target column (the guess is "
                       "printed)")
    train.add_argument("--save", metavar="MODEL.npz", type=output_file("model"),
                       help="write the trained model here")
    add_model_flags(train)
    add_fit_flags(train)

    predict = sub.add_parser("predict", help="predict with a saved model",
                             description="Write one prediction per row of a CSV of features.")
    predict.add_argument("model", help="a model saved by 'fastbp train --save'")
    predict.add_argument("data", help="CSV (or .npz with X) of features")
    predict.add_argument("--target", help="a target column to drop and score against")
    add_header_flag(predict)
    predict.add_argument("--output", "-o", dest="predictions", type=output_file("predictions"),
                         help="write predictions to this CSV (default: stdout)")
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

    export = sub.add_parser("export", help="write a saved model as an ONNX graph",
                            description="Write a self-contained ONNX graph (preprocessing "
                            "folded in, dynamic batch size) of a model saved by 'fastbp train "
                            "--save'; needs pip install 'fastbp[export]'.")
    export.add_argument("model", help="a saved model (.npz or .safetensors)")
    export.add_argument("output", metavar="OUT.onnx", help="where to write the ONNX graph")

    sub.add_parser("info", help="backends usable here, versions, BLAS and threads",
                   description="Print each backend, whether it is usable here and why not, "
                   "the versions, the BLAS in use and its thread count.")
    return parser


def add_header_flag(p):
    p.add_argument("--header", action=argparse.BooleanOptionalAction, default=None,
                   help="the CSV's first row is (--header) or is not (--no-header) a row of "
                   "column names (default: a header if a cell of it is not a number)")


def run_train(args):
    check_train_flags(args)
    say = (lambda *a: None) if args.quiet or launcher_rank() else print
    ds = data.load_any(args.data, args.target, args.header)
    note = held_out(args, len(ds.X))
    if note:
        say(note)
    ds.task = args.task or ds.task
    say(f"task: {ds.task} ({task_source(args)})")
    data.check_range(ds.X, args.dtype, repr(args.data), ds.feature_names)
    classes = code_labels(ds)
    if classes:
        say(f"classes: {', '.join(map(str, classes))}")
    X_train, X_test, y_train, y_test = split_for_test(ds, classes, args.test_size, args.seed)
    net = build_network(args, ds, classes)
    say(f"data: {ds.name} ({ds.task}), {len(X_train)} train / {len(X_test)} test samples, "
        f"{ds.X.shape[1]} features")
    say(f"backend: {net.backend.name} ({net.backend.reason})")
    say(f"model: {net}")
    history = net.fit(X_train, y_train, **fit_options(args), checkpoint=args.checkpoint,
                      resume=args.resume, distributed=args.distributed)
    if launcher_rank():
        return  # only rank 0 reports and saves
    if args.save:  # the model first: the extras after it must not lose it
        net.save(args.save)
        say(f"saved model to {args.save}")
    metric = "R^2" if net.task == "regression" else "accuracy"
    if len(X_test):
        print(f"test {metric}: {net.score(X_test, y_test):.4f}")
    else:
        say("no test set (--test-size 0): trained on all the data")
    if args.plot:
        history.plot(args.plot)
        say(f"wrote training curves to {args.plot}")


def task_source(args) -> str:
    """Where the task came from: --task, the bundled set, or a guess from the target."""
    if args.task:
        return "from --task"
    if args.data in data.BUNDLED:
        return f"the bundled {args.data} set's; --task overrides"
    return "guessed from the target column; --task overrides"


def build_network(args, ds, classes):
    """The MLP the flags describe, for ``ds`` (its column names saved with it)."""
    from .model import MLP

    output, loss = TASK_DEFAULTS[ds.task]
    activation = args.activation.split(",")
    n_outputs = ds.n_outputs if classes is None or ds.task == "binary" else len(classes)
    return MLP([ds.X.shape[1], *args.hidden, n_outputs], classes=classes,
               activation=activation[0] if len(activation) == 1 else activation,
               output=args.output or output, loss=args.loss or loss, init=args.init,
               init_scale=args.init_scale, backend=args.backend, dtype=args.dtype,
               seed=args.seed, leaky_slope=args.leaky_slope, elu_alpha=args.elu_alpha,
               preprocess=None if args.preprocess == "none" else args.preprocess,
               maxout_pieces=args.maxout_pieces, prelu_init=args.prelu_init,
               feature_names=ds.feature_names, target_name=ds.target_name)


def run_predict(args):
    from .io import load

    check_distinct({"--output": args.predictions}, {"the model": args.model,
                                                    "the data": args.data})
    net = load(args.model, backend=args.backend)
    classes = net.config.get("classes")
    X, y = data.load_features(args.data, args.target, args.header, trained_columns(net))
    data.check_range(X, net.dtype, repr(args.data), net.config.get("feature_names"))
    if y is not None and classes is not None:
        y = class_index(y, classes, "the --target column")
    out = np.asarray(net.predict_proba(X) if args.proba else net.predict(X))
    out = out.reshape(len(X), -1)
    header = prediction_header(net, args.proba, out)
    names = classes if not args.proba else None
    if args.predictions:
        with atomic_write(args.predictions, "w") as f:
            write_predictions(f, out, header, names)
    else:
        write_predictions(sys.stdout, out, header, names)
    if y is not None:
        metric = "R^2" if net.task == "regression" else "accuracy"
        print(f"{metric}: {net.score(X, y):.4f}", file=sys.stderr)


def trained_columns(net) -> Columns | None:
    """The column names of the file ``net`` was trained on (None: not saved, or no header)."""
    features = net.config.get("feature_names")
    return None if features is None else Columns(features, net.config.get("target_name"))


def code_labels(ds):
    """Class names (None for regression), with ``ds.y`` turned into class indices: a CSV
    target column of names is read as labels; class labels (numbers or names, gaps allowed)
    become indices ``0..K-1``, so the output layer has one unit per class present."""
    if ds.task == "regression":
        if ds.y.dtype.kind in "USO":
            raise ValueError("--task regression needs a numeric target column")
        return None
    coder = LabelCoder().fit(ds.y, "the target column")
    classes = coder.classes.tolist()
    classes = [int(c) if isinstance(c, float) and c.is_integer() else c for c in classes]
    ds.y = class_index(ds.y, coder.classes).astype(np.float64)
    if ds.task == "binary" and len(classes) != 2:
        raise ValueError(f"--task binary needs 2 classes, the target column has {len(classes)}")
    return classes


def split_for_test(ds, classes, test_size, seed):
    """``X_train, X_test, y_train, y_test``, stratified by class name for a classification;
    ``test_size=0`` trains on everything."""
    if test_size == 0:
        return ds.X, ds.X[:0], ds.y, ds.y[:0]
    by_class = classes is not None and np.asarray(classes, dtype=object)[ds.y.astype(int)]
    try:
        return data.train_test_split(ds.X, ds.y, test_size, seed=seed, stratify=by_class)
    except data.SplitError as exc:
        raise ValueError(f"{exc}; if the target is a quantity, train with --task regression, "
                         "else with another --test-size") from None


def prediction_header(net, proba, out) -> list[str]:
    """Column names: ``prediction`` (one per output), or the class names for --proba."""
    classes = net.config.get("classes")
    if not proba:
        if out.shape[1] == 1:
            return ["prediction"]
        return [f"prediction_{k}" for k in range(out.shape[1])]
    if classes is None:
        return [f"class_{k}" for k in range(out.shape[1])]
    return [str(c) for c in (classes[-out.shape[1]:])]  # one sigmoid: the positive class


def write_predictions(target, out, header, classes):
    """A CSV with ``header`` (quoted where a name holds a comma or a quote); class indices
    written as ``classes`` names when given, numbers as the shortest text that reads back as
    the same value in their dtype (``str`` of a NumPy float32 or float64)."""
    names = [str(name) for name in [*header, *(classes or [])]]
    if classes is not None and out.dtype.kind in "iu":
        out = np.asarray(classes, dtype=object)[out]
    # minimal quoting misses a carriage return when lines end in "\n" alone
    quoting = csv.QUOTE_ALL if any("\r" in name for name in names) else csv.QUOTE_MINIMAL
    writer = csv.writer(target, lineterminator="\n", quoting=quoting)
    writer.writerow(header)
    writer.writerows([str(value) for value in row] for row in out)


def run_export(args):
    """``fastbp export MODEL OUT.onnx``: the output path is checked before the model is read."""
    import os

    from .io import load

    if not args.output.lower().endswith(".onnx"):
        raise CliError(f"fastbp export: error: OUT.onnx must end in .onnx, got {args.output!r}")
    folder = os.path.dirname(os.path.abspath(args.output))
    if not os.path.isdir(folder):
        raise CliError(f"fastbp export: error: OUT.onnx: no such directory {folder!r}")
    check_distinct({"OUT.onnx": args.output}, {"the model": args.model})
    load(args.model, backend="numpy").to_onnx(args.output)
    print(f"wrote {args.output}", file=sys.stderr)


COMMANDS = {"train": run_train, "predict": run_predict, "info": info.run,
            "diagnose": diagnostics.run, "bench": run_bench, "export": run_export}


#: user errors: one line, exit status 2 (MemoryError: a size too large for this machine)
USER_ERRORS = (ValueError, TypeError, OSError, ImportError, RuntimeError, FloatingPointError,
               MemoryError)


def main(argv=None) -> int:
    parser = args = None
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        check_single_values(parser, args)
        COMMANDS[args.command](args)
    except CliError as exc:
        print(exc, file=sys.stderr)
        return 2
    except BrokenPipeError:
        return closed_pipe()
    except USER_ERRORS as exc:
        print(f"fastbp: error: {name_flags(one_line(exc), parser, args)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        note = checkpoint_note(args) if isinstance(exc, CheckpointedInterrupt) else ""
        print(f"fastbp: interrupted{note}", file=sys.stderr)
        return 130
    return 0


def check_single_values(parser, args):
    """Every one-value flag holds one value. argparse drops a bare ``--`` given as a value
    (``--activation=--``) and leaves an empty list behind instead of refusing it."""
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for action in sub.choices[args.command]._actions:
        if action.nargs is None and action.option_strings \
                and getattr(args, action.dest, None) == []:
            raise CliError(f"fastbp {args.command}: error: argument "
                           f"{'/'.join(action.option_strings)}: expected one value")


def one_line(exc) -> str:
    """The exception's message on one line (a MemoryError says what it is)."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return f"out of memory: {text}" if isinstance(exc, MemoryError) else text


def name_flags(message: str, parser, args) -> str:
    """``message`` with each argument name the command's flags set (``batch_size must``,
    ``lr=0.1``, ``validation_split > 0``) replaced by the flag (``--batch-size must``), and
    an argument set to a flag's constant (``resume='new_lr'``) by that flag
    (``--resume-new-lr``)."""
    if args is None or parser is None:
        return message
    for (dest, const), flag in const_flags(parser, args.command).items():
        message = re.sub(rf"(?<![\w-]){re.escape(f'{dest}={const!r}')}(?![\w'])", flag,
                         message)
    for dest, flag in flag_names(parser, args.command).items():
        pattern = rf"(?<![\w-]){re.escape(dest)}(?=\[| must| needs|=| is not| [<>]=? ?[-\d])"
        message = re.sub(pattern, flag, message)
    return message


def command_actions(parser, command) -> list:
    """The actions of ``command``'s subparser that have long flags."""
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return [a for a in sub.choices[command]._actions
            if any(o.startswith("--") for o in a.option_strings)]


def long_flag(action) -> str:
    return next(o for o in action.option_strings if o.startswith("--"))


def flag_names(parser, command) -> dict:
    """``{dest: "--long-flag"}`` of the options of ``command``'s subparser."""
    names = {}
    for action in command_actions(parser, command):
        names.setdefault(action.dest, long_flag(action))
    return names


def const_flags(parser, command) -> dict:
    """``{(dest, constant): "--flag"}`` of the flags that set a constant (``--resume``,
    ``--resume-new-lr``, ``--quiet``)."""
    return {(a.dest, a.const): long_flag(a) for a in command_actions(parser, command)
            if a.nargs == 0 and a.const is not None}


def checkpoint_note(args) -> str:
    """Where the checkpoint of an interrupted training went."""
    return (f"; checkpoint written to {args.checkpoint} (continue with the same command and "
            "--resume)")


def closed_pipe() -> int:
    """The reader of our output went away (``| head``): stop quietly, and keep Python from
    complaining when it flushes stdout at exit."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    return 141
