"""Training checkpoints that resume exactly: weights, optimizer state, RNG state, position.

A checkpoint is written atomically (see :mod:`fastbp.files`) at the end of every epoch and,
on Ctrl-C / SIGTERM, after the step in flight. It holds everything the next step depends on,
so a run resumed from it ends bit-identical to one that was never interrupted:

- the flat parameter vector and the optimizer's state vectors and step count;
- the model's host RNG state (shuffles, dropout masks), and the permutation that drew the
  validation split (so a resumed run holds out the same rows, even with ``seed=None``);
- the epoch and, for a mid-epoch checkpoint, that epoch's shuffle order, the next row and the
  loss summed so far;
- the learning rate of the coming steps (a plateau schedule may have lowered it) and the
  counts of the callbacks that keep any (:meth:`~fastbp.callbacks.Callback.state`: early
  stopping's best value and patience used, a plateau schedule's);
- the history, the model config, and the run's :func:`fingerprint`.

Resume continues the same run, or refuses: the fingerprint (a digest of the training and
validation data, and every fit option that changes the trajectory, taken generically from
:class:`~fastbp.fit_options.FitOptions`) and the model config must match, naming what differs.
``resume="new_lr"`` is the one override: it continues with this fit's learning rate.
A checkpoint is read and validated in full into a :class:`Saved` before anything changes;
:func:`restore` then commits it, so a refused or corrupt checkpoint leaves the model as it was.
While a fit writes a checkpoint it holds an exclusive lock on it (``.NAME.lock`` beside it):
a second process training into the same path is refused.
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import math
import numbers
import os
import signal
import threading
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from .callbacks import callback_states, load_callback_states
from .files import FileFormatError, atomic_savez, read_savez
from .history import History

FORMAT = "fastbp-checkpoint"
VERSION = 3
#: versions this fastbp resumes (2 lacks the learning rate and the callbacks' counts, which
#: then start afresh)
READABLE_VERSIONS = (2, 3)
#: fit options that do not change the steps already taken (a resumed run may change them)
UNFINGERPRINTED_OPTIONS = ("epochs", "verbose", "callbacks")
#: fit options a resume may override when asked to, and how it asks
OVERRIDES = {"lr": "new_lr"}
#: config entries that only decide the initial weights, which the checkpoint replaces
INITIAL_ONLY_KEYS = ("init", "init_scale", "seed", "prelu_init")
#: config entries that name the data's columns (older checkpoints lack them)
NAMING_KEYS = ("feature_names", "target_name")
RESUME_MODES = (False, True, *OVERRIDES.values())


@dataclass
class Position:
    """Where training stands: ``epoch`` finished epochs, or inside epoch ``epoch + 1`` at row
    ``next_row`` of ``order`` with ``loss_so_far`` summed over the rows done."""

    epoch: int
    next_row: int = 0
    order: np.ndarray | None = None
    loss_so_far: float = 0.0

    @property
    def mid_epoch(self) -> bool:
        return self.next_row > 0


@dataclass
class Saved:
    """A checkpoint read and validated in full, not yet applied to anything."""

    position: Position
    params: np.ndarray
    optimizer_arrays: dict
    optimizer_scalars: dict
    rng_state: dict
    history: dict
    best: np.ndarray | None
    split_order: np.ndarray | None
    #: the learning rate to go on with (None: this fit's, as a version-2 file or new_lr)
    lr: float | None = None
    #: ``[{"kind": class name, "state": {...}}, ...]``, one per callback of the saved run
    callback_states: list = dataclasses.field(default_factory=list)
    #: training rows stepped on (what 'invscaling' decays by; None: a version-2 file)
    samples_seen: int | None = None


def check_resume(resume):
    """``resume``: False, True, or an override of :data:`OVERRIDES` (``"new_lr"``)."""
    if not any(resume is mode or (isinstance(mode, str) and resume == mode)
               for mode in RESUME_MODES):
        raise ValueError(f"resume must be one of {list(RESUME_MODES)}, got {resume!r}")
    return resume


def fingerprint(opts, X, Y, validation, to_host=None, sample_weight=None) -> dict:
    """What identifies a run: a digest of the training data ``(X, Y)`` and of ``validation``
    (``(X_val, Y_val)`` or None), and every option of ``opts`` (a dataclass) but
    :data:`UNFINGERPRINTED_OPTIONS`, each as a JSON value (arrays by digest). ``to_host``
    brings data that lives on a device to the host first (the backend's ``to_numpy``);
    ``sample_weight`` (or None) is part of the data."""
    if to_host is not None:
        X, Y = to_host(X), to_host(Y)
        validation = validation and tuple(to_host(a) for a in validation)
    options = {f.name: describe(getattr(opts, f.name)) for f in dataclasses.fields(opts)
               if f.name not in UNFINGERPRINTED_OPTIONS}
    weights = [] if sample_weight is None else [digest(sample_weight)]
    data = {"train": [digest(X), digest(Y)] + weights,
            "validation": None if validation is None else [digest(a) for a in validation]}
    return {"options": options, "data": data}


def describe(value):
    """A JSON-comparable stand-in for an option's value: itself for plain values, a digest for
    arrays, the qualified name for a callable."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [describe(v) for v in value]
    if isinstance(value, dict):
        return {str(k): describe(v) for k, v in value.items()}
    if callable(value):
        return f"{getattr(value, '__module__', '?')}.{getattr(value, '__qualname__', value)}"
    if hasattr(value, "shape") and hasattr(value, "dtype"):
        return digest(value)
    return repr(value)


def digest(array) -> str:
    """``shape dtype blake2b(bytes)`` of a host array."""
    array = np.ascontiguousarray(array)
    return (f"{array.shape} {array.dtype} "
            f"{hashlib.blake2b(memoryview(array).cast('B'), digest_size=16).hexdigest()}")


def save(path, trainer, position: Position):
    """Write ``trainer``'s state at ``position`` to ``path``."""
    net, be = trainer.net, trainer.backend
    opt_arrays, opt_scalars = trainer.optimizer.state()
    arrays = {"params": be.to_numpy(net.params)}
    arrays.update({f"opt_{k}": be.to_numpy(v) for k, v in opt_arrays.items()})
    if position.order is not None:
        arrays["order"] = np.asarray(position.order)
    if trainer.best is not None:
        arrays["best"] = be.to_numpy(trainer.best)
    if trainer.split_order is not None:
        arrays["split_order"] = np.asarray(trainer.split_order)
    meta = {
        "format": FORMAT, "version": VERSION, "config": net.config,
        "optimizer": trainer.opts.optimizer, "optimizer_scalars": opt_scalars,
        "rng_state": net.rng.bit_generator.state, "epoch": position.epoch,
        "next_row": position.next_row, "loss_so_far": position.loss_so_far,
        "history": trainer.history.as_dict(), "fingerprint": trainer.fingerprint,
        "lr": trainer.lr, "callbacks": callback_states(trainer.callbacks),
        "samples_seen": trainer.state.samples_seen,
    }
    atomic_savez(path, arrays, meta)


def read(path, net, opts, run_fingerprint, n_rows, resume=True) -> Saved | None:
    """The checkpoint at ``path`` for a fit of ``net`` with ``opts`` on ``n_rows`` rows
    (before the validation split) and ``run_fingerprint``, validated in full; None when
    there is no file (a fresh start, so a job can always pass ``resume=True``). Nothing is
    changed: :func:`restore` applies it."""
    path = os.fspath(path)
    if not os.path.exists(path):
        return None
    shapes_needed = expected_shapes(net, opts, n_rows)

    def validate(meta, shapes):
        check_header(path, meta)
        check_compatible(path, meta, net, opts, run_fingerprint, resume)
        check_shapes(path, shapes, shapes_needed)

    meta, arrays = read_savez(path, "fastbp checkpoint", validate)
    saved = parse(path, meta, arrays, net, opts, n_rows)
    if meta["version"] >= 3:
        saved.lr = None if resume == OVERRIDES["lr"] else check_lr(path, meta.get("lr"))
        saved.callback_states = check_callback_states(path, meta.get("callbacks"))
        saved.samples_seen = meta.get("samples_seen")
        if not (is_int(saved.samples_seen) and saved.samples_seen >= 0):
            raise FileFormatError(f"checkpoint {path!r}: samples_seen must be an integer >= 0, "
                                  f"got {saved.samples_seen!r}")
    return saved


def expected_shapes(net, opts, n_rows) -> dict:
    """Array name -> shape (None: any length-``n`` vector, checked in :func:`parse`)."""
    vector = (net.n_params,)
    shapes = {"params": vector, "best": vector, "order": None, "split_order": (n_rows,)}
    probe = make_probe_optimizer(net, opts)
    shapes.update({f"opt_{name}": vector for name in probe.state_arrays})
    return shapes


def make_probe_optimizer(net, opts):
    """An optimizer of the kind ``opts`` names, with state vectors of length 0: what its
    :meth:`state` names, at no cost."""
    from .optim import make_optimizer

    return make_optimizer(opts.optimizer, net.backend, 0, net.dtype, opts.lr, opts.momentum)


def check_header(path, meta):
    if meta.get("format") != FORMAT:
        raise FileFormatError(f"{path!r} is not a fastbp checkpoint (format "
                              f"{meta.get('format')!r})")
    if meta.get("version") not in READABLE_VERSIONS:
        raise FileFormatError(f"checkpoint {path!r} has format version {meta.get('version')!r},"
                              f" this fastbp reads versions {list(READABLE_VERSIONS)}: start "
                              "the run afresh")
    for key in ("config", "history", "rng_state", "fingerprint", "optimizer_scalars"):
        if not isinstance(meta.get(key), dict):
            raise FileFormatError(f"checkpoint {path!r}: {key!r} must be a JSON object")


def check_compatible(path, meta, net, opts, run_fingerprint, resume):
    """Refuse a checkpoint of another model, optimizer, data or trajectory-changing option,
    naming the difference (``resume="new_lr"`` lets the learning rate differ)."""
    saved, current = meta["config"], net.config
    for key in sorted(set(saved) | set(current)):
        if key not in INITIAL_ONLY_KEYS + NAMING_KEYS and saved.get(key) != current.get(key):
            raise ValueError(f"checkpoint {path!r} is of another architecture: {key} is "
                             f"{saved.get(key)!r} there, {current.get(key)!r} here")
    if meta.get("optimizer") != opts.optimizer:
        raise ValueError(f"checkpoint {path!r} was written with optimizer="
                         f"{meta.get('optimizer')!r}, this fit uses {opts.optimizer!r}")
    stored = meta["fingerprint"]
    if stored.get("data") != run_fingerprint["data"]:
        part = next((k for k in ("train", "validation")
                     if (stored.get("data") or {}).get(k) != run_fingerprint["data"][k]), "train")
        raise ValueError(f"checkpoint {path!r} was written training on other {part} data "
                         f"(different rows, values or order): resume with the same data")
    overridden = {option for option, mode in OVERRIDES.items() if resume == mode}
    saved_options, options = stored.get("options") or {}, run_fingerprint["options"]
    for name in sorted(set(saved_options) | set(options)):
        if name not in overridden and saved_options.get(name) != options.get(name):
            hint = (f" (resume={OVERRIDES[name]!r} continues with this fit's {name})"
                    if name in OVERRIDES else "")
            raise ValueError(f"checkpoint {path!r} was written with {name}="
                             f"{saved_options.get(name)!r}, this fit uses "
                             f"{name}={options.get(name)!r}{hint}")


def check_shapes(path, shapes, needed):
    """Only known arrays, each of the shape this fit needs; ``params`` present."""
    unknown = sorted(set(shapes) - set(needed))
    if unknown:
        raise FileFormatError(f"checkpoint {path!r}: unexpected arrays {unknown}")
    missing = sorted(n for n in needed
                     if (n == "params" or n.startswith("opt_")) and n not in shapes)
    if missing:
        raise FileFormatError(f"checkpoint {path!r}: the parameters or optimizer state "
                              f"{missing} are missing")
    for name, shape in shapes.items():
        want = needed[name]
        if (want is None and len(shape) != 1) or (want is not None and tuple(shape) != want):
            raise FileFormatError(f"checkpoint {path!r}: array {name!r} has shape "
                                  f"{tuple(shape)}, this fit needs {want or '(n,)'}")


def parse(path, meta, arrays, net, opts, n_rows) -> Saved:
    """Every value of the checkpoint checked, into a :class:`Saved`."""
    for name in ("params", "best"):
        if name in arrays and not np.isfinite(arrays[name]).all():
            raise FileFormatError(f"checkpoint {path!r}: {name} holds NaN or inf")
    split_order = arrays.get("split_order")
    if split_order is not None:
        check_permutation(path, "split_order", split_order, n_rows)
    n_train = n_rows - validation_rows(opts, n_rows, split_order)
    position = parse_position(path, meta, arrays.get("order"), opts, n_train)
    optimizer_class = make_probe_optimizer(net, opts)
    scalars = meta["optimizer_scalars"]
    if set(scalars) != set(optimizer_class.state_scalars) or not all(
            is_int(v) and v >= 0 for v in scalars.values()):
        raise FileFormatError(f"checkpoint {path!r}: optimizer_scalars must be step counts "
                              f"(integers >= 0) {list(optimizer_class.state_scalars)}, got "
                              f"{scalars!r}")
    return Saved(position, arrays["params"],
                 {k[4:]: v for k, v in arrays.items() if k.startswith("opt_")}, scalars,
                 check_rng_state(path, meta["rng_state"], net.rng),
                 check_history(path, meta["history"], position.epoch), arrays.get("best"),
                 split_order)


def validation_rows(opts, n_rows, split_order) -> int:
    """Rows the validation split holds out (0 without one)."""
    return int(round(opts.validation_split * n_rows)) if split_order is not None else 0


def parse_position(path, meta, order, opts, n_train) -> Position:
    """``epoch``, ``next_row``, ``order`` and ``loss_so_far``, each checked against this fit."""
    epoch, next_row, loss = meta.get("epoch"), meta.get("next_row"), meta.get("loss_so_far")
    batch = min(opts.batch_size or n_train, n_train)
    if not (is_int(epoch) and epoch >= 0):
        raise FileFormatError(f"checkpoint {path!r}: epoch must be an integer >= 0, "
                              f"got {epoch!r}")
    if epoch > opts.epochs or (epoch == opts.epochs and next_row):
        where = f"inside epoch {epoch + 1}" if next_row else f"already at epoch {epoch}"
        raise ValueError(f"checkpoint {path!r} is {where}, past epochs={opts.epochs}: to "
                         f"train on, resume with epochs > {epoch}; to start afresh, remove "
                         "the checkpoint or use another path")
    if not (is_int(next_row) and 0 <= next_row < n_train and next_row % batch == 0):
        raise FileFormatError(f"checkpoint {path!r}: next_row must be a multiple of the batch "
                              f"size {batch} in [0, {n_train}), got {next_row!r}")
    if not is_finite_number(loss):
        raise FileFormatError(f"checkpoint {path!r}: loss_so_far must be a finite number, "
                              f"got {loss!r}")
    if next_row and opts.shuffle:
        if order is None:
            raise FileFormatError(f"checkpoint {path!r}: a mid-epoch checkpoint of a shuffled "
                                  "run must hold the epoch's order")
        check_permutation(path, "order", order, n_train)
    elif order is not None:
        raise FileFormatError(f"checkpoint {path!r}: holds a shuffle order this fit does not "
                              "use")
    return Position(epoch, next_row, order, float(loss))


def is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value) -> bool:
    """A JSON number (a bool is not one)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def is_finite_number(value) -> bool:
    return is_number(value) and math.isfinite(value)


def check_permutation(path, name, order, n):
    """``order`` must be a permutation of ``0..n-1`` (an index out of range would read outside
    the training set, on a GPU outside the device array)."""
    if (order.dtype.kind not in "iu" or order.shape != (n,)
            or not np.array_equal(np.sort(order), np.arange(n))):
        raise FileFormatError(f"checkpoint {path!r}: {name} must be a permutation of "
                              f"0..{n - 1}")


def check_rng_state(path, state, rng) -> dict:
    """The saved bit-generator state, accepted by a generator of ``rng``'s kind."""
    try:
        type(rng.bit_generator)().state = state
    except (TypeError, ValueError, KeyError) as exc:
        raise FileFormatError(f"checkpoint {path!r}: bad rng_state ({exc})") from None
    return state


