"""scikit-learn estimators over :class:`~fastbp.MLP` and :func:`~fastbp.train.fit`.

:class:`MLPClassifier` and :class:`MLPRegressor` take scikit-learn's constructor parameters
with its defaults and set its fitted attributes, so ``from fastbp import MLPClassifier``
replaces ``from sklearn.neural_network import MLPClassifier``; they add fastbp's ``backend``,
``dtype``, ``precision``, ``dropout``, ``preprocess`` and (classifier) ``class_weight``.

How scikit-learn's parameters map onto fit (``N_b`` the batch size):

- ``solver``: 'adam' (``beta_1``, ``beta_2``, ``epsilon``), 'sgd' (``momentum`` > 0 with
  ``nesterovs_momentum`` -> Nesterov, else heavy-ball; ``learning_rate`` 'constant' /
  'invscaling' (``power_t``) / 'adaptive' -> :mod:`fastbp.schedules`), 'lbfgs' (full batch,
  ``max_iter`` iterations);
- ``alpha`` (scikit-learn's L2 term ``alpha/2 ||W||^2 / N_b``) -> ``weight_decay = alpha /
  (N_b * mean weight)``; ``batch_size='auto'`` -> ``min(200, N)``;
- stopping: ``tol`` and ``n_iter_no_change`` on the training loss, or with ``early_stopping``
  on the score of a ``validation_fraction`` held out (the best weights are kept) -- an
  :class:`~fastbp.callbacks.EarlyStopping`; 'adaptive' divides the rate by 5 instead of
  stopping, down to 1e-6;
- ``preprocess='auto'`` (fastbp's) standardises badly scaled features with the (weighted)
  training mean and std (:func:`fastbp.preprocess.choose_auto`); 'standardize', 'pca', 'zca'
  or None choose; ``coefs_`` and ``intercepts_`` are the weights on the raw features all the
  same (a standardisation is folded into the first layer).

``fit`` starts from fresh weights unless ``warm_start``; ``partial_fit`` runs one epoch that
continues the optimizer state (see :meth:`fastbp.MLP.partial_fit`). Pickling keeps the
weights, the preprocessor and the hyper-parameters; the optimizer state of a partial_fit
sequence is not pickled (a partial_fit after unpickling starts a new optimizer).
"""

from __future__ import annotations

import warnings

import numpy as np

try:
    from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.utils.multiclass import check_classification_targets
    from scipy.sparse import issparse
    from sklearn.utils.validation import check_is_fitted, column_or_1d, validate_data
except ImportError as exc:  # pragma: no cover - exercised without scikit-learn
    raise ImportError(f"fastbp.MLPClassifier and MLPRegressor need scikit-learn ({exc}): "
                      f"pip install 'fastbp[sklearn]'") from None

from .arrays import detached, exact_integers, host_array
from .data import Standardizer
from .labels import LabelCoder
from .model import MLP, PREDICT_CHUNK
from .schedules import Adaptive, make_schedule
from .sparse import SparseRows
from .weights import check_sample_weight

#: scikit-learn's activation names -> fastbp's
ACTIVATIONS = {"identity": "identity", "logistic": "sigmoid", "tanh": "tanh", "relu": "relu"}
SOLVERS = ("adam", "sgd", "lbfgs")
#: integer feature dtypes the estimators pass to training unconverted where the model's dtype
#: holds them exactly
INTEGER_DTYPES = (np.bool_, np.uint8, np.int8, np.uint16, np.int16, np.uint32, np.int32)
LEARNING_RATES = ("constant", "invscaling", "adaptive")


