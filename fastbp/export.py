"""A fastbp network to and from PyTorch, from scikit-learn, and to ONNX.

Every exporter works from :func:`layer_plan`: the network as a list of affine maps
``z_l = a_{l-1} @ W_l + b_l`` (``W_l`` of shape ``(n_{l-1}, n_z)``), each followed by its
activation, with the fitted preprocessor ``x -> x @ A + c`` folded into the first map:
``W_1' = A @ W_1``, ``b_1' = c @ W_1 + b_1`` (exact in float64, rounded once to the model's
dtype). The exported graph therefore takes raw features, like :meth:`fastbp.MLP.forward`, and
returns the output activations ``a_L``.

Conventions of the targets: a ``torch.nn.Linear`` stores ``W.T`` (shape ``(n_z, n_in)``);
scikit-learn's ``coefs_`` store ``W`` as fastbp does. A maxout layer of ``k`` pieces of ``n``
units is one affine map to ``k n`` columns, piece-major, then ``max`` over the pieces:
``torch``: :func:`maxout_module` (``reshape(N, k, n).amax(1)``), ONNX: ``Reshape`` +
``ReduceMax``. PyTorch, ONNX and scikit-learn are imported only when used.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from . import __version__
from .files import atomic_write_bytes
from .preprocess import affine_map

#: the ONNX operator set of exported graphs: run by current onnxruntime and used by
#: scikit-learn's converters (skl2onnx); IR version 8 is the oldest that carries opset 18
ONNX_OPSET = 18
ONNX_IR_VERSION = 8
#: scikit-learn's activation names (``activation``, ``out_activation_``) -> fastbp's
SKLEARN_ACTIVATIONS = {"identity": "identity", "logistic": "sigmoid", "tanh": "tanh",
                       "relu": "relu", "softmax": "softmax"}
#: output activation -> the loss :meth:`MLP.from_torch` pairs it with unless told otherwise
DEFAULT_LOSS = {"softmax": "cross_entropy", "sigmoid": "binary_cross_entropy"}


@dataclass
class LayerPlan:
    """One layer for an exporter: ``z = a_prev @ W + b``, then ``kind`` ("relu", ..., "prelu",
    "maxout") with its parameter: the leaky/ELU ``alpha``, PReLU slopes ``alpha`` (n,), or
    the maxout ``pieces``."""

    kind: str
    W: np.ndarray
    b: np.ndarray
    alpha: object = None
    pieces: int = 1


def layer_plan(net) -> list[LayerPlan]:
    """``net``'s layers as :class:`LayerPlan` s in float64, the preprocessor folded into the
    first."""
    plans = []
    for layer, params in zip(net.layers, net.get_weights()):
        W, b = (np.asarray(p, dtype=np.float64) for p in params[:2])
        kind = layer.name
        if kind == "prelu":
            plans.append(LayerPlan(kind, W, b, alpha=np.asarray(params[2], np.float64)))
        elif kind == "maxout":
            plans.append(LayerPlan(kind, W, b, pieces=layer.pieces))
        else:
            plans.append(LayerPlan(kind, W, b, alpha=layer.activation.alpha))
    A, c = affine_map(net.preprocessor, net.sizes[0])
    first = plans[0]
    first.W, first.b = A @ first.W, c @ first.W + first.b
    return plans


# -- PyTorch ---------------------------------------------------------------------------------

def import_torch():
    try:
        import torch
    except ImportError:
        raise ImportError("this needs PyTorch: pip install torch") from None
    return torch


_MAXOUT = {}


def maxout_module():
    """The ``torch.nn.Module`` class of a maxout activation (made once, when torch is first
    needed): ``k`` pieces of ``n`` units, piece-major columns, ``a = max_p z^(p)``."""
    if "class" not in _MAXOUT:
        torch = import_torch()

        class Maxout(torch.nn.Module):
            """``a = max_p z[:, p*n:(p+1)*n]`` over ``pieces`` blocks of columns."""

            def __init__(self, pieces: int):
                super().__init__()
                self.pieces = pieces

            def forward(self, z):
                return z.reshape(z.shape[0], self.pieces, -1).amax(dim=1)

            def extra_repr(self):
                return f"pieces={self.pieces}"

        _MAXOUT["class"] = Maxout
    return _MAXOUT["class"]


def to_torch(net):
    """A ``torch.nn.Sequential`` of ``Linear`` layers and activation modules that computes
    ``net.forward`` (preprocessing folded into the first ``Linear``), in ``net``'s dtype."""
    torch = import_torch()
    nn = torch.nn
    dtype = getattr(torch, net.dtype)
    modules = []
    for plan in layer_plan(net):
        linear = nn.Linear(*plan.W.shape, dtype=dtype)
        with torch.no_grad():
            linear.weight.copy_(torch.from_numpy(plan.W.T.copy()))
            linear.bias.copy_(torch.from_numpy(plan.b))
        modules.append(linear)
        activation = torch_activation(plan, dtype)
        if activation is not None:
            modules.append(activation)
    return nn.Sequential(*modules)