def check_lr(path, lr) -> float:
    if not (is_finite_number(lr) and lr > 0):
        raise FileFormatError(f"checkpoint {path!r}: lr must be a number > 0, got {lr!r}")
    return lr


def check_callback_states(path, states) -> list:
    """A list of ``{"kind": name, "state": {name: number or None}}``."""
    def is_entry(entry):
        return (isinstance(entry, dict) and set(entry) == {"kind", "state"}
                and isinstance(entry["kind"], str) and isinstance(entry["state"], dict)
                and all(v is None or is_number(v)
                        for v in entry["state"].values()))

    if not (isinstance(states, list) and all(map(is_entry, states))):
        raise FileFormatError(f"checkpoint {path!r}: callbacks must be a list of "
                              f"{{'kind': name, 'state': {{name: number}}}}, got {states!r}")
    return states


def check_history(path, history, epochs) -> dict:
    """The saved history: the fields of :class:`~fastbp.history.History`, one entry per epoch."""
    fields = {f.name for f in dataclasses.fields(History)}
    numbers_per_epoch = {"train_loss": False, "seconds": False, "lr": False, "val_loss": True,
                         "val_score": True}  # name: whether None (no validation) may stand
    metrics = history.get("metrics")
    ok = (set(history) == fields and history.get("epoch") == list(range(1, epochs + 1))
          and all(is_series(history[name], epochs, may_be_none)
                  for name, may_be_none in numbers_per_epoch.items())
          and isinstance(metrics, dict)
          and all(isinstance(k, str) and is_series(v, epochs, True) for k, v in metrics.items())
          and (history["best_epoch"] is None
               or (is_int(history["best_epoch"]) and 1 <= history["best_epoch"] <= epochs))
          and isinstance(history["stopped_early"], bool))
    if not ok:
        raise FileFormatError(f"checkpoint {path!r}: the history does not hold {epochs} "
                              f"epoch(s) of {sorted(fields)}")
    return history


