"""The multilayer perceptron: a stack of layers (:mod:`fastbp.layers`) and a loss.

Forward: ``a_0 = X``, ``z_l = a_{l-1} @ W_l + b_l``, ``a_l = g_l(z_l)`` for ``l = 1..L``.
Cost: ``J = mean_i L(y_i, a_L,i) + (lam/2) sum_l ||W_l||^2``.
Backward: ``delta_L = dJ/dz_L`` (``(a_L - y)/N`` for the matched pairs), then
``delta_l = (delta_{l+1} @ W_{l+1}.T) * g_l'(z_l)``, ``dW_l = a_{l-1}.T @ delta_l + lam W_l``,
``db_l = sum over the batch of delta_l``.

All parameters live in one flat device vector ``theta`` and all gradients in another; the
layers hold views. One optimizer call then updates everything, and the flattened vector is what
gradient checks (and L-BFGS, and all-reduce) want. Its layout (:attr:`MLP.param_layout`) is layer
by layer, each layer's parameters in order, each array row-major:
``W_1, b_1, W_2, b_2, ...``, with ``alpha_l`` after ``b_l`` for a PReLU layer; a maxout layer's
``W_l`` has ``k * n_l`` columns (see :class:`~fastbp.layers.Maxout`).
This module does no arithmetic of its own on training data: the backend does.
"""

from __future__ import annotations

import math

from . import checks, host, init as initialisers, preprocess
from .activations import make_activation, make_hidden
from .backend import get_backend
from .fit_buffers import FitBuffers
from .guard import UseGuard, exclusive
from .layers import Dense, Maxout, PReLU
from .losses import make_loss
from .memory import check_fits
from .preprocess import check_preprocess, choose_auto, make_preprocessor
from .sparse import is_row_source
from .weights import column_moments, standardizer

#: rows per chunk when predicting, to bound device memory
PREDICT_CHUNK = 8192


