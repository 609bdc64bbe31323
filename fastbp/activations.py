"""Activation names -> what the network needs to know about them.

The per-element maths lives in the kernels (``fastbp.kernels.reference`` is the spec); here each
public name gets its kernel code, its parameter and where it may be used.
"""

from dataclasses import dataclass

from .kernels import codes


@dataclass(frozen=True)
class Activation:
    """An activation ``g`` as the kernels see it: ``code`` and parameter ``alpha``.

    ``alpha`` is the leaky-ReLU slope (``g(z) = max(alpha z, z)``) or the ELU scale
    (``g(z) = z if z > 0 else alpha (e^z - 1)``); the other activations ignore it.
    """

    name: str
    code: int
    alpha: float = 0.0

    @property
    def hidden_ok(self) -> bool:
        """Softmax couples a whole row, so it is an output activation only."""
        return self.code != codes.SOFTMAX


NAMES = tuple(codes.ACTIVATION_CODES)
#: hidden activations with parameters of their own, each a layer class of its own
#: (:class:`~fastbp.layers.PReLU`, :class:`~fastbp.layers.Maxout`), not an elementwise kernel
PARAMETRIC = ("prelu", "maxout")
HIDDEN_NAMES = tuple(n for n in NAMES if n != "softmax") + PARAMETRIC


def make_activation(name, *, leaky_slope=0.01, elu_alpha=1.0, where="activation") -> Activation:
    """The :class:`Activation` for ``name``; ``where`` names the argument in errors."""
    if not isinstance(name, str):
        raise TypeError(f"{where} must be an activation name (str), got {type(name).__name__}")
    if name not in codes.ACTIVATION_CODES:
        raise ValueError(f"{where} must be one of {list(NAMES)}, got {name!r}")
    alpha = {"leaky_relu": leaky_slope, "elu": elu_alpha}.get(name, 0.0)
    return Activation(name, codes.ACTIVATION_CODES[name], float(alpha))


def make_hidden(name, *, leaky_slope=0.01, elu_alpha=1.0):
    """What a hidden layer named ``name`` computes: an :class:`Activation`, or the name itself
    for the :data:`PARAMETRIC` ones; a clear error for anything else (softmax included)."""
    if isinstance(name, str) and name in PARAMETRIC:
        return name
    if isinstance(name, str) and name not in HIDDEN_NAMES:
        raise ValueError(f"activation must be one of {list(HIDDEN_NAMES)} for hidden layers, "
                         f"got {name!r}" + (" (softmax is an output activation)"
                                            if name == "softmax" else ""))
    return make_activation(name, leaky_slope=leaky_slope, elu_alpha=elu_alpha)
