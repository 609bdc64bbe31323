"""Figures the notes teach with, written straight to image files (Matplotlib's Agg renderer,
no pyplot and no GUI): training curves and the initialisation experiment.
"""

from __future__ import annotations

import math

import numpy as np

from .files import save_figure

INSTALL_HINT = "pip install matplotlib (or pip install 'fastbp[plot]')"
#: bins of each per-layer histogram
HISTOGRAM_BINS = 50


def check_installed(flag: str):
    """Before the work whose figure ``flag`` asks for: Matplotlib is there, else an
    ImportError naming the install (checked by name: Matplotlib is not imported)."""
    import importlib.util

    if importlib.util.find_spec("matplotlib") is None:
        raise ImportError(f"{flag} needs Matplotlib: {INSTALL_HINT}")


def new_figure(**kwargs):
    """A Matplotlib ``Figure`` (not tied to pyplot), or an ImportError saying what to install."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError(f"figures need Matplotlib: {INSTALL_HINT}") from None
    return Figure(layout="constrained", **kwargs)


def plot_history(history, path):
    """Training and validation cost per epoch on one figure, the best (early-stopping) epoch
    marked: overfitting shows as the validation cost turning up while the training cost falls.

    ``history`` is a :class:`~fastbp.History` (``epoch``, ``train_loss``, ``val_loss``,
    ``best_epoch``, ``stopped_early``); epochs without a validation loss are left out of its
    curve. Writes the image to ``path`` (the format follows the extension).
    """
    if not len(history.epoch):
        raise ValueError("history is empty: nothing to plot (train for at least one epoch)")
    fig = new_figure(figsize=(7, 4.5))
    from matplotlib.ticker import MaxNLocator

    ax = fig.add_subplot()
    ax.plot(history.epoch, history.train_loss, marker=".", label="training cost")
    validated = [(e, v) for e, v in zip(history.epoch, history.val_loss) if v is not None]
    if validated:
        ax.plot(*zip(*validated), marker=".", label="validation cost")
    if history.best_epoch is not None:
        mark_best_epoch(ax, history)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel("cost J")
    ax.set_title("training and validation cost" if validated else "training cost")
    ax.grid(True, alpha=0.3)
    ax.legend()
    save_figure(fig, path, dpi=120)


def mark_best_epoch(ax, history):
    """A dashed line and a dot at the epoch whose weights early stopping kept."""
    best = history.best_epoch
    label = f"best epoch {best}" + (" (stopped early)" if history.stopped_early else "")
    ax.axvline(best, color="gray", linestyle="--", linewidth=1, label=label)
    ax.plot([best], [history.val_loss[history.epoch.index(best)]], "o", color="black")


def plot_activations(activations, stats, title, path):
    """The initialisation experiment's figure: mean and std of every layer's activations
    against depth (linear, and the std on a log scale, where a collapse is a straight line
    down), and one histogram per layer on a shared value range."""
    n_layers = len(activations)
    n_cols = min(n_layers, 5)
    n_rows = math.ceil(n_layers / n_cols)
    fig = new_figure(figsize=(2.6 * n_cols, 3.2 + 2.2 * n_rows))
    fig.get_layout_engine().set(wspace=0.04)
    fig.suptitle(title)
    grid = fig.add_gridspec(n_rows + 1, 2, height_ratios=[1.5] + [1] * n_rows)
    plot_mean_and_std(fig.add_subplot(grid[0, 0]), stats)
    plot_log_std(fig.add_subplot(grid[0, 1]), stats)
    histograms = grid[1:, :].subgridspec(n_rows, n_cols)
    low = min(float(a.min()) for a in activations)
    high = max(float(a.max()) for a in activations)
    for i, (a, s) in enumerate(zip(activations, stats)):
        ax = fig.add_subplot(histograms[divmod(i, n_cols)])
        ax.hist(np.ravel(a), bins=HISTOGRAM_BINS, range=(low, high) if high > low else None)
        ax.set_title(f"layer {s.layer}: std {s.std:.2g}", fontsize=9)
        ax.set_yticks([])
        ax.tick_params(labelsize=8)
    save_figure(fig, path, dpi=100)


def plot_mean_and_std(ax, stats):
    """Mean and std per layer on a linear axis that includes 0, so that a steady layer looks
    steady and a collapse reaches the floor."""
    layers = [s.layer for s in stats]
    means, stds = [s.mean for s in stats], [s.std for s in stats]
    ax.plot(layers, means, marker="o", label="mean")
    ax.plot(layers, stds, marker="s", label="std")
    ax.axhline(0, color="gray", linewidth=0.8)
    low, high = min(0.0, *means), max(0.0, *means, *stds)
    span = (high - low) or 1.0
    ax.set_ylim(low - 0.05 * span, high + 0.15 * span)
    ax.set(xlabel="layer", xticks=layers, title="mean and std of the activations")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="best")


def plot_log_std(ax, stats):
    """The std per layer on a log axis spanning at least 0.1 .. 2, decades labelled."""
    from matplotlib.ticker import NullFormatter

    layers = [s.layer for s in stats]
    positive = [s.std for s in stats if s.std > 0]
    ax.plot(layers, [s.std for s in stats], marker="s", color="C1")
    if positive:
        ax.set_yscale("log")
        ax.set_ylim(min(0.1, min(positive) / 3), max(2.0, max(positive) * 3))
        ax.yaxis.set_minor_formatter(NullFormatter())
    scale = "log scale" if positive else "all zero: no log scale"
    ax.set(xlabel="layer", xticks=layers, title=f"std of the activations ({scale})")
    ax.grid(True, alpha=0.3)
