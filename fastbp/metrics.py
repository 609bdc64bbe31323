"""Metrics on host arrays: ``metric(outputs, targets, task) -> float``.

``outputs`` are the network's ``a_L`` (N, K), ``targets`` the target matrix fit uses (one-hot
for classification, 0/1 columns for binary / multi-label, values for regression), ``task``
'classification', 'binary' or 'regression'. ``fit(metrics=[...])`` logs ``val_<name>`` per
epoch; names: ``accuracy``, ``f1`` (macro over classes), ``roc_auc`` (macro one-vs-rest,
ties counted half), ``top_<k>_accuracy`` (``top_5_accuracy``, ...), ``r2``; or a callable of
the same signature (logged under its ``__name__``).
"""

from __future__ import annotations

import re

import numpy as np

from . import host


def accuracy(outputs, targets, task) -> float:
    """Fraction right (subset accuracy for multi-label)."""
    return host.accuracy(outputs, targets, task)


def r2(outputs, targets, task) -> float:
    """``1 - SS_res / SS_tot`` averaged over the outputs."""
    return host.r2_score(outputs, targets)


def indicators(outputs, targets, task):
    """``(predicted, true)`` 0/1 indicator matrices (N, K) of a classifier."""
    if task == "binary":
        return outputs > 0.5, targets > 0.5
    predicted = np.zeros(outputs.shape, dtype=bool)
    predicted[np.arange(len(outputs)), host.class_indices(outputs)] = True
    return predicted, targets > 0.5


def f1(outputs, targets, task) -> float:
    """Macro F1: the mean over classes of ``2 TP / (2 TP + FP + FN)`` (a class never
    predicted nor present counts 0, as scikit-learn does); a single sigmoid output is
    scored as the positive class."""
    predicted, true = indicators(outputs, targets, task)
    tp = (predicted & true).sum(axis=0)
    wrong = (predicted ^ true).sum(axis=0)
    denominator = 2 * tp + wrong
    scores = np.divide(2 * tp, denominator, out=np.zeros(len(tp)), where=denominator > 0)
    return float(scores.mean())


def binary_auc(score, positive) -> float:
    """Area under the ROC curve: the probability that a random positive scores above a
    random negative (ties count half), from the average ranks (Mann-Whitney U)."""
    n_pos = int(positive.sum())
    n_neg = len(positive) - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError("roc_auc needs both classes among the validation targets")
    order = np.argsort(score, kind="mergesort")
    sorted_score = score[order]
    ranks = np.empty(len(score))
    starts = np.flatnonzero(np.r_[True, sorted_score[1:] != sorted_score[:-1]])
    ends = np.r_[starts[1:], len(score)]
    for lo, hi in zip(starts, ends):
        ranks[order[lo:hi]] = (lo + hi + 1) / 2  # average of 1-based ranks lo+1..hi
    u = ranks[positive].sum() - n_pos * (n_pos + 1) / 2
    return float(u / (n_pos * n_neg))


def roc_auc(outputs, targets, task) -> float:
    """ROC AUC, macro over classes one-vs-rest (the single column of a binary output as is)."""
    true = targets > 0.5
    columns = range(outputs.shape[1]) if outputs.shape[1] > 1 else [0]
    return float(np.mean([binary_auc(outputs[:, k], true[:, k]) for k in columns]))


def top_k_accuracy(k):
    """The metric "true class among the ``k`` highest outputs"."""

    def metric(outputs, targets, task) -> float:
        best = np.argsort(-outputs, axis=1, kind="stable")[:, :k]
        return float((best == host.class_indices(targets)[:, None]).any(axis=1).mean())

    metric.__name__ = f"top_{k}_accuracy"
    return metric


METRICS = {"accuracy": accuracy, "f1": f1, "roc_auc": roc_auc, "r2": r2}
TOP_K = re.compile(r"top_([1-9][0-9]*)_accuracy")


def make_metrics(specs) -> dict:
    """``{name: metric}`` from names (see the module docstring) and callables."""
    if specs is None:
        return {}
    if isinstance(specs, str) or callable(specs):
        specs = [specs]
    made = {}
    for spec in specs:
        if callable(spec):
            name, metric = getattr(spec, "__name__", repr(spec)), spec
        elif isinstance(spec, str) and spec in METRICS:
            name, metric = spec, METRICS[spec]
        elif isinstance(spec, str) and TOP_K.fullmatch(spec):
            name, metric = spec, top_k_accuracy(int(TOP_K.fullmatch(spec).group(1)))
        else:
            raise ValueError(f"metrics must name {list(METRICS)} or top_<k>_accuracy, or be "
                             f"callables f(outputs, targets, task), got {spec!r}")
        if name in made:
            raise ValueError(f"metrics has two metrics logged as 'val_{name}': give each "
                             f"callable a __name__ of its own")
        made[name] = metric
    return made


#: the tasks each named metric is defined for
TASKS = {"accuracy": ("classification", "binary"), "f1": ("classification", "binary"),
         "roc_auc": ("classification", "binary"), "r2": ("regression",)}


def check_for_task(specs, task: str, n_outputs: int):
    """The named metrics of ``specs`` make sense for a network of ``task`` with
    ``n_outputs`` outputs (callables are the caller's business)."""
    for spec in specs:
        if not isinstance(spec, str):
            continue
        top_k = TOP_K.fullmatch(spec)
        tasks = ("classification",) if top_k else TASKS[spec]
        if task not in tasks:
            raise ValueError(f"metrics: {spec!r} is defined for {' or '.join(tasks)} "
                             f"networks; this one's loss makes it {task}")
        if top_k and int(top_k.group(1)) >= n_outputs:
            raise ValueError(f"metrics: {spec!r} over {n_outputs} classes is always 1; "
                             f"use k < {n_outputs}")
