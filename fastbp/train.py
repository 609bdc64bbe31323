"""``fit``: train a network on a data set.

Every option is validated first (:mod:`fastbp.fit_options`), then the data (features, targets,
sample weights, validation data) and, when resuming, the checkpoint -- before anything
changes. The data are then prepared: the validation split held out, the row weights formed,
the preprocessor fitted and applied. A trainer runs the fit and returns the
:class:`~fastbp.history.History`: the minibatch loop (:mod:`fastbp.trainer`), its data-parallel
form (:mod:`fastbp.data_parallel`) or full-batch L-BFGS (:mod:`fastbp.lbfgs`).
"""

from __future__ import annotations

import inspect

from . import checks, preprocess
from . import checkpoint as checkpoints
from .data_parallel import DistributedTrainer, start_identically
from .distributed import make_communicator
from .fit_options import check_backend_options, check_checkpoint, check_options
from .history import History
from .lbfgs import LbfgsTrainer
from .sparse import is_row_source, take
from .trainer import Trainer
from .weights import check_sample_weight, row_weights


#: every keyword :func:`fit` takes (its own and :func:`~fastbp.fit_options.check_options`')
FIT_KEYWORDS = (*inspect.signature(check_options).parameters, "validation_data", "checkpoint",
                "resume", "distributed", "sample_weight")


def fit(net, X, y, validation_data=None, checkpoint=None, resume=False, distributed=None,
        sample_weight=None, **options) -> History:
    """Train ``net`` on ``(X, y)``; returns the :class:`History`.

    Options (all validated before the model is touched): ``epochs=50``, ``batch_size=32``
    (``None`` for full batch), ``lr=0.001``,
    ``optimizer='adam'|'sgd'|'momentum'|'nesterov'|'lbfgs'`` (default adam)
    (L-BFGS: full batch, at most ``epochs`` iterations and ``max_fun`` cost evaluations,
    converged when the projected gradient is below ``gtol`` -- SciPy's defaults 15000 and
    1e-5 when None; see :mod:`fastbp.lbfgs`),
    ``momentum=0.9``, ``weight_decay=0.0`` (L2, biases excluded), ``dropout=0.0`` (inverted
    dropout on hidden units), ``input_noise=0.0`` (std of Gaussian noise added to each
    training batch's inputs), ``validation_data=(X_val, y_val)`` or ``validation_split``
    (a seeded random fraction held out: ``round(validation_split * N)`` rows, whose
    ``sample_weight`` weighs the validation score), ``early_stopping=None`` (patience in
    epochs on the validation loss; the best weights are restored), ``shuffle=True``,
    ``verbose=1`` (0 silent, 1 progress bar and a line per epoch, 2 lines only),
    ``callbacks`` (``f(epoch, logs)``; returning True stops training),
    ``precision='highest'|'tf32'|'bf16'`` (TF32 tensor-core GEMMs for float32 on the cupy
    backend; bf16: GEMMs on bf16 inputs, float32 accumulation, float32 weights, optimizer
    state and loss, see :mod:`fastbp.backends.mixed`; float32 stays exact by default).

    scikit-learn's and Keras' training features: ``sample_weight`` (one weight per row of
    ``X``) and ``class_weight='balanced'|{class: weight}`` weight the loss
    (:mod:`fastbp.weights`); ``optimizer='nesterov'``; ``beta1``, ``beta2``, ``epsilon`` of
    Adam; ``lr_schedule='constant'|'invscaling'|'adaptive'|'step'|'cosine'|'plateau'``, a
    :class:`~fastbp.schedules.Schedule` or ``f(epoch) -> lr`` (:mod:`fastbp.schedules`);
    ``callbacks`` may be :class:`~fastbp.callbacks.Callback` objects, which see the run and
    can change its learning rate, such as :class:`~fastbp.callbacks.EarlyStopping` with
    ``monitor``, ``min_delta`` and ``restore_best``; ``metrics=['accuracy', 'f1', 'roc_auc',
    'top_5_accuracy', 'r2', f]`` adds ``val_<name>`` to the logs and ``History.metrics``.

    What a second fit continues: the weights and the fitted preprocessor, always. It starts a
    new optimizer (moments, velocity and Adam's step count at zero), a new schedule at ``lr``
    and a new History, with epochs counted from 1. ``continue_training=True`` (what
    :meth:`~fastbp.MLP.partial_fit` passes) continues the optimizer state, the learning rate
    and the epoch and sample counts of the previous fit instead, when its optimizer and
    hyper-parameters match.

    ``checkpoint="run.ckpt"`` writes a checkpoint atomically after every epoch and, on Ctrl-C
    or SIGTERM, after the step in flight; ``resume=True`` continues from it (a missing file
    starts afresh) if it is of the same run -- same model, data and trajectory-changing
    options, else a ValueError names the difference; ``resume="new_lr"`` continues with this
    call's ``lr`` (see :mod:`fastbp.checkpoint`). ``distributed="auto"|"mpi"|"nccl"`` trains
    data-parallel across the ranks of ``mpiexec`` (see :mod:`fastbp.distributed`);
    ``batch_size`` is then the global batch.

    If the loss becomes NaN or inf -- in any epoch, and at the weights of the last update
    (on the last batch, or the validation set) -- the weights of the last finite epoch are
    restored and a FloatingPointError says so.
    """
    checks.check_keywords(options, FIT_KEYWORDS, "fit()")
    opts = check_options(validation_data=validation_data, **options)
    check_checkpoint(checkpoint, resume)
    check_backend_options(opts, net, checkpoint, distributed)
    comm = make_communicator(distributed, net.backend)
    if comm is not None:
        start_identically(net, comm)
        opts.verbose = opts.verbose if comm.rank == 0 else 0
    if distributed is not None and (sample_weight is not None or opts.class_weight):
        raise ValueError("sample_weight and class_weight do not combine with distributed "
                         "training yet")
    with checkpoints.exclusive(checkpoint, checkpoint is not None
                               and (comm is None or comm.rank == 0)):
        return fit_checked(net, opts, X, y, sample_weight, validation_data, checkpoint, resume,
                           comm)


