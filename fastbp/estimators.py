"""scikit-learn estimators over :class:`~fastbp.MLP` and :func:`~fastbp.train.fit`.

:class:`MLPClassifier` and :class:`MLPRegressor` take scikit-learn's constructor parameters
with its defaults and set its fitted attributes, so ``from fastbp import MLPClassifier``
replaces ``from sklearn.neural_network import MLPClassifier``; they add fastbp's ``backend``,
``dtype``, ``precision``, ``dropout``, ``preprocess`` and (classifier) ``class_weight``.

How scikit-learn's parameters map onto fit (``N_b`` the batch size):

- parameters are validated by scikit-learn's ``_parameter_constraints`` (its MLP's, plus
  fastbp's extras) when ``fit`` / ``partial_fit`` starts: a bad value is an
  ``InvalidParameterError`` (a ValueError) naming the parameter;
- ``solver``: 'adam' (``beta_1``, ``beta_2``, ``epsilon``), 'sgd' (``momentum`` > 0 with
  ``nesterovs_momentum`` -> Nesterov, else heavy-ball; ``learning_rate`` 'constant' /
  'invscaling' (``power_t``) / 'adaptive' -> :mod:`fastbp.schedules`), 'lbfgs' (full batch,
  at most ``max_iter`` iterations and ``max_fun`` cost evaluations, ``tol`` SciPy's ``gtol``,
  a ConvergenceWarning when SciPy reports no convergence; ``early_stopping`` and
  ``partial_fit`` are for the stochastic solvers only, as in scikit-learn);
- ``alpha`` (scikit-learn's L2 term ``alpha/2 ||W||^2 / N_b``) -> ``weight_decay = alpha /
  (N_b * mean weight)``; ``batch_size='auto'`` -> ``min(200, N)``;
- stopping: ``tol`` and ``n_iter_no_change`` (``np.inf``: never) on the training loss, or
  with ``early_stopping`` on the score of ``ceil(validation_fraction * N)`` rows held out
  (scikit-learn's ``train_test_split`` count; at least 2; the score weighted by their
  ``sample_weight``; the best weights are kept) -- an :class:`~fastbp.callbacks.EarlyStopping`;
  'adaptive' divides the rate by 5 instead of stopping, down to 1e-6;
- ``preprocess='auto'`` (fastbp's) standardises badly scaled features with the (weighted)
  training mean and std (:func:`fastbp.preprocess.choose_auto`); 'standardize', 'pca', 'zca'
  or None choose; ``coefs_`` and ``intercepts_`` are the weights on the raw features all the
  same (a standardisation is folded into the first layer).

Initial weights are scikit-learn's: Glorot-uniform (``init="glorot_uniform"``, gain
``1/sqrt(3)`` for the logistic activation), drawn from fastbp's generator; the biases start
at zero where scikit-learn draws them too.
``fit`` starts from fresh weights unless ``warm_start`` (then ``y`` must have the classes of
the previous fit); ``partial_fit`` runs one epoch that continues the optimizer state (see
:meth:`fastbp.MLP.partial_fit`). As in scikit-learn, ``loss_curve_``, ``validation_scores_``,
``t_``, the bests and the stopping count (:mod:`fastbp.estimator_stopping`) go on over warm
starts and partial_fit calls and ``n_iter_`` counts the last call's epochs; ``verbose``
prints scikit-learn's lines ('lbfgs': fastbp's); outputs are float32 where the training and
the predicted ``X`` are, else float64; one class is fitted (and always predicted;
``predict_proba`` has two columns). ``MLPRegressor``'s ``loss`` is 'squared_error'; 'poisson'
is refused (not implemented yet); with several outputs ``loss_``, ``loss_curve_`` and the
``tol`` rule use scikit-learn's squared error, averaged over the outputs as well as the
samples (:mod:`fastbp.estimator_stopping`). Pickling keeps everything, the optimizer state
of a partial_fit sequence included (:mod:`fastbp.pickling`).
"""

from __future__ import annotations

import math
import warnings

import numpy as np