class MLP:
    """A multilayer perceptron trained by backpropagation on any fastbp backend.

    ``sizes`` lists the units per layer, input first: ``[64, 32, 10]`` is 64 inputs, one
    hidden layer of 32 and 10 outputs. ``activation`` is one name for every hidden layer or a
    list with one per hidden layer; besides the elementwise ones, ``"prelu"`` (a learned slope
    per unit, starting at ``prelu_init``) and ``"maxout"`` (the max of ``maxout_pieces`` affine
    pieces per unit) are layers with parameters of their own. ``output`` and ``loss`` must be a
    valid pair (see :mod:`fastbp.losses`). ``preprocess="standardize" | "pca" | "zca"`` fits a
    feature standardiser or whitener (:mod:`fastbp.preprocess`) on the training data at the
    first :meth:`fit` and applies it to every later input (it is saved too); the default
    ``"auto"`` standardises badly scaled features only (:func:`fastbp.preprocess.choose_auto`),
    ``preprocess=None`` trains on the raw features;
    ``standardize=True`` is an alias of ``preprocess="standardize"``. ``classes`` names the
    classes of the outputs (one per output, or two for a single sigmoid output), saved with the
    model for the command line's predictions. ``feature_names`` (one per input) and
    ``target_name`` name the columns of the file the model was trained on, saved with it so
    that ``fastbp predict`` matches a file's columns by name.

    Every name is checked at construction, used or not. A model serves one thread at a time:
    a call from a second thread while one runs is a RuntimeError (:mod:`fastbp.guard`).
    """

    def __init__(self, sizes, activation="relu", output="softmax", loss="cross_entropy",
                 init="he", init_scale=None, backend="auto", dtype="float32", seed=None,
                 leaky_slope=0.01, elu_alpha=1.0, standardize=False, preprocess="auto",
                 maxout_pieces=2, prelu_init=0.25, classes=None, feature_names=None,
                 target_name=None):
        self.sizes = checks.check_sizes(sizes)
        preprocess = check_preprocess("standardize" if standardize is True and preprocess
                                      == "auto" else preprocess, standardize)
        self.config = dict(
            sizes=self.sizes, activation=activation, output=output, loss=loss, init=init,
            init_scale=init_scale, dtype=host.dtype_name(dtype), seed=seed,
            leaky_slope=checks.check_number(leaky_slope, "leaky_slope", low=0, high=1),
            elu_alpha=checks.check_number(elu_alpha, "elu_alpha", low=0, low_open=True),
            maxout_pieces=checks.check_number(maxout_pieces, "maxout_pieces", low=2,
                                              integer=True),
            prelu_init=checks.check_number(prelu_init, "prelu_init"),
            preprocess=preprocess, classes=checks.check_classes(classes, self.sizes[-1]),
            feature_names=checks.check_feature_names(feature_names, self.sizes[0]),
            target_name=checks.check_name(target_name, "target_name"))
        self.hidden = self._hidden_activations(activation)
        self.output = make_activation(output, where="output", leaky_slope=leaky_slope,
                                      elu_alpha=elu_alpha)
        self.loss_fn = make_loss(loss, output)
        checks.check_output_width(output, self.sizes[-1])
        scale = initialisers.check_init(init, init_scale)
        checks.check_seed(seed)
        self.backend = get_backend(backend)
        self.dtype = self.config["dtype"]
        self.rng = initialisers.make_rng(seed)
        self.preprocessor = None
        self._guard = UseGuard()
        #: the optimizer and counts a continued fit picks up
        #: (:class:`fastbp.trainer.TrainingState`)
        self.training_state = None
        #: the trainer's snapshots and batch buffers, kept for the next fit
        self.fit_buffers = FitBuffers(self.backend)
        #: whether preprocess="auto" has chosen (at the first fit, or in the file it came from)
        self.auto_decided = False
        self._build(scale)

    # -- construction ----------------------------------------------------------------------
    def _hidden_activations(self, activation):
        n_hidden = len(self.sizes) - 2
        names = [activation] * n_hidden if isinstance(activation, str) else list(activation) \
            if isinstance(activation, (list, tuple)) else None
        if names is None:
            raise TypeError(f"activation must be a name or a list of names, got "
                            f"{type(activation).__name__}")
        unused = [activation] if isinstance(activation, str) else []
        for name in names or unused:  # a name is checked even where no hidden layer uses it
            make_hidden(name, leaky_slope=self.config["leaky_slope"],
                        elu_alpha=self.config["elu_alpha"])
        if len(names) != n_hidden:
            raise ValueError(f"activation list must have one name per hidden layer "
                             f"({n_hidden}), got {len(names)}")
        return [make_hidden(n, leaky_slope=self.config["leaky_slope"],
                            elu_alpha=self.config["elu_alpha"]) for n in names]

    def _build(self, scale):
        """Make the layers, lay their parameters out in the flat vectors and write the initial
        weights, drawn on the host layer by layer."""
        self.layers = [self._make_layer(kind, n_in, n_out) for kind, n_in, n_out in zip(
            self.hidden + [self.output], self.sizes[:-1], self.sizes[1:])]
        n_params = sum(math.prod(shape) for spec in self.param_layout for _, shape in spec)
        check_fits(2 * n_params * (4 if self.dtype == "float32" else 8),
                   f"sizes {self.sizes} give {n_params:,} parameters, which with their "
                   f"gradients ({self.dtype})", self.backend.device_memory_free())
        initial = [layer.initial_params(self.rng, self.config["init"], scale)
                   for layer in self.layers]
        self.params = self.backend.zeros((n_params,), self.dtype)
        self.grads = self.backend.zeros((n_params,), self.dtype)
        for layer, params, grads in zip(self.layers, self._split(self.params),
                                        self._split(self.grads)):
            layer.bind(params, grads)
        self._write_weights(initial)

    def _make_layer(self, kind, n_in, n_out):
        """The layer for ``kind``: an :class:`~fastbp.activations.Activation`, "prelu" or
        "maxout"."""
        if kind == "prelu":
            return PReLU(self.backend, n_in, n_out, self.config["prelu_init"])
        if kind == "maxout":
            return Maxout(self.backend, n_in, n_out, self.config["maxout_pieces"])
        return Dense(self.backend, n_in, n_out, kind)

    @property
    def param_layout(self) -> list[list[tuple[str, tuple]]]:
        """Per layer, ``[(name, shape), ...]`` of its parameters, in their order in ``theta``."""
        return [layer.param_shapes() for layer in self.layers]

    def _split(self, flat):
        """Per layer, a tuple of views of the flat vector ``flat`` (device or host), shaped as
        :attr:`param_layout` says."""
        views, offset = [], 0
        for spec in self.param_layout:
            arrays = []
            for _, shape in spec:
                size = math.prod(shape)
                arrays.append(flat[offset:offset + size].reshape(shape))
                offset += size
            views.append(tuple(arrays))
        return views

    @property
    def n_params(self) -> int:
        return self.params.shape[0]

    @property
    def task(self) -> str:
        """'classification', 'binary' or 'regression', from the loss."""
        return self.loss_fn.task

    # -- weights ---------------------------------------------------------------------------
    @exclusive
    def get_weights(self):
        """Per layer, a tuple of host NumPy copies of its parameters (:attr:`param_layout`):
        ``(W_l, b_l)`` with ``W_l`` of shape ``(n_{l-1}, n_l)``; ``(W_l, b_l, alpha_l)`` for a
        PReLU layer (``alpha_l`` of shape ``(n_l,)``); ``(W_l, b_l)`` of shapes
        ``(n_{l-1}, k n_l)`` and ``(k n_l,)`` for a maxout layer, piece ``p`` in columns
        ``p n_l .. (p+1) n_l - 1``."""
        return [tuple(self.backend.to_numpy(p).copy() for p in params)
                for params in self._split(self.params)]

    @exclusive
    def set_weights(self, weights):
        """Replace every layer's parameters, given as :meth:`get_weights` returns them; shapes
        and finiteness are checked before any write."""
        layout = self.param_layout
        if not isinstance(weights, (list, tuple)) or len(weights) != len(layout):
            got = len(weights) if isinstance(weights, (list, tuple)) else repr(weights)
            raise ValueError(f"weights must be a list of {len(layout)} {weights_format(layout)}, "
                             f"got {got}")
        checked = []
        for l, (given, spec) in enumerate(zip(weights, layout), start=1):
            names = ", ".join(name for name, _ in spec)
            if not isinstance(given, (list, tuple)) or len(given) != len(spec):
                raise ValueError(f"weights[{l - 1}] must be a ({names}) tuple")
            checked.append([checks.check_param(arr, f"{name}_{l}", shape)
                            for arr, (name, shape) in zip(given, spec)])
        self._write_weights(checked)

    def _write_weights(self, host_weights):
        for arrays, views in zip(host_weights, self._split(self.params)):
            for array, view in zip(arrays, views):
                self.backend.copy(self.backend.asarray(array, self.dtype), view)

    @exclusive
    def get_flat_params(self):
        """The flat parameter vector ``theta`` (host copy), laid out as :attr:`param_layout`."""
        return self.backend.to_numpy(self.params).copy()

    @exclusive
    def set_flat_params(self, theta):
        """Overwrite ``theta`` from a host vector of length :attr:`n_params`."""
        theta = checks.as_float_array(theta, "theta")
        if theta.shape != (self.n_params,):
            raise ValueError(f"theta must have shape ({self.n_params},), got {theta.shape}")
        checks.check_finite(theta, "theta")
        self.backend.copy(self.backend.asarray(theta, self.dtype), self.params)

    # -- device-level passes (used by fit) ---------------------------------------------------
    def forward_device(self, X, training=False, rng=None):
        """Forward pass on device data; returns ``a_L`` (a buffer reused by the next call).

        Dropout masks come from ``rng`` (default: the model's generator).
        """
        a = X
        for layer in self.layers:
            a = layer.forward(a, training, rng or self.rng)
        return a

    def backward_device(self, Y, scale, weight_decay, loss_acc, weights=None):
        """After :meth:`forward_device`: ``delta_L``, then every ``dW``, ``db`` into the flat
        gradient vector; ``loss_acc[0] += sum_i L_i``. ``scale`` is ``1/N`` of the mean.

        ``weights=(w, total)``: an ``(N, 1)`` device column of per-sample weights and a
        1-element buffer; ``delta_L,i = w_i dL_i/dz / sum_j w_j`` (``scale`` is then ignored),
        the delta of the weighted mean ``sum_i w_i L_i / sum_j w_j``.
        """
        top = self.layers[-1]
        act = top.activation
        delta = self.backend.output_delta_loss(top.z, top.a, Y, self.loss_fn.code, act.code,
                                               act.alpha, 1.0 if weights else scale,
                                               top.delta, loss_acc)
        if weights:
            self.backend.weight_rows(delta, *weights)
        for l in range(len(self.layers) - 1, -1, -1):
            below = self.layers[l - 1] if l > 0 else None
            delta = self.layers[l].backward(delta, below, weight_decay)

    def penalty(self, weight_decay):
        """``(lam/2) sum_l ||W_l||^2`` as a Python float (biases and PReLU slopes are free)."""
        if not weight_decay:
            return 0.0
        total = sum(self.backend.scalar(self.backend.sum_squares(layer.W))
                    for layer in self.layers)
        return 0.5 * weight_decay * total

    def set_dropout(self, rate):
        """Drop each hidden unit with probability ``rate`` in training (not the output)."""
        for layer in self.layers[:-1]:
            layer.dropout = rate

    # -- public API on host data -------------------------------------------------------------
    @property
    def standardizer(self):
        """The fitted preprocessor: an alias of :attr:`preprocessor` kept for older callers."""
        return self.preprocessor

    @standardizer.setter
    def standardizer(self, value):
        self.preprocessor = value

    def fit_preprocessor(self, X, weights=None):
        """Fit ``config["preprocess"]`` on the training features ``X`` (host), unless a
        preprocessor is fitted already (by an earlier fit, a loaded file, or by hand).

        "auto" decides at the first fit of this object (:func:`fastbp.preprocess.choose_auto`;
        a loaded model has decided); a standardiser takes the per-sample ``weights`` (N,) into
        its mean and std, so that weights train like repeated rows. Features on the device are
        fitted on a host copy.
        """
        name, decided = self.config["preprocess"], self.auto_decided
        self.auto_decided = True
        if self.preprocessor is not None or name is None or (name == "auto" and decided):
            return
        X = X if is_row_source(X) else self.backend.to_numpy(X)
        moments = column_moments(X, weights) if name in ("auto", "standardize") else None
        name = choose_auto(*moments) if name == "auto" else name
        if name == "standardize":
            self.preprocessor = standardizer(*moments)
        elif name is not None:
            if is_row_source(X):
                raise ValueError(f"preprocess={name!r} needs dense features; sparse input "
                                 f"takes 'standardize', 'auto' or None")
            self.preprocessor = make_preprocessor(name).fit(X)

    def prepare(self, X, name="X"):
        """Validated, preprocessed features: on the backend's device if ``X`` is there
        already, else on the host (:func:`fastbp.arrays.to_array` takes any array type);
        sparse features as a :class:`~fastbp.sparse.SparseRows`, densified chunk by chunk."""
        X = checks.check_features_or_rows(X, self.sizes[0], name, self.backend, self.dtype,
                                          feature_names=self.config["feature_names"])
        if self.preprocessor is None:
            return X
        return (X.transformed(self.preprocessor) if is_row_source(X)
                else preprocess.transform(self.preprocessor, X))

    def targets(self, y, n_samples, name="y"):
        """Validated targets as an ``(N, n_outputs)`` matrix (where ``y`` is, as for ``X``)."""
        return checks.check_targets(y, n_samples, self.sizes[-1], self.task, name,
                                    self.backend, self.dtype)

    def _chunks(self, X):
        """Yield ``(start, stop, device chunk)`` over prepared host features."""
        for start in range(0, X.shape[0], PREDICT_CHUNK):
            stop = min(start + PREDICT_CHUNK, X.shape[0])
            yield start, stop, self.backend.asarray(X[start:stop], self.dtype)

    @exclusive
    def forward(self, X):
        """``a_L`` for host features ``X``: the network's outputs as a NumPy array; a
        FloatingPointError if any is NaN or inf."""
        return self._outputs(self.prepare(X))

    def _outputs(self, X):
        """``a_L`` for prepared host features, chunk by chunk; finite, else a
        FloatingPointError."""
        return host.check_finite_outputs(
            host.concat_rows([self.backend.to_numpy(self.forward_device(Xc)).copy()
                              for _, _, Xc in self._chunks(X)]), self.dtype)

    @exclusive
    def activations(self, X):
        """``[a_1, ..., a_L]`` for host features ``X`` (NumPy), e.g. for per-layer statistics."""
        X = self.prepare(X)
        per_layer = [[] for _ in self.layers]
        for _, _, Xc in self._chunks(X):
            self.forward_device(Xc)
            for store, layer in zip(per_layer, self.layers):
                store.append(self.backend.to_numpy(layer.a).copy())
        return [host.concat_rows(chunks) for chunks in per_layer]

    @exclusive
    def predict_proba(self, X):
        """Class probabilities (softmax or sigmoid outputs)."""
        if self.output.name not in ("softmax", "sigmoid") or self.task == "regression":
            raise ValueError(f"predict_proba needs a classifier with softmax or sigmoid "
                             f"outputs, this network has output={self.output.name!r}, "
                             f"loss={self.loss_fn.name!r}")
        return self.forward(X)

    @exclusive
    def predict(self, X):
        """Class indices (classification), 0/1 per output (binary), or values (regression)."""
        out = self.forward(X)
        if self.task == "classification":
            return host.class_indices(out)
        if self.task == "binary":
            out = (out > 0.5).astype("int64")
        return out[:, 0] if out.shape[1] == 1 else out

    @exclusive
    def score(self, X, y):
        """Accuracy for classifiers, R^2 for regression."""
        X = self.prepare(X)
        Y = self.targets(y, X.shape[0])
        return host.score(self._outputs(X), self.backend.to_numpy(Y), self.task)

    @exclusive
    def loss(self, X, y, weight_decay=0.0):
        """``J = mean_i L_i + (weight_decay/2) sum_l ||W_l||^2`` on host data."""
        weight_decay = checks.check_number(weight_decay, "weight_decay", low=0)
        total, outputs = self.evaluate(X, y)
        return total / outputs.shape[0] + self.penalty(weight_decay)

    @exclusive
    def evaluate(self, X, y):
        """``(sum_i L_i, outputs a_L)`` on host features ``X`` and labels ``y`` in any form
        :meth:`fit` takes (class indices or one-hot, ...), both validated and ``X``
        preprocessed; a FloatingPointError if an output is NaN or inf."""
        X = self.prepare(X)
        total, outputs = self.evaluate_prepared(X, self.targets(y, X.shape[0]))
        return total, host.check_finite_outputs(outputs, self.dtype)

    def evaluate_prepared(self, X, Y):
        """:meth:`evaluate` on already prepared host features and an ``(N, n_outputs)`` target
        matrix (what :meth:`targets` returns), chunk by chunk; outputs unchecked (training
        checks the loss itself)."""
        outputs, total = [], 0.0
        for start, stop, Xc in self._chunks(X):
            self.forward_device(Xc)
            top = self.layers[-1]
            Yc = self.backend.asarray(Y[start:stop], self.dtype)
            total += self.backend.scalar(
                self.backend.loss_sum(top.z, top.a, Yc, self.loss_fn.code))
            outputs.append(self.backend.to_numpy(top.a).copy())
        return total, host.concat_rows(outputs)

    @exclusive
    def gradients(self, X, y, weight_decay=0.0):
        """``[(dJ/dW_l, dJ/db_l), ...]`` of the full-batch cost on host data (NumPy), in the
        format of :meth:`get_weights` (``dJ/dalpha_l`` third for a PReLU layer)."""
        weight_decay = checks.check_number(weight_decay, "weight_decay", low=0)
        X = self.prepare(X)
        Y = self.targets(y, X.shape[0])
        Xd, Yd = self.backend.asarray(X, self.dtype), self.backend.asarray(Y, self.dtype)
        loss_acc = self.backend.zeros((1,), self.dtype)
        self.forward_device(Xd)
        self.backward_device(Yd, 1.0 / X.shape[0], weight_decay, loss_acc)
        return [tuple(self.backend.to_numpy(g).copy() for g in grads)
                for grads in self._split(self.grads)]

    @exclusive
    def fit(self, X, y, **options):
        """Train by minibatch backpropagation; see :func:`fastbp.train.fit` for the options."""
        from .train import fit

        return fit(self, X, y, **options)

    @exclusive
    def partial_fit(self, X, y, sample_weight=None, **options):
        """One more epoch on ``(X, y)`` (a minibatch stream, say) that continues the previous
        fit's optimizer state, learning rate and epoch count (``continue_training=True``,
        ``epochs=1`` and ``verbose=0`` unless given); the step options not given (``lr``,
        ``optimizer``, ``batch_size``, ``weight_decay``, ... :data:`CONTINUED_OPTIONS
        <fastbp.fit_options.CONTINUED_OPTIONS>`) are the previous fit's. See
        :func:`fastbp.train.fit`."""
        from .train import fit

        previous = self.training_state.options if self.training_state is not None else {}
        options = {**previous, "epochs": 1, "verbose": 0, **options, "continue_training": True}
        return fit(self, X, y, sample_weight=sample_weight, **options)

    @exclusive
    def save(self, path):
        """Write the model (weights, config, preprocessor) to ``path`` atomically: an .npz, or
        a safetensors file when ``path`` ends in ``.safetensors``."""
        from .io import save

        save(self, path)

    # -- interop (fastbp.export) -------------------------------------------------------------
    def to_torch(self):
        """A ``torch.nn.Sequential`` computing :meth:`forward` (:func:`fastbp.export.to_torch`)."""
        from .export import to_torch

        return to_torch(self)

    def to_onnx(self, path=None):
        """A self-contained ONNX graph of :meth:`forward`, written atomically to ``path`` if
        given (see :func:`fastbp.export.to_onnx`)."""
        from .export import to_onnx

        return to_onnx(self, path)

    @classmethod
    def from_torch(cls, module, loss=None, backend="auto", **options):
        """The network a ``torch.nn.Sequential`` computes (see
        :func:`fastbp.export.from_torch`)."""
        from .export import from_torch

        return from_torch(module, loss, backend, **options)

    @classmethod
    def from_sklearn(cls, estimator, backend="auto", **options):
        """The network of a fitted scikit-learn MLP (see :func:`fastbp.export.from_sklearn`)."""
        from .export import from_sklearn

        return from_sklearn(estimator, backend, **options)

    def summary(self) -> str:
        """Layers, shapes, parameter counts, preprocessing, backend and dtype, as a table."""
        from .summary import summary

        return summary(self)

    @exclusive
    def copy(self, dtype=None, backend=None):
        """A new network with the same configuration and weights (optionally another dtype or
        backend)."""
        config = dict(self.config, dtype=dtype or self.dtype)
        twin = MLP(**config, backend=backend or self.backend)
        twin.set_weights(self.get_weights())
        twin.preprocessor = self.preprocessor
        twin.auto_decided = self.auto_decided
        return twin

    @exclusive
    def __reduce__(self):
        """Pickle (and ``copy.deepcopy``) as host data, optimizer state included
        (:mod:`fastbp.pickling`)."""
        from .pickling import model_state, restore_model

        return restore_model, (model_state(self),)

    def __repr__(self):
        acts = ",".join(layer.name for layer in self.layers[:-1])
        return (f"MLP({'-'.join(map(str, self.sizes))}, hidden={acts or '-'}, "
                f"output={self.output.name}, loss={self.loss_fn.name}, "
                f"backend={self.backend.name}, dtype={self.dtype})")


def weights_format(layout) -> str:
    """How :meth:`MLP.set_weights` wants each layer: "(W, b) pairs", or the tuples there are."""
    kinds = sorted({"(" + ", ".join(name for name, _ in spec) + ")" for spec in layout})
    return f"{kinds[0]} pairs" if kinds == ["(W, b)"] else "tuples " + " or ".join(kinds)


def flatten_params(net):
    """``theta``: every parameter of ``net`` in one host vector (a copy), laid out as
    :attr:`MLP.param_layout`: ``W_1, b_1 [, alpha_1], W_2, ...``, each array row-major.
    The flat vector L-BFGS and the gradient check work on; :func:`unflatten_params` writes one
    back."""
    return net.get_flat_params()


def unflatten_params(net, theta):
    """Write the flat host vector ``theta`` (the layout of :func:`flatten_params`) into
    ``net``'s parameters; its length and finiteness are checked before the write."""
    net.set_flat_params(theta)