def fit_checked(net, opts, X, y, sample_weight, validation_data, checkpoint, resume,
                comm) -> History:
    """:func:`fit` after its options are checked: the data checked, the checkpoint read and
    validated (before anything changes), the split, the weights, the preprocessor, the
    trainer."""
    minibatches_here = comm is None and opts.optimizer != "lbfgs"  # the plain Trainer's loop
    columns = checks.frame_columns(X)
    X, Y = check_data(net, X, y, keep_integers=minibatches_here)
    check_row_source_options(net, opts, X)
    if sample_weight is not None:
        sample_weight = check_sample_weight(sample_weight, X.shape[0])
    validation = check_validation_data(net, validation_data,
                                       net.config["feature_names"] or columns)
    run_id = (None if checkpoint is None
              else checkpoints.fingerprint(opts, X, Y, validation, host_data(net.backend),
                                           sample_weight))
    saved = (checkpoints.read(checkpoint, net, opts, run_id, X.shape[0], resume)
             if resume else None)
    X, Y, sample_weight, val, split_order = split_data(
        net, X, Y, sample_weight, validation, opts.validation_split,
        saved and saved.split_order)
    weights = row_weights(sample_weight, opts.class_weight, Y, net.task)
    net.fit_preprocessor(X, None if weights is None else weights[:, 0])
    net.config["feature_names"] = net.config["feature_names"] or columns
    on_batches = (minibatches_here and not is_row_source(X)
                  and preprocess.standardizes_batches(net.preprocessor, X, net.dtype))
    if net.preprocessor is not None:
        X, val = (X if on_batches else preprocessed(net.preprocessor, X)), val and (
            preprocessed(net.preprocessor, val[0]), *val[1:])
    if opts.optimizer == "lbfgs":
        return LbfgsTrainer(net, opts, X, Y, val, weights).run()
    trainer = (DistributedTrainer(net, opts, X, Y, val, comm) if comm is not None
               else Trainer(net, opts, X, Y, val, weights,
                            standardizer=net.preprocessor if on_batches else None))
    trainer.fingerprint, trainer.split_order = run_id, split_order
    return trainer.run(checkpoint, saved)