try:  # scikit-learn first: without it, its name is the one to read (SciPy comes with it)
    from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin, _fit_context
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier as SklearnMLPClassifier
    from sklearn.neural_network import MLPRegressor as SklearnMLPRegressor
    from sklearn.utils._param_validation import StrOptions
    from sklearn.utils.metaestimators import available_if
    from sklearn.utils.multiclass import check_classification_targets, unique_labels
    from sklearn.utils.validation import check_is_fitted, column_or_1d, validate_data
    from scipy.sparse import issparse
except ImportError as exc:  # pragma: no cover - exercised without scikit-learn
    raise ImportError(f"fastbp.MLPClassifier and MLPRegressor need scikit-learn ({exc}): "
                      f"pip install 'fastbp[sklearn]'") from None

from .arrays import exact_integers
from .data import Standardizer
from .estimator_params import (ACTIVATIONS, FASTBP_CONSTRAINTS, INTEGER_DTYPES,
                               SKLEARN_INIT_GAIN, STOCHASTIC_SOLVERS, float_dtype_of,
                               stochastic_solver, store_parameters, tensors_to_host)
from .estimator_stopping import ScikitLearnStopping, scikit_learn_loss
from .labels import LabelCoder
from .model import MLP, PREDICT_CHUNK
from .schedules import make_schedule
from .sparse import SparseRows
from .weights import check_sample_weight


