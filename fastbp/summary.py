"""``MLP.summary()``: the network as a table a reader checks at a glance.

One row per layer: its kind (affine map + activation, PReLU, maxout), output shape
``(N, n_l)`` and parameter count (``n_{l-1} n_z + n_z``, plus ``n_l`` PReLU slopes), then the
preprocessing, loss, backend, dtype and the total.
"""

from __future__ import annotations

import math


def summary(net) -> str:
    """The table of :func:`rows` under a header, with the model-wide facts below it."""
    table = [("layer", "kind", "output shape", "params")] + rows(net)
    widths = [max(len(row[i]) for row in table) for i in range(4)]
    line = "  ".join("-" * w for w in widths)
    text = [format_row(table[0], widths), line] + [format_row(r, widths) for r in table[1:]]
    text += [line, f"input: {net.sizes[0]} features; preprocessing: {preprocessing(net)}",
             f"loss: {net.loss_fn.name} ({net.task}); backend: {net.backend.name}; "
             f"dtype: {net.dtype}",
             f"total parameters: {net.n_params:,}"]
    return "\n".join(text)


def preprocessing(net) -> str:
    """``standardize (fitted)``, ``auto: none chosen``, ``zca (fitted at the first fit)``..."""
    name = net.config["preprocess"]
    if name is None:
        return "none"
    if net.preprocessor is not None:
        kind = type(net.preprocessor).__name__.lower()
        return f"{name}: {kind} (fitted)" if name == "auto" else f"{name} (fitted)"
    if name == "auto" and net.auto_decided:
        return "auto: none chosen (the features are well scaled)"
    return f"{name} (fitted at the first fit)"


def rows(net) -> list[tuple[str, str, str, str]]:
    """``(index, kind, output shape, parameter count)`` per layer."""
    out = []
    for l, (layer, spec) in enumerate(zip(net.layers, net.param_layout), start=1):
        kind = layer.name
        if kind == "maxout":
            kind = f"maxout ({layer.pieces} pieces)"
        role = "output" if l == len(net.layers) else "hidden"
        params = sum(math.prod(shape) for _, shape in spec)
        out.append((str(l), f"{role} {kind}", f"(N, {layer.n_out})", f"{params:,}"))
    return out


def format_row(row, widths) -> str:
    return "  ".join(cell.ljust(w) if i < 2 else cell.rjust(w)
                     for i, (cell, w) in enumerate(zip(row, widths)))