def torch_activation(plan: LayerPlan, dtype):
    """The module applying ``plan``'s activation (None for the identity)."""
    torch = import_torch()
    nn = torch.nn
    if plan.kind == "prelu":
        module = nn.PReLU(len(plan.alpha), dtype=dtype)
        with torch.no_grad():
            module.weight.copy_(torch.from_numpy(plan.alpha))
        return module
    if plan.kind == "maxout":
        return maxout_module()(plan.pieces)
    return {"identity": lambda: None, "relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh,
            "softmax": lambda: nn.Softmax(dim=1),
            "leaky_relu": lambda: nn.LeakyReLU(plan.alpha),
            "elu": lambda: nn.ELU(plan.alpha)}[plan.kind]()


def from_torch(module, loss=None, backend="auto", **options):
    """An :class:`~fastbp.MLP` computing ``module``: a ``torch.nn.Sequential`` of ``Linear``
    layers, each optionally followed by one of ReLU, Sigmoid, Tanh, LeakyReLU, ELU,
    Softmax(dim=1 or -1) (last layer only), PReLU (one slope per unit, or one shared) or
    :func:`maxout_module` (``Identity`` and ``Dropout`` modules are skipped: they do nothing
    at inference). ``loss`` defaults to the output's natural pair (softmax: cross_entropy,
    sigmoid: binary_cross_entropy, else mse); ``options`` go to :class:`~fastbp.MLP`."""
    from .model import MLP

    torch = import_torch()
    if not isinstance(module, torch.nn.Sequential):
        raise TypeError(f"module must be a torch.nn.Sequential, got {type(module).__name__}")
    layers = torch_layers(module)
    config = torch_config(layers)
    config["dtype"] = "float64" if any(p.dtype == torch.float64 for p in module.parameters()) \
        else "float32"
    config["preprocess"] = None  # the module maps raw features: a fit must not rescale them
    config.update(options)
    if loss is None:
        loss = DEFAULT_LOSS.get(config["output"], "mse")
    net = MLP(loss=loss, backend=backend, **config)
    net.set_weights([weights for _, weights in layers])
    return net


def torch_layers(module) -> list:
    """``[(activation description, (W, b[, alpha])), ...]`` from the modules of a Sequential:
    each ``Linear`` opens a layer, the module after it (if any) is its activation."""
    torch = import_torch()
    nn = torch.nn
    layers = []
    for i, child in enumerate(flat_modules(module)):
        if isinstance(child, (nn.Identity, nn.Dropout)) or (
                isinstance(child, nn.Flatten) and child.start_dim in (1, -1)):
            continue  # nothing at inference on (samples, features)
        if isinstance(child, nn.Linear):
            W = child.weight.detach().cpu().double().numpy().T
            b = (child.bias.detach().cpu().double().numpy() if child.bias is not None
                 else np.zeros(W.shape[1]))
            layers.append([("identity", None), [W, b]])
            continue
        if not layers or layers[-1][0][0] != "identity":
            raise ValueError(f"module[{i}] ({type(child).__name__}) must follow a Linear layer "
                             f"(one activation per Linear)")
        layers[-1][0] = torch_kind(child, i, layers[-1][1])
    if not layers:
        raise ValueError("module has no Linear layer")
    return [(kind, tuple(weights)) for kind, weights in layers]


def flat_modules(module) -> list:
    """The modules of a Sequential in order, nested Sequentials opened."""
    nn = import_torch().nn
    return [leaf for child in module
            for leaf in (flat_modules(child) if isinstance(child, nn.Sequential) else [child])]