class BaseMLP(BaseEstimator):
    """What the classifier and the regressor share: the network, fit, the fitted
    attributes. The subclasses' constructors take the parameters."""

    # -- the parts the subclasses define -------------------------------------------------
    def _encode_targets(self, y, first: bool, classes=None):
        raise NotImplementedError

    def _output(self) -> tuple[str, str]:
        raise NotImplementedError

    def _n_outputs(self) -> int:
        raise NotImplementedError

    def _output_share(self) -> float:
        """What scikit-learn's loss weighs each output's term by, where fastbp's sums them
        (:func:`~fastbp.estimator_stopping.scikit_learn_loss`)."""
        return 1.0

    # -- validation ----------------------------------------------------------------------
    def _check_params(self):
        """The hidden layer sizes as a list of ints, checked beyond their constraints (every
        parameter's type and range is checked by ``_validate_params`` first)."""
        sizes = self.hidden_layer_sizes
        sizes = [sizes] if np.isscalar(sizes) else list(sizes)
        if any(not isinstance(s, (int, np.integer)) or s < 1 for s in sizes):
            raise ValueError(f"hidden_layer_sizes must be positive integers, got "
                             f"{self.hidden_layer_sizes!r}")
        return [int(s) for s in sizes]

    @property
    def _early_stopping_applies(self) -> bool:
        """Whether a validation split steers training: ``early_stopping`` with a stochastic
        solver (scikit-learn ignores it for 'lbfgs')."""
        return bool(self.early_stopping) and self.solver in STOCHASTIC_SOLVERS

    def _held_out(self, n) -> int:
        """Rows early stopping holds out of ``n``: ``ceil(validation_fraction * n)``, as
        scikit-learn's ``train_test_split``, at least 2 (scikit-learn's minimum); 0 when
        early stopping does not apply."""
        if not self._early_stopping_applies:
            return 0
        held_out = math.ceil(self.validation_fraction * n)
        if held_out < 2:
            raise ValueError("The validation set is too small. Increase "
                             "'validation_fraction' or the size of your dataset.")
        return held_out

    # -- fitting -------------------------------------------------------------------------
    @_fit_context(prefer_skip_nested_validation=True)
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
        if incremental and self.early_stopping:
            raise ValueError("partial_fit does not support early_stopping=True")
        first = not (incremental or self.warm_start) or not hasattr(self, "net_")
        raw_X = X = tensors_to_host(X)
        X, y = validate_data(self, X, tensors_to_host(y), reset=first,
                             multi_output=True, accept_sparse="csr",
                             dtype=self._input_dtypes(), y_numeric=self._y_numeric)
        X = SparseRows(X) if issparse(X) else X
        n_train = X.shape[0] - self._held_out(X.shape[0])
        targets = self._encode_targets(y, first, classes)
        weights = None if sample_weight is None else self._sample_weight(sample_weight, X)
        if first:
            self._new_network(X, hidden, weights)
            self._start_attributes(raw_X)
        options = self._fit_options(X.shape[0], n_train, weights, incremental)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            history = self.net_.fit(X, targets, sample_weight=weights, **options)
        stopping = options.get("callbacks", [None])[0]  # scikit-learn's rule; not for lbfgs
        self._record(history, n_train, incremental, stopping, options["weight_decay"])
        return self

    def _start_attributes(self, X):
        """The fitted attributes a first fit starts from (scikit-learn's ``_initialize``),
        and the float dtype of its ``X``, that scikit-learn's weights take."""
        self.loss_curve_, self.t_, self.n_iter_ = [], 0, 0
        self.best_loss_ = np.inf
        self.validation_scores_ = [] if self._early_stopping_applies else None
        self.best_validation_score_ = -np.inf if self._early_stopping_applies else None
        self._no_improvement_count = 0
        self._fit_float_dtype = float_dtype_of(X)

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
                        output=output, loss=loss, init="glorot_uniform",
                        init_scale=SKLEARN_INIT_GAIN.get(act), backend=self.backend,
                        dtype=self.dtype, seed=self._seed(), preprocess=self.preprocess)

    def _batch_size(self, n_train):
        """The minibatch size on ``n_train`` training rows (None for 'lbfgs'): 'auto' is
        ``min(200, n_train)``; a larger one is clipped to ``n_train`` with scikit-learn's
        warning."""
        if self.solver == "lbfgs":
            return None
        if self.batch_size == "auto":
            return min(200, n_train)
        if self.batch_size > n_train:
            warnings.warn("Got `batch_size` less than 1 or larger than sample size. It is "
                          "going to be clipped")
        return min(int(self.batch_size), n_train)

    def _fit_options(self, n, n_train, weights, incremental) -> dict:
        """fit's options for ``n`` rows of which ``n_train`` train (the rest are held out)."""
        batch = self._batch_size(n_train) or n
        mean_weight = 1.0 if weights is None else float(weights.mean()) or 1.0
        options = dict(epochs=1 if incremental else self.max_iter, batch_size=batch,
                       weight_decay=self.alpha / (batch * mean_weight), shuffle=self.shuffle,
                       verbose=2 if self.verbose and self.solver == "lbfgs" else 0,
                       dropout=self.dropout,
                       precision=self.precision, continue_training=incremental,
                       lr=self.learning_rate_init, class_weight=self._class_weight_indices())
        if self.solver == "lbfgs":
            options.update(optimizer="lbfgs", batch_size=None, weight_decay=self.alpha / n,
                           max_fun=self.max_fun, gtol=self.tol)
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
        options.update(lr_schedule=schedule, callbacks=[self._stopping(schedule)])
        if n_train < n:
            # fit holds out round(validation_split * n) rows: exactly n - n_train
            options["validation_split"] = (n - n_train) / n
        return options

    def _schedule(self):
        from .schedules import InvScaling

        if self.learning_rate == "invscaling":
            return InvScaling(self.power_t)
        return make_schedule(self.learning_rate)

    def _stopping(self, schedule):
        """scikit-learn's stopping rule (and verbose lines), continuing the count and the
        best of the previous fits (``partial_fit``, ``warm_start``)."""
        early = self._early_stopping_applies
        best = self.best_validation_score_ if early else self.best_loss_
        return ScikitLearnStopping(early, self.tol, self.n_iter_no_change, schedule,
                                   verbose=bool(self.verbose), best=best,
                                   count=getattr(self, "_no_improvement_count", 0),
                                   output_share=self._output_share())

    def _class_weight_indices(self):
        return None

    def _record(self, history, n_train, incremental, stopping, weight_decay):
        """scikit-learn's fitted attributes from the History and the network, continued over
        warm starts and partial_fit calls as scikit-learn's (``loss_curve_``,
        ``validation_scores_`` and the bests; ``n_iter_`` counts this call's epochs); ``t_``
        counts the training rows stepped on (``n_train`` an epoch; none for 'lbfgs')."""
        losses = history.train_loss if stopping is None else stopping.losses
        self.loss_curve_ = list(self.loss_curve_) + [float(v) for v in losses]
        self.n_iter_ = len(history)
        if self.solver in STOCHASTIC_SOLVERS:
            self.t_ += n_train * len(history)
            self._no_improvement_count = stopping.count
        self.loss_ = scikit_learn_loss(history.solver_loss, self._output_share(), self.net_,
                                       weight_decay) \
            if self.solver == "lbfgs" else self.loss_curve_[-1]
        if self._early_stopping_applies:
            self.validation_scores_ = list(self.validation_scores_ or []) + [
                float(v) for v in history.val_score]
            self.best_validation_score_ = max(self.validation_scores_)
            self.best_loss_ = None
        else:
            self.best_loss_ = min(self.best_loss_ or np.inf, min(self.loss_curve_,
                                                                 default=np.inf))
        self._warn_unless_converged(history, incremental)
        self.coefs_, self.intercepts_ = raw_feature_weights(self.net_)
        self.n_layers_ = len(self.coefs_) + 1
        self.n_outputs_ = self.net_.sizes[-1]
        self.out_activation_ = {"softmax": "softmax", "sigmoid": "logistic"}.get(
            self.net_.output.name, "identity")

    def _warn_unless_converged(self, history, incremental):
        """scikit-learn's ConvergenceWarning: L-BFGS stopped by a limit (SciPy's status not
        0), or a stochastic fit ran all ``max_iter`` epochs without stopping."""
        if self.solver == "lbfgs":
            if history.solver_status:
                warnings.warn(f"lbfgs failed to converge after {len(history)} iteration(s) "
                              f"(status={history.solver_status}):\n{history.solver_message}\n"
                              f"\nIncrease the number of iterations (max_iter={self.max_iter})"
                              f" or the number of function evaluations (max_fun="
                              f"{self.max_fun}), or scale the data.", ConvergenceWarning)
        elif not incremental and not history.stopped_early and len(history) == self.max_iter:
            warnings.warn(f"Stochastic Optimizer: Maximum iterations ({self.max_iter}) reached "
                          f"and the optimization hasn't converged yet.", ConvergenceWarning)

    # -- predicting ----------------------------------------------------------------------
    def _outputs(self, X):
        """The network's outputs on ``X`` in scikit-learn's dtype: float32 where ``X`` and
        the training ``X`` are float32, else float64 (its weights take the training ``X``'s
        float dtype, and the product the wider of the two)."""
        X = tensors_to_host(X)
        dtype = np.result_type(getattr(self, "_fit_float_dtype", np.float64), float_dtype_of(X))
        X = validate_data(self, X, reset=False, accept_sparse="csr", dtype=self._input_dtypes())
        if not issparse(X):
            return self.net_.forward(X).astype(dtype)
        return np.concatenate([self.net_.forward(X[lo:lo + PREDICT_CHUNK].toarray())
                               for lo in range(0, X.shape[0], PREDICT_CHUNK)]).astype(dtype)


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
    _parameter_constraints: dict = {
        **SklearnMLPClassifier._parameter_constraints, **FASTBP_CONSTRAINTS,
        "class_weight": [StrOptions({"balanced"}), dict, None]}

    def __init__(self, hidden_layer_sizes=(100,), activation="relu", *, solver="adam",
                 alpha=0.0001, batch_size="auto", learning_rate="constant",
                 learning_rate_init=0.001, power_t=0.5, max_iter=200, shuffle=True,
                 random_state=None, tol=1e-4, verbose=False, warm_start=False, momentum=0.9,
                 nesterovs_momentum=True, early_stopping=False, validation_fraction=0.1,
                 beta_1=0.9, beta_2=0.999, epsilon=1e-8, n_iter_no_change=10, max_fun=15000,
                 backend="auto", dtype="float32", precision="highest", dropout=0.0,
                 preprocess="auto", class_weight=None):
        store_parameters(self, locals())

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_label = True
        tags.input_tags.sparse = True
        return tags

    def _encode_targets(self, y, first, classes=None):
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        if y.ndim == 1 and y.dtype.kind not in "biu":
            check_classification_targets(y)  # integers are class labels by definition
        learn = first or not hasattr(self, "coder_")
        coder = self._new_coder(y, classes) if learn else self._checked_coder(y, classes)
        targets = coder.encode(y)  # every label must be one of the classes
        self.coder_, self.classes_ = coder, coder.classes
        return targets

    @staticmethod
    def _new_coder(y, classes):
        """The classes of ``y``, or ``classes`` (partial_fit's) -- but a multi-label
        indicator ``y`` always gives its own, the column indices, as in scikit-learn. One
        class is fitted, as scikit-learn's (it is every prediction)."""
        multilabel = y.ndim == 2  # an indicator matrix: LabelCoder refuses any other 2-D y
        labels = y if classes is None or multilabel else np.asarray(classes)
        return LabelCoder().fit(labels, min_classes=1)

    def _checked_coder(self, y, classes):
        """The coder of the previous fit, if ``classes`` are the same and, with
        ``warm_start``, ``y`` has exactly its classes (scikit-learn's rule)."""
        if classes is not None and not np.array_equal(np.asarray(classes), self.classes_):
            raise ValueError(f"classes={list(classes)} is not the same as the classes of the "
                             f"first partial_fit, {self.classes_.tolist()}")
        labels = unique_labels(y) if self.warm_start else self.classes_
        if set(labels.tolist()) != set(self.classes_.tolist()):
            raise ValueError(f"warm_start can only be used where `y` has the same classes as "
                             f"in the previous call to fit. Previously got {self.classes_}, "
                             f"`y` has {labels}")
        return self.coder_

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

    @available_if(stochastic_solver)
    @_fit_context(prefer_skip_nested_validation=True)
    def partial_fit(self, X, y, sample_weight=None, classes=None):
        """One epoch over ``(X, y)`` continuing the optimizer state; ``classes`` (every label
        there will be) is needed on the first call (a multi-label ``y`` gives its own)."""
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
    """scikit-learn's ``MLPRegressor`` on fastbp: identity outputs and squared error
    (``loss='squared_error'``; 'poisson' is not implemented yet), one or several outputs."""

    _y_numeric = True
    _parameter_constraints: dict = {**SklearnMLPRegressor._parameter_constraints,
                                    **FASTBP_CONSTRAINTS}

    def __init__(self, loss="squared_error", hidden_layer_sizes=(100,), activation="relu", *,
                 solver="adam", alpha=0.0001, batch_size="auto", learning_rate="constant",
                 learning_rate_init=0.001, power_t=0.5, max_iter=200, shuffle=True,
                 random_state=None, tol=1e-4, verbose=False, warm_start=False, momentum=0.9,
                 nesterovs_momentum=True, early_stopping=False, validation_fraction=0.1,
                 beta_1=0.9, beta_2=0.999, epsilon=1e-8, n_iter_no_change=10, max_fun=15000,
                 backend="auto", dtype="float32", precision="highest", dropout=0.0,
                 preprocess="auto"):
        store_parameters(self, locals())

    def _check_params(self):
        """The checks of every estimator, and ``loss`` one fastbp implements."""
        hidden = super()._check_params()
        if self.loss != "squared_error":
            raise ValueError(f"loss={self.loss!r} is not implemented by fastbp yet; "
                             f"MLPRegressor trains loss='squared_error'")
        return hidden

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

    def _output_share(self):
        return 1.0 / self.n_targets_  # scikit-learn's squared error averages over the outputs

    @available_if(stochastic_solver)
    @_fit_context(prefer_skip_nested_validation=True)
    def partial_fit(self, X, y, sample_weight=None):
        """One epoch over ``(X, y)`` continuing the optimizer state."""
        return self._fit(X, y, sample_weight, incremental=True)

    def predict(self, X):
        """Predicted values, ``(N,)`` for one target, else ``(N, n_targets)``."""
        check_is_fitted(self, "net_")
        out = self._outputs(X)
        return out[:, 0] if self.n_targets_ == 1 else out
