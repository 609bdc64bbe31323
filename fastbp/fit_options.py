"""The options of :func:`fastbp.train.fit`, all validated before the model is touched: each
error names the option, what it must be and what it got.

:func:`check_options` gives the :class:`FitOptions` (the plain options and their mutual
constraints), :func:`check_backend_options` those that depend on the backend or exclude each
other, :func:`check_checkpoint` the checkpoint path and ``resume``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from . import checks
from . import checkpoint as checkpoints
from .callbacks import Callback, EarlyStopping, WatchesPlateau, as_callback
from .files import check_writable, is_stream
from .metrics import check_for_task, make_metrics
from .optim import OPTIMIZERS
from .schedules import Adaptive, Constant, make_schedule
from .weights import check_class_weight, check_class_weight_for

#: GEMM precisions a fit may ask for ("tf32": float32 GEMMs on TF32 tensor cores, GPU only;
#: "bf16": bf16 GEMM inputs, float32 accumulation, weights and optimizer state)
PRECISIONS = ("highest", "tf32", "bf16")


@dataclass
class FitOptions:
    """The validated options of :func:`~fastbp.train.fit`."""

    epochs: int
    batch_size: int | None
    lr: float
    optimizer: str
    momentum: float
    weight_decay: float
    dropout: float
    input_noise: float
    validation_split: float
    early_stopping: int | None
    shuffle: bool
    verbose: int
    callbacks: list
    precision: str
    class_weight: object = None
    lr_schedule: object = "constant"
    metrics: list = field(default_factory=list)
    beta1: float = 0.9
    beta2: float = 0.999
    epsilon: float = 1e-8
    continue_training: bool = False
    max_fun: int | None = None  # L-BFGS: most cost evaluations (None: SciPy's 15000)
    gtol: float | None = None  # L-BFGS: projected-gradient tolerance (None: SciPy's 1e-5)


#: what a :meth:`~fastbp.MLP.partial_fit` takes from the fit it continues unless given: the
#: options of the steps (not those of the run: epochs, verbose, validation, early stopping,
#: metrics and callbacks are each call's own)
CONTINUED_OPTIONS = ("batch_size", "lr", "optimizer", "momentum", "weight_decay", "dropout",
                     "input_noise", "shuffle", "precision", "class_weight", "lr_schedule",
                     "beta1", "beta2", "epsilon")


def continued_options(opts: FitOptions) -> dict:
    """The :data:`CONTINUED_OPTIONS` of ``opts``, as ``fit`` keywords."""
    return {name: getattr(opts, name) for name in CONTINUED_OPTIONS}


def as_list(callbacks) -> list:
    """``callbacks=`` as a list: None is none, one callback (or function) is a list of one."""
    if callbacks is None:
        return []
    if isinstance(callbacks, (list, tuple)):
        return list(callbacks)
    if isinstance(callbacks, Callback) or callable(callbacks):
        return [callbacks]
    raise TypeError(f"callbacks must be a list of Callback objects or functions f(epoch, "
                    f"logs), got {callbacks!r}")


def check_options(epochs=50, batch_size=32, lr=0.001, optimizer="adam", momentum=0.9,
                  weight_decay=0.0, dropout=0.0, input_noise=0.0, validation_data=None,
                  validation_split=0.0,
                  early_stopping=None, shuffle=True, verbose=1, callbacks=None,
                  precision="highest", class_weight=None, lr_schedule="constant", metrics=None,
                  beta1=0.9, beta2=0.999, epsilon=1e-8, continue_training=False,
                  max_fun=None, gtol=None) -> FitOptions:
    """Validate every option of :func:`~fastbp.train.fit` (``validation_data`` is checked
    with the data)."""
    number = checks.check_number
    callbacks = [as_callback(cb) for cb in as_list(callbacks)]
    make_schedule(lr_schedule)
    options = FitOptions(
        epochs=number(epochs, "epochs", low=1, integer=True),
        batch_size=number(batch_size, "batch_size", low=1, integer=True, allow_none=True),
        lr=number(lr, "lr", low=0, low_open=True),
        optimizer=checks.check_choice(optimizer, "optimizer", OPTIMIZERS + ("lbfgs",)),
        momentum=number(momentum, "momentum", low=0, high=1, high_open=True),
        weight_decay=number(weight_decay, "weight_decay", low=0),
        dropout=number(dropout, "dropout", low=0, high=1, high_open=True),
        input_noise=number(input_noise, "input_noise", low=0),
        validation_split=number(validation_split, "validation_split", low=0, high=1,
                                high_open=True),
        early_stopping=number(early_stopping, "early_stopping", low=1, integer=True,
                              allow_none=True),
        shuffle=checks.check_flag(shuffle, "shuffle"),
        verbose=number(verbose, "verbose", low=0, high=2, integer=True),
        callbacks=callbacks,
        precision=checks.check_choice(precision, "precision", PRECISIONS),
        class_weight=check_class_weight(class_weight),
        lr_schedule=lr_schedule,
        metrics=metric_specs(metrics),
        beta1=number(beta1, "beta1", low=0, high=1, high_open=True),
        beta2=number(beta2, "beta2", low=0, high=1, high_open=True),
        epsilon=number(epsilon, "epsilon", low=0, low_open=True),
        continue_training=checks.check_flag(continue_training, "continue_training"),
        max_fun=number(max_fun, "max_fun", low=1, integer=True, allow_none=True),
        gtol=number(gtol, "gtol", low=0, allow_none=True))
    if validation_data is not None and options.validation_split:
        raise ValueError("give validation_data or validation_split, not both")
    has_validation = validation_data is not None or options.validation_split > 0
    if options.early_stopping and not has_validation:
        raise ValueError("early_stopping needs validation_data or validation_split > 0")
    if options.metrics and not has_validation:
        raise ValueError("metrics are computed on the validation set: give validation_data "
                         "or validation_split > 0")
    check_steering(options, has_validation)
    return options


def check_steering(options: FitOptions, has_validation: bool):
    """What the schedule and the callbacks watch is in the logs this run will write, before
    any epoch: 'adaptive' has a stopping rule to lower the rate for, L-BFGS no schedule."""
    schedule = make_schedule(options.lr_schedule)
    if options.optimizer == "lbfgs" and not isinstance(schedule, Constant):
        raise ValueError("optimizer='lbfgs' takes no learning rate, so no lr_schedule")
    if isinstance(schedule, Adaptive) and not options.early_stopping and not any(
            isinstance(cb, EarlyStopping) and cb.on_plateau is not None
            for cb in options.callbacks):
        raise ValueError("lr_schedule='adaptive' lowers the rate where early stopping would "
                         "stop: give early_stopping=N (and a validation set)")
    logs = {"loss", "lr", "seconds"}
    if has_validation:
        logs |= {"val_loss", "val_score"} | {f"val_{name}" for name in
                                             make_metrics(options.metrics)}
    for watcher in [schedule, *options.callbacks]:
        if isinstance(watcher, WatchesPlateau) and watcher.plateau.monitor not in logs:
            raise ValueError(f"{watcher!r} watches {watcher.plateau.monitor!r}, which this "
                             f"run does not log; it logs {sorted(logs)}"
                             + ("" if has_validation else " (val_* need a validation set)"))


def metric_specs(metrics) -> list:
    """``metrics=`` as a validated list of names and callables."""
    specs = [] if metrics is None else [metrics] if isinstance(metrics, str) or callable(
        metrics) else list(metrics)
    make_metrics(specs)
    return specs


def check_backend_options(opts, net, checkpoint, distributed):
    """Options that depend on the network's backend, dtype and task, or exclude each
    other."""
    check_for_task(opts.metrics, net.task, net.sizes[-1])
    check_class_weight_for(opts.class_weight, net.task, net.sizes[-1])
    backend = net.backend
    if opts.precision not in backend.precisions:
        why = getattr(backend, "unavailable_precisions", {}).get(opts.precision)
        raise ValueError(f"precision={opts.precision!r} is not offered by backend "
                         f"{backend.name!r} (it offers {list(backend.precisions)})"
                         + (f": {why}" if why else ""))
    if opts.precision == "bf16" and str(net.dtype) != "float32":
        raise ValueError(f"precision='bf16' trains float32 networks (float32 master weights, "
                         f"bf16 GEMM inputs); this one is {net.dtype}")
    if opts.optimizer == "lbfgs":
        clashes = {"dropout": opts.dropout > 0, "input_noise": opts.input_noise > 0,
                   "checkpoint": checkpoint is not None, "distributed": distributed is not None}
        named = [name for name, clash in clashes.items() if clash]
        if named:
            raise ValueError(f"optimizer='lbfgs' is full-batch and deterministic; it does not "
                             f"combine with {', '.join(named)}")


def check_checkpoint(checkpoint, resume):
    """A checkpoint is a path where a file can be written; ``resume`` needs one."""
    if checkpoint is not None and not isinstance(checkpoint, (str, os.PathLike)):
        raise TypeError(f"checkpoint must be a file path, got {type(checkpoint).__name__}")
    if checkpoints.check_resume(resume) and checkpoint is None:
        raise ValueError(f"resume={resume!r} needs checkpoint='path' to resume from")
    if checkpoint is not None and is_stream(checkpoint):
        raise ValueError(f"checkpoint must be a regular file (a resume reads it back), got "
                         f"{os.fspath(checkpoint)!r}")
    if checkpoint is not None:
        check_writable(checkpoint, "checkpoint")