def torch_kind(child, i, weights):
    """``(fastbp activation name, its parameter)`` for an activation module; PReLU slopes are
    appended to the layer's ``weights`` list."""
    nn = import_torch().nn
    simple = {nn.ReLU: "relu", nn.Sigmoid: "sigmoid", nn.Tanh: "tanh"}
    for cls, name in simple.items():
        if type(child) is cls:
            return name, None
    if isinstance(child, nn.LeakyReLU):
        return "leaky_relu", float(child.negative_slope)
    if isinstance(child, nn.ELU):
        return "elu", float(child.alpha)
    if isinstance(child, nn.Softmax):
        if child.dim not in (1, -1):
            raise ValueError(f"module[{i}]: Softmax must act on dim 1 (the features), got "
                             f"dim={child.dim}")
        return "softmax", None
    if isinstance(child, nn.PReLU):
        alpha = child.weight.detach().cpu().double().numpy()
        n = weights[0].shape[1]
        if alpha.size not in (1, n):
            raise ValueError(f"module[{i}]: PReLU has {alpha.size} slopes; the Linear before "
                             f"it gives {n} units (use PReLU({n}) or PReLU())")
        weights.append(np.broadcast_to(alpha, (n,)).copy())
        return "prelu", None
    if isinstance(child, maxout_module()):
        return "maxout", child.pieces
    raise ValueError(f"module[{i}] ({type(child).__name__}) is not an activation fastbp has: "
                     f"use ReLU, Sigmoid, Tanh, LeakyReLU, ELU, Softmax, PReLU or maxout")


def torch_config(layers) -> dict:
    """The :class:`~fastbp.MLP` arguments for :func:`torch_layers`' output (sizes,
    activations and their shared parameters)."""
    kinds = [kind for kind, _ in layers]
    if any(name == "softmax" for name, _ in kinds[:-1]):
        raise ValueError("a Softmax may only end the module (fastbp's hidden activations are "
                         "elementwise)")
    shapes = [weights[0].shape for _, weights in layers]
    for l in range(1, len(shapes)):
        if shapes[l][0] != output_units(kinds[l - 1], shapes[l - 1][1]):
            raise ValueError(f"Linear layer {l + 1} takes {shapes[l][0]} inputs, the layer "
                             f"before gives {output_units(kinds[l - 1], shapes[l - 1][1])}")
    config = {"sizes": [shapes[0][0]] + [output_units(k, s[1]) for k, s in zip(kinds, shapes)],
              "activation": [name for name, _ in kinds[:-1]], "output": kinds[-1][0]}
    for name, option in (("leaky_relu", "leaky_slope"), ("elu", "elu_alpha"),
                         ("maxout", "maxout_pieces")):
        values = {param for kind, param in kinds if kind == name}
        if len(values) > 1:
            raise ValueError(f"fastbp has one {option} per network; the module uses {name} "
                             f"with {sorted(values)}")
        if values:
            config[option] = values.pop()
    if kinds[-1][0] in ("prelu", "maxout"):
        raise ValueError(f"the last layer's activation must be elementwise, got {kinds[-1][0]}")
    return config


def output_units(kind, n_z: int) -> int:
    """Units a layer gives: ``n_z / pieces`` for maxout, else ``n_z``."""
    name, param = kind
    if name != "maxout":
        return n_z
    if n_z % param:
        raise ValueError(f"a maxout layer of {param} pieces needs a multiple of {param} "
                         f"outputs from its Linear, got {n_z}")
    return n_z // param


# -- scikit-learn ----------------------------------------------------------------------------

def from_sklearn(estimator, backend="auto", **options):
    """An :class:`~fastbp.MLP` computing a fitted ``sklearn.neural_network.MLPClassifier``
    or ``MLPRegressor``: same weights (``coefs_``, ``intercepts_``), hidden activation and
    output (softmax + cross_entropy for several classes, sigmoid + binary_cross_entropy for two
    classes or multi-label, identity + mse for regression). fastbp predicts class indices:
    ``estimator.classes_[net.predict(X)]`` are the estimator's labels."""
    from .model import MLP

    coefs = getattr(estimator, "coefs_", None)
    if coefs is None or not hasattr(estimator, "out_activation_"):
        raise TypeError(f"estimator must be a fitted scikit-learn MLPClassifier or "
                        f"MLPRegressor, got {type(estimator).__name__}"
                        + (" (not fitted)" if hasattr(estimator, "hidden_layer_sizes") else ""))
    hidden = SKLEARN_ACTIVATIONS.get(estimator.activation)
    output = SKLEARN_ACTIVATIONS[estimator.out_activation_]
    if hidden is None or hidden == "softmax":
        raise ValueError(f"estimator.activation={estimator.activation!r} has no fastbp twin")
    loss = {"softmax": "cross_entropy", "sigmoid": "binary_cross_entropy"}.get(output, "mse")
    sizes = [coefs[0].shape[0]] + [W.shape[1] for W in coefs]
    config = dict(sizes=sizes, activation=hidden, output=output, loss=loss, preprocess=None,
                  dtype="float64" if coefs[0].dtype == np.float64 else "float32")
    config.update(options)
    net = MLP(backend=backend, **config)
    net.set_weights([(W, b) for W, b in zip(coefs, estimator.intercepts_)])
    return net