def is_series(values, length, may_be_none) -> bool:
    """A list of ``length`` finite numbers (or None, where ``may_be_none``)."""
    return isinstance(values, list) and len(values) == length and all(
        (value is None and may_be_none) or is_finite_number(value) for value in values)


def restore(saved: Saved, trainer) -> Position:
    """Commit a validated checkpoint into ``trainer`` (its model, optimizer, history)."""
    net = trainer.net
    net.set_flat_params(saved.params)
    trainer.optimizer.load_state(saved.optimizer_arrays, saved.optimizer_scalars)
    net.rng.bit_generator.state = saved.rng_state
    for key, value in saved.history.items():
        setattr(trainer.history, key, value)
    if saved.best is not None:
        trainer.best = net.backend.asarray(saved.best, net.dtype)
    if saved.samples_seen is not None:
        trainer.state.samples_seen = saved.samples_seen
    return saved.position


def restore_callbacks(saved: Saved, trainer):
    """After the callbacks' ``on_train_begin``: the saved learning rate and each callback's
    counts (a resumed run may bring other callbacks: see
    :func:`~fastbp.callbacks.load_callback_states`)."""
    if saved.lr is not None:
        trainer.lr = saved.lr
    load_callback_states(trainer.callbacks, saved.callback_states)


@contextmanager
def exclusive(path, enabled=True):
    """Hold an exclusive lock on checkpoint ``path`` while a fit writes it: a second process
    (or fit) training into the same path gets a clear error instead of a mixed checkpoint."""
    if not enabled:
        yield
        return
    import fcntl

    real = os.path.realpath(os.fspath(path))
    lock_path = os.path.join(os.path.dirname(real), f".{os.path.basename(real)}.lock")
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as exc:
        raise OSError(exc.errno, f"cannot write the checkpoint {os.fspath(path)!r}: "
                                 f"{exc.strerror}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise
            raise RuntimeError(f"checkpoint {os.fspath(path)!r} is being written by another "
                               "training run: give this one another checkpoint path") from None
        yield
    finally:
        os.close(fd)


class CheckpointedInterrupt(KeyboardInterrupt):
    """A Ctrl-C that training took after the step in flight, with the checkpoint written."""


class StopRequest:
    """Records a Ctrl-C / SIGTERM so training can stop after the step in flight."""

    def __init__(self):
        self.signum = None

    def __call__(self, signum, _frame):
        self.signum = signum

    def raise_it(self):
        """The exception the signal would have raised: KeyboardInterrupt or SystemExit."""
        if self.signum == signal.SIGINT:
            raise CheckpointedInterrupt("training interrupted; checkpoint written")
        raise SystemExit(128 + self.signum)


@contextmanager
def deferred_signals(enabled: bool):
    """While active (and ``enabled``, in the main thread), SIGINT and SIGTERM only set the
    returned :class:`StopRequest`; the previous handlers come back afterwards."""
    request = StopRequest()
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield request
        return
    previous = {s: signal.signal(s, request) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield request
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