def check_row_source_options(net, opts, X):
    """What sparse features cannot train with, refused before the split and the
    preprocessor change anything."""
    if not is_row_source(X):
        return
    if opts.optimizer == "lbfgs":
        raise ValueError("optimizer='lbfgs' is full-batch and needs dense X; sparse input "
                         "trains with the minibatch optimizers")
    name = net.config["preprocess"]
    if net.preprocessor is None and name in ("pca", "zca"):
        raise ValueError(f"preprocess={name!r} needs dense features; sparse input takes "
                         f"'standardize', 'auto' or None")


def check_data(net, X, y, keep_integers=False):
    """Validated ``X`` and ``Y`` (target matrix), on the host or, where the caller's arrays
    already are, on the backend's device; a sparse row source stays one, and with
    ``keep_integers`` so do host integers that the model's dtype holds exactly (``uint8``
    pixels): the trainer converts each batch as it gathers it, and the set is never copied
    whole into floats (188 MB for 60000x784 in float32)."""
    X = checks.check_features_or_rows(X, net.sizes[0], "X", net.backend, net.dtype,
                                      keep_exact_integers=keep_integers,
                                      feature_names=net.config["feature_names"])
    return X, net.targets(y, X.shape[0], "y")


def as_model_dtype(net, X):
    """Integer features kept by :func:`check_data` in the model's dtype (the held-out rows of
    a split, evaluated whole); anything else, a row source included, as it is."""
    return X if is_row_source(X) or X.dtype.kind not in "biu" else X.astype(net.dtype)


def check_validation_data(net, validation_data, feature_names=None):
    """Validated ``(X_val, Y_val)``, or None (a DataFrame's columns named ``feature_names``,
    the model's or the training DataFrame's)."""
    if validation_data is None:
        return None
    if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
        raise ValueError("validation_data must be a pair (X_val, y_val)")
    X_val = checks.check_features_or_rows(validation_data[0], net.sizes[0], "X_val",
                                          net.backend, net.dtype, feature_names=feature_names)
    return X_val, net.targets(validation_data[1], X_val.shape[0], "y_val")


def host_data(backend):
    """A function giving the host bytes of training data to fingerprint: a row source's
    sparse arrays, or a (device) array's host copy."""
    return lambda X: X.raw_bytes() if is_row_source(X) else backend.to_numpy(X)


def preprocessed(preprocessor, X):
    """``X`` through the fitted preprocessor: now (on X's device), or batch by batch for a
    row source."""
    return (X.transformed(preprocessor) if is_row_source(X)
            else preprocess.transform(preprocessor, X))


def split_data(net, X, Y, sample_weight, validation, validation_split, order=None):
    """``(X_train, Y_train, their sample_weight or None, (X_val, Y_val, their sample_weight
    or None) or None, split order or None)``: ``validation`` if given, else a random
    ``validation_split`` held out -- ``round(validation_split * N)`` rows -- by the
    permutation ``order`` (drawn from the model's generator unless a resumed checkpoint gives
    it)."""
    if validation is not None or not validation_split:
        return X, Y, sample_weight, validation and (*validation, None), None
    n_val = int(round(validation_split * X.shape[0]))
    if n_val < 1 or n_val >= X.shape[0]:
        raise ValueError(f"validation_split={validation_split} leaves {n_val} validation and "
                         f"{X.shape[0] - n_val} training samples of {X.shape[0]}; both need one")
    order = net.rng.permutation(X.shape[0]) if order is None else order
    val_idx, train_idx = order[:n_val], order[n_val:]
    weights = (None, None) if sample_weight is None else (sample_weight[train_idx],
                                                           sample_weight[val_idx])
    return (take(X, train_idx), Y[train_idx], weights[0],
            (as_model_dtype(net, take(X, val_idx)), Y[val_idx], weights[1]), order)