# -- ONNX ------------------------------------------------------------------------------------

def import_onnx():
    try:
        import onnx
    except ImportError:
        raise ImportError("ONNX export needs the onnx package: pip install 'fastbp[export]'") \
            from None
    return onnx


def to_onnx(net, path=None):
    """A self-contained ONNX graph computing ``net.forward`` in float32 (inputs ``X`` of shape
    ``(N, n_0)``, outputs ``Y`` of ``(N, n_L)``; ``N`` dynamic), preprocessing folded in;
    written atomically to ``path`` if given. Returns the ``onnx.ModelProto``."""
    onnx = import_onnx()
    from onnx import TensorProto, helper

    graph = OnnxGraph(helper)
    x = "X"
    for l, plan in enumerate(layer_plan(net), start=1):
        x = graph.layer(plan, x, l)
    graph.nodes.append(helper.make_node("Identity", [x], ["Y"]))
    batch = "N"
    proto = helper.make_graph(
        graph.nodes, "fastbp_mlp",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [batch, net.sizes[0]])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [batch, net.sizes[-1]])],
        graph.initializers)
    model = helper.make_model(proto, producer_name="fastbp", producer_version=__version__,
                              opset_imports=[helper.make_opsetid("", ONNX_OPSET)],
                              ir_version=ONNX_IR_VERSION)
    helper.set_model_props(model, {"fastbp_config": json.dumps(net.config),
                                   "fastbp_task": net.task})
    onnx.checker.check_model(model, full_check=True)
    if path is not None:
        atomic_write_bytes(path, model.SerializeToString())
    return model


class OnnxGraph:
    """Nodes and float32 initializers of an ONNX graph, built layer by layer."""

    def __init__(self, helper):
        self.helper = helper
        self.nodes, self.initializers = [], []

    def constant(self, name, values, dtype=np.float32):
        from onnx import numpy_helper

        self.initializers.append(numpy_helper.from_array(np.asarray(values, dtype), name))
        return name

    def node(self, op, inputs, output, **attributes):
        self.nodes.append(self.helper.make_node(op, inputs, [output], **attributes))
        return output

    def layer(self, plan: LayerPlan, x: str, l: int) -> str:
        """``z_l = Gemm(x, W_l, b_l)``, then the activation; returns the output's name."""
        W, b = self.constant(f"W_{l}", plan.W), self.constant(f"b_{l}", plan.b)
        z = self.node("Gemm", [x, W, b], f"z_{l}")
        a = f"a_{l}"
        if plan.kind == "maxout":
            shape = self.constant(f"pieces_shape_{l}", [0, plan.pieces, -1], np.int64)
            by_piece = self.node("Reshape", [z, shape], f"z_pieces_{l}")
            axis = self.constant(f"pieces_axis_{l}", [1], np.int64)
            return self.node("ReduceMax", [by_piece, axis], a, keepdims=0)
        if plan.kind == "prelu":
            return self.node("PRelu", [z, self.constant(f"alpha_{l}", plan.alpha)], a)
        if plan.kind == "identity":
            return z
        ops = {"relu": ("Relu", {}), "sigmoid": ("Sigmoid", {}), "tanh": ("Tanh", {}),
               "softmax": ("Softmax", {"axis": 1}),
               "leaky_relu": ("LeakyRelu", {"alpha": float(plan.alpha)}),
               "elu": ("Elu", {"alpha": float(plan.alpha)})}
        op, attributes = ops[plan.kind]
        return self.node(op, [z], a, **attributes)
