"""What the flags of ``fastbp train`` decide alone, checked before the data, the backend and
the model start up, so that no mistake in them costs a training run: the training options,
the test split, the activation names, hidden sizes that fit in memory, the backend asked
for, and output paths that the extras they need can write and that overwrite no input or
other output (``--save m.png --plot m.png`` would replace the model by the figure)."""

from __future__ import annotations

from . import checks, plots
from .activations import make_hidden
from .backend import resolve
from .files import check_distinct
from .fit_options import check_checkpoint, check_options
from .memory import check_fits
from .safetensors_io import import_safetensors, is_safetensors

#: the test and validation fractions when their flags are not given
HELD_OUT_DEFAULTS = {"test_size": 0.2, "validation_split": 0.1}
#: a data set of fewer rows trains on all of them unless the flags hold some out
MIN_ROWS_TO_HOLD_OUT = 20


def fit_options(args) -> dict:
    """The options of :func:`fastbp.fit_options.check_options` that the flags give."""
    return dict(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                optimizer=args.optimizer, momentum=args.momentum,
                weight_decay=args.weight_decay, dropout=args.dropout,
                input_noise=args.input_noise, precision=args.precision,
                validation_split=args.validation_split or 0.0,
                early_stopping=args.early_stopping, shuffle=not args.no_shuffle,
                verbose=0 if args.quiet else 1)


def check_train_flags(args):
    """Everything the flags alone decide (see the module docstring)."""
    check_options(**fit_options(args))
    if args.test_size is not None:
        checks.check_number(args.test_size, "test_size", low=0, high=1, high_open=True)
    checks.check_seed(args.seed)
    check_checkpoint(args.checkpoint, args.resume)
    if args.plot:
        plots.check_installed("--plot")
    if args.save and is_safetensors(args.save):
        import_safetensors()  # the extra, named, before training rather than after
    check_distinct({"--save": args.save, "--plot": args.plot, "--checkpoint": args.checkpoint},
                   {"the training data": args.data})
    for name in args.activation.split(","):
        make_hidden(name, leaky_slope=args.leaky_slope, elu_alpha=args.elu_alpha)
    hidden = args.hidden
    n_params = sum(a * b for a, b in zip(hidden, hidden[1:])) + sum(hidden)
    check_fits(2 * n_params * (4 if args.dtype == "float32" else 8),
               f"--hidden {','.join(map(str, hidden))} gives at least {n_params:,} "
               "parameters, which with their gradients")
    resolve(args.backend)


def held_out(args, n_rows: int) -> str | None:
    """Set ``args.test_size`` and ``args.validation_split`` where their flags were not given:
    :data:`HELD_OUT_DEFAULTS`, or 0 for a set of fewer than :data:`MIN_ROWS_TO_HOLD_OUT` rows
    (xor's four points cannot spare one); a note saying so, or None."""
    tiny = n_rows < MIN_ROWS_TO_HOLD_OUT
    chosen = []
    for name, default in HELD_OUT_DEFAULTS.items():
        if getattr(args, name) is None:
            setattr(args, name, 0.0 if tiny else default)
            chosen.append(f"--{name.replace('_', '-')}")
    if tiny and chosen:
        return (f"{n_rows} rows are too few to hold any out: training on all of them "
                f"({' and '.join(chosen)} 0; give them to hold rows out)")
    return None
