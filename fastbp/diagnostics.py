"""Diagnostics the notes teach with: per-layer activation statistics and the initialisation
experiment.

The experiment (``fastbp diagnose``): push unit-Gaussian input through ``layers`` hidden layers
of ``width`` units, weights drawn by ``init``, biases zero, and watch the mean and std of every
layer's activations. With tanh, ``N(0, 0.01^2)`` weights make them collapse to 0 layer by layer,
``N(0, 1)`` saturates every unit at +-1 (gradients vanish), Xavier decays slowly; with ReLU,
He keeps them at a steady scale.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from . import checks, plots
from .activations import HIDDEN_NAMES
from .argtypes import figure_file
from .backend import backend_names
from .init import INITS


@dataclass
class LayerStats:
    """Mean and standard deviation of one layer's activations ``a_l`` (over samples and units)."""

    layer: int
    mean: float
    std: float


def activation_stats(net, X) -> list[LayerStats]:
    """:class:`LayerStats` of every layer of ``net`` (the output layer last) on inputs ``X``."""
    return [layer_stats(l, a) for l, a in enumerate(net.activations(X), start=1)]


def layer_stats(layer: int, a) -> LayerStats:
    return LayerStats(layer, float(np.mean(a)), float(np.std(a)))


@dataclass
class InitExperiment:
    """What :func:`init_experiment` saw: its setup, per-layer stats and the activations."""

    setup: dict
    stats: list[LayerStats]
    activations: list = field(repr=False)  # a_1 .. a_L of the hidden layers (host arrays)

    def table(self) -> str:
        """The per-layer table, one line per hidden layer."""
        lines = [f"{self.title()}", f"{'layer':>5}  {'mean':>11}  {'std':>11}"]
        lines += [f"{s.layer:>5}  {s.mean:>11.4g}  {s.std:>11.4g}" for s in self.stats]
        return "\n".join(lines)

    def title(self) -> str:
        s = self.setup
        scale = "" if s["init_scale"] is None else f"({s['init_scale']:g})"
        return (f"{s['layers']} {s['activation']} layers of {s['width']}, init {s['init']}"
                f"{scale}, {s['n_samples']} unit-Gaussian samples")

    def plot(self, path):
        """Write the figure: mean and std per layer, and every layer's histogram."""
        from .plots import plot_activations

        plot_activations(self.activations, self.stats, self.title(), path)


def init_experiment(layers=10, width=500, activation="tanh", init="xavier", init_scale=None,
                    n_samples=1000, seed=0, backend="auto") -> InitExperiment:
    """The notes' initialisation experiment; see the module doc. float64 throughout."""
    from .model import MLP

    layers = checks.check_number(layers, "layers", low=1, integer=True)
    width = checks.check_number(width, "width", low=1, integer=True)
    n_samples = checks.check_number(n_samples, "n_samples", low=2, integer=True)
    # one small identity output layer: every layer under study is a hidden one
    net = MLP([width] * (layers + 1) + [1], activation=activation, output="identity",
              loss="mse", init=init, init_scale=init_scale, backend=backend, dtype="float64",
              seed=seed)
    X = np.random.default_rng(seed).standard_normal((n_samples, width))
    hidden = net.activations(X)[:-1]
    setup = dict(layers=layers, width=width, activation=activation, init=init,
                 init_scale=init_scale, n_samples=n_samples, seed=seed)
    return InitExperiment(setup, [layer_stats(l, a) for l, a in enumerate(hidden, start=1)],
                          hidden)


def configure_parser(parser):
    """The flags of ``fastbp diagnose`` on an argparse (sub)parser."""
    parser.add_argument("--layers", type=int, default=10, help="hidden layers (default: 10)")
    parser.add_argument("--width", type=int, default=500, help="units per layer (default: 500)")
    parser.add_argument("--activation", choices=HIDDEN_NAMES, default="tanh",
                        help="hidden activation (default: tanh)")
    parser.add_argument("--init", choices=INITS, default="xavier",
                        help="weight initialiser (default: xavier)")
    parser.add_argument("--init-scale", type=float,
                        help="std (normal) or bound (uniform), e.g. 0.01 or 1")
    parser.add_argument("--samples", type=int, default=1000,
                        help="unit-Gaussian input samples (default: 1000)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument("--backend", default="auto", choices=["auto"] + backend_names(),
                        help="array backend (default: auto)")
    parser.add_argument("--plot", metavar="OUT.png", type=figure_file,
                        help="write the per-layer histograms and mean/std curves here")
    return parser


def run(args):
    """``fastbp diagnose``: run the experiment, print the table, write the figure if asked."""
    if args.plot:
        plots.check_installed("--plot")
    result = init_experiment(args.layers, args.width, args.activation, args.init,
                             args.init_scale, args.samples, args.seed, args.backend)
    print(result.table())
    if args.plot:
        result.plot(args.plot)
        print(f"wrote {args.plot}")