class BaseMLP(BaseEstimator):
    """What the classifier and the regressor share: parameters, the network, fit."""

    def __init__(self, hidden_layer_sizes=(100,), activation="relu", *, solver="adam",
                 alpha=0.0001, batch_size="auto", learning_rate="constant",
                 learning_rate_init=0.001, power_t=0.5, max_iter=200, shuffle=True,
                 random_state=None, tol=1e-4, verbose=False, warm_start=False, momentum=0.9,
                 nesterovs_momentum=True, early_stopping=False, validation_fraction=0.1,
                 beta_1=0.9, beta_2=0.999, epsilon=1e-8, n_iter_no_change=10, max_fun=15000,
                 backend="auto", dtype="float32", precision="highest", dropout=0.0,
                 preprocess="auto"):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.learning_rate_init = learning_rate_init
        self.power_t = power_t
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.verbose = verbose
        self.warm_start = warm_start
        self.momentum = momentum
        self.nesterovs_momentum = nesterovs_momentum
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.n_iter_no_change = n_iter_no_change
        self.max_fun = max_fun
        self.backend = backend
        self.dtype = dtype
        self.precision = precision
        self.dropout = dropout
        self.preprocess = preprocess

    # -- the parts the subclasses define -------------------------------------------------
    def _encode_targets(self, y, first: bool, classes=None):
        raise NotImplementedError

    def _output(self) -> tuple[str, str]:
        raise NotImplementedError

    def _n_outputs(self) -> int:
        raise NotImplementedError

    # -- validation ----------------------------------------------------------------------
    def _check_params(self):
        sizes = self.hidden_layer_sizes
        sizes = [sizes] if np.isscalar(sizes) else list(sizes)
        if any(not isinstance(s, (int, np.integer)) or s < 1 for s in sizes):
            raise ValueError(f"hidden_layer_sizes must be positive integers, got "
                             f"{self.hidden_layer_sizes!r}")
        for name, value, choices in (("activation", self.activation, ACTIVATIONS),
                                     ("solver", self.solver, SOLVERS),
                                     ("learning_rate", self.learning_rate, LEARNING_RATES)):
            if value not in choices:
                raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}")
        if self.batch_size != "auto" and (not isinstance(self.batch_size, (int, np.integer))
                                          or self.batch_size < 1):
            raise ValueError(f"batch_size must be 'auto' or a positive integer, got "
                             f"{self.batch_size!r}")
        for name in ("max_iter", "n_iter_no_change", "max_fun"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not 0 < self.validation_fraction < 1:
            raise ValueError(f"validation_fraction must be in (0, 1), got "
                             f"{self.validation_fraction!r}")
        return [int(s) for s in sizes]

    # -- fitting -------------------------------------------------------------------------
    def fit(self, X, y, sample_weight=None):
        """Train from fresh weights (or the current ones with ``warm_start``); returns self."""
        return self._fit(X, y, sample_weight, incremental=False)

    def _input_dtypes(self):
        """The dtypes ``X`` is kept in (others are converted to the first): the model's dtype
        first, so other integers are not widened to float64 only to be narrowed again, and
        the integers it holds exactly (``uint8`` pixels), which training converts batch by
        batch (:func:`fastbp.train.check_data`)."""
        try:
            single = np.dtype(self.dtype) == np.float32
        except TypeError:  # not a dtype: the model refuses it, by name
            single = False
        floats = (np.float32, np.float64) if single else (np.float64, np.float32)
        return floats + tuple(t for t in INTEGER_DTYPES
                              if exact_integers(t, floats[0]))

    def _fit(self, X, y, sample_weight, incremental, classes=None):
        hidden = self._check_params()
        first = not (incremental or self.warm_start) or not hasattr(self, "net_")
        X, y = validate_data(self, tensors_to_host(X), tensors_to_host(y), reset=first,
                             multi_output=True, accept_sparse="csr",
                             dtype=self._input_dtypes(), y_numeric=self._y_numeric)
        X = SparseRows(X) if issparse(X) else X
        targets = self._encode_targets(y, first, classes)
        weights = None if sample_weight is None else self._sample_weight(sample_weight, X)
        if first:
            self._new_network(X, hidden, weights)
            self.loss_curve_, self.t_, self.n_iter_ = [], 0, 0
            self.best_loss_ = np.inf
            self.validation_scores_ = [] if self.early_stopping else None
            self.best_validation_score_ = -np.inf if self.early_stopping else None
        options = self._fit_options(X.shape[0], weights, incremental)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            history = self.net_.fit(X, targets, sample_weight=weights, **options)
        self._record(history, X.shape[0], incremental)
        return self

    def _sample_weight(self, sample_weight, X):
        return check_sample_weight(sample_weight, X.shape[0])

    def _seed(self) -> int:
        rs = self.random_state
        if rs is None:
            return int(np.random.randint(2**31 - 1))
        if isinstance(rs, (int, np.integer)):
            return int(rs)
        return int(rs.randint(2**31 - 1))  # a RandomState

    def _new_network(self, X, hidden, weights):
        output, loss = self._output()
        act = ACTIVATIONS[self.activation]
        self.net_ = MLP([X.shape[1], *hidden, self._n_outputs()], activation=act,
                        output=output, loss=loss, init="he" if act == "relu" else "xavier",
                        backend=self.backend, dtype=self.dtype, seed=self._seed(),
                        preprocess=self.preprocess)

    def _batch_size(self, n):
        if self.solver == "lbfgs":
            return None
        return min(200, n) if self.batch_size == "auto" else min(int(self.batch_size), n)

    def _fit_options(self, n, weights, incremental) -> dict:
        batch = self._batch_size(n) or n
        mean_weight = 1.0 if weights is None else float(weights.mean()) or 1.0
        options = dict(epochs=1 if incremental else self.max_iter, batch_size=batch,
                       weight_decay=self.alpha / (batch * mean_weight), shuffle=self.shuffle,
                       verbose=2 if self.verbose else 0, dropout=self.dropout,
                       precision=self.precision, continue_training=incremental,
                       lr=self.learning_rate_init, class_weight=self._class_weight_indices())
        if self.solver == "lbfgs":
            options.update(optimizer="lbfgs", batch_size=None, weight_decay=self.alpha / n)
            return options
        if self.solver == "adam":
            options.update(optimizer="adam", beta1=self.beta_1, beta2=self.beta_2,
                           epsilon=self.epsilon)
            schedule = make_schedule("constant")
        else:
            kind = "sgd" if not self.momentum else (
                "nesterov" if self.nesterovs_momentum else "momentum")
            options.update(optimizer=kind, momentum=self.momentum or 0.0)
            schedule = self._schedule()
        options["lr_schedule"] = schedule
        if not incremental:
            options["callbacks"] = [self._stopping(schedule)]
            if self.early_stopping:
                options["validation_split"] = self.validation_fraction
        return options

    def _schedule(self):
        from .schedules import InvScaling

        if self.learning_rate == "invscaling":
            return InvScaling(self.power_t)
        return make_schedule(self.learning_rate)

    def _stopping(self, schedule):
        from .callbacks import EarlyStopping

        monitor = "val_score" if self.early_stopping else "loss"
        lower = schedule.lower if isinstance(schedule, Adaptive) else None
        return EarlyStopping(monitor, min_delta=self.tol, patience=self.n_iter_no_change + 1,
                             restore_best=self.early_stopping, on_plateau=lower)

    def _class_weight_indices(self):
        return None

    def _record(self, history, n, incremental):
        """scikit-learn's fitted attributes from the History and the network."""
        self.loss_curve_ = list(self.loss_curve_) + [float(v) for v in history.train_loss]
        self.n_iter_ = (self.n_iter_ if incremental else 0) + len(history)
        self.t_ += n * len(history)
        self.loss_ = self.loss_curve_[-1]
        if self.early_stopping and not incremental:
            self.validation_scores_ = [float(v) for v in history.val_score]
            self.best_validation_score_ = max(self.validation_scores_)
            self.best_loss_ = None
        else:
            self.best_loss_ = min(self.best_loss_ or np.inf, min(self.loss_curve_))
        if not incremental and not history.stopped_early and self.solver != "lbfgs" \
                and len(history) == self.max_iter:
            warnings.warn(f"Stochastic Optimizer: Maximum iterations ({self.max_iter}) reached "
                          f"and the optimization hasn't converged yet.", ConvergenceWarning)
        self.coefs_, self.intercepts_ = raw_feature_weights(self.net_)
        self.n_layers_ = len(self.coefs_) + 1
        self.n_outputs_ = self.net_.sizes[-1]
        self.out_activation_ = {"softmax": "softmax", "sigmoid": "logistic"}.get(
            self.net_.output.name, "identity")

    # -- predicting ----------------------------------------------------------------------
    def _outputs(self, X):
        X = validate_data(self, tensors_to_host(X), reset=False, accept_sparse="csr",
                          dtype=self._input_dtypes())
        if not issparse(X):
            return self.net_.forward(X).astype(np.float64)
        return np.concatenate([self.net_.forward(X[lo:lo + PREDICT_CHUNK].toarray())
                               for lo in range(0, X.shape[0], PREDICT_CHUNK)]).astype(np.float64)

    # -- pickling: the network as config + weights, never its backend ----------------------
    def __getstate__(self):
        state = dict(self.__dict__)
        net = state.pop("net_", None)
        if net is not None:
            state["net_state_"] = (net.config, net.get_weights(), net.preprocessor)
        return state

    def __setstate__(self, state):
        net_state = state.pop("net_state_", None)
        self.__dict__.update(state)
        if net_state is not None:
            config, weights, preprocessor = net_state
            self.net_ = MLP(**config, backend=self.backend)
            self.net_.set_weights(weights)
            self.net_.preprocessor = preprocessor
            self.net_.auto_decided = True


def tensors_to_host(x):
    """A tensor or other DLPack array (PyTorch, JAX, CuPy) as a host NumPy array, through
    fastbp's one converter (detached, copied once where it is on a device); anything else as
    given, for scikit-learn's own validation (which keeps a DataFrame's feature names)."""
    if hasattr(x, "__dlpack__") and not isinstance(x, np.ndarray):
        return host_array(detached(x), "X")
    return x


def raw_feature_weights(net):
    """``(coefs_, intercepts_)`` of the network as a function of the raw features: a fitted
    affine preprocessor ``x -> (x - mu) M`` (standardiser: ``M = diag(1/s)``; PCA / ZCA
    whitener: its matrix) folds into layer 1 as ``M W_1`` and ``b_1 - mu M W_1``."""
    layers = net.get_weights()
    coefs = [W for W, b, *_ in layers]
    intercepts = [b for W, b, *_ in layers]
    pre = net.preprocessor
    if isinstance(pre, Standardizer):
        coefs[0] = coefs[0] / pre.std[:, None]
    elif pre is not None:
        coefs[0] = pre.matrix @ coefs[0]
    if pre is not None:
        intercepts[0] = intercepts[0] - pre.mean @ coefs[0]
    return coefs, intercepts


class MLPClassifier(ClassifierMixin, BaseMLP):
    """scikit-learn's ``MLPClassifier`` on fastbp: any label type, binary (one sigmoid
    output), multi-class (softmax) and multi-label indicator targets (sigmoids);
    ``class_weight='balanced'`` or ``{label: weight}``."""

    _y_numeric = False

    def __init__(self, hidden_layer_sizes=(100,), activation="relu", *, solver="adam",
                 alpha=0.0001, batch_size="auto", learning_rate="constant",
                 learning_rate_init=0.001, power_t=0.5, max_iter=200, shuffle=True,
                 random_state=None, tol=1e-4, verbose=False, warm_start=False, momentum=0.9,
                 nesterovs_momentum=True, early_stopping=False, validation_fraction=0.1,
                 beta_1=0.9, beta_2=0.999, epsilon=1e-8, n_iter_no_change=10, max_fun=15000,
                 backend="auto", dtype="float32", precision="highest", dropout=0.0,
                 preprocess="auto", class_weight=None):
        super().__init__(
            hidden_layer_sizes, activation, solver=solver, alpha=alpha, batch_size=batch_size,
            learning_rate=learning_rate, learning_rate_init=learning_rate_init,
            power_t=power_t, max_iter=max_iter, shuffle=shuffle, random_state=random_state,
            tol=tol, verbose=verbose, warm_start=warm_start, momentum=momentum,
            nesterovs_momentum=nesterovs_momentum, early_stopping=early_stopping,
            validation_fraction=validation_fraction, beta_1=beta_1, beta_2=beta_2,
            epsilon=epsilon, n_iter_no_change=n_iter_no_change, max_fun=max_fun,
            backend=backend, dtype=dtype, precision=precision, dropout=dropout,
            preprocess=preprocess)
        self.class_weight = class_weight

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_label = True
        tags.input_tags.sparse = True
        return tags

    def _encode_targets(self, y, first, classes=None):
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        if y.ndim == 1:
            check_classification_targets(y)
        if first or not hasattr(self, "coder_"):
            coder = LabelCoder()
            coder.fit(y if classes is None else np.asarray(classes))
            if classes is not None and y.ndim == 1:
                coder.encode(y)  # every label must be one of the classes given
            self.coder_, self.classes_ = coder, coder.classes
        elif classes is not None and not np.array_equal(np.asarray(classes), self.classes_):
            raise ValueError(f"classes={list(classes)} is not the same as the classes of the "
                             f"first partial_fit, {self.classes_.tolist()}")
        return self.coder_.encode(y)

    def _output(self):
        return self.coder_.output

    def _n_outputs(self):
        return self.coder_.n_outputs

    def _class_weight_indices(self):
        """``class_weight`` keyed by class index, as fit wants it."""
        cw = self.class_weight
        if cw is None or cw == "balanced":
            return cw
        if self.coder_.kind == "multilabel":
            raise ValueError("class_weight does not apply to multi-label targets")
        index = {label: i for i, label in enumerate(self.classes_.tolist())}
        unknown = [label for label in cw if label not in index]
        if unknown:
            raise ValueError(f"class_weight has labels {unknown} that are not classes "
                             f"{self.classes_.tolist()}")
        return {index[label]: weight for label, weight in cw.items()}

    def partial_fit(self, X, y, classes=None, sample_weight=None):
        """One epoch over ``(X, y)`` continuing the optimizer state; ``classes`` (every label
        there will be) is needed on the first call."""
        if self.solver == "lbfgs":
            raise AttributeError("partial_fit is only available for stochastic optimizers; "
                                 "solver='lbfgs' is not one")
        if not hasattr(self, "coder_") and classes is None:
            raise ValueError("classes must be passed on the first call to partial_fit")
        return self._fit(X, y, sample_weight, incremental=True, classes=classes)

    def predict_proba(self, X):
        """Class probabilities ``(N, n_classes)`` (multi-label: one column per label)."""
        check_is_fitted(self, "net_")
        return self.coder_.probabilities(self._outputs(X))

    def predict_log_proba(self, X):
        """``log`` of :meth:`predict_proba`."""
        with np.errstate(divide="ignore"):
            return np.log(self.predict_proba(X))

    def predict(self, X):
        """The most probable label per sample (multi-label: the indicator matrix)."""
        check_is_fitted(self, "net_")
        return self.coder_.decode(self._outputs(X))


class MLPRegressor(RegressorMixin, BaseMLP):
    """scikit-learn's ``MLPRegressor`` on fastbp: identity outputs and squared error, one or
    several outputs."""

    _y_numeric = True

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        tags.input_tags.sparse = True
        return tags

    def _encode_targets(self, y, first, classes=None):
        y = np.asarray(y, dtype=np.float64)
        if first:
            self.n_targets_ = 1 if y.ndim == 1 else y.shape[1]
        return y

    def _output(self):
        return "identity", "mse"

    def _n_outputs(self):
        return self.n_targets_

    def partial_fit(self, X, y, sample_weight=None):
        """One epoch over ``(X, y)`` continuing the optimizer state."""
        if self.solver == "lbfgs":
            raise AttributeError("partial_fit is only available for stochastic optimizers; "
                                 "solver='lbfgs' is not one")
        return self._fit(X, y, sample_weight, incremental=True)

    def predict(self, X):
        """Predicted values, ``(N,)`` for one target, else ``(N, n_targets)``."""
        check_is_fitted(self, "net_")
        out = self._outputs(X)
        return out[:, 0] if self.n_targets_ == 1 else out
