"""Save and load models: one .npz of arrays plus a JSON config, never pickle.

The file is written to a temporary name beside the target and renamed over it, so a crash
never leaves a half-written model.
"""

from __future__ import annotations

import json
import os
import tempfile

import numpy as np

FORMAT = "fastbp-mlp"
VERSION = 1


def save(net, path):
    """Write ``net``'s config, weights and standardiser to ``path`` atomically."""
    path = os.fspath(path)
    arrays = {}
    for l, (W, b) in enumerate(net.get_weights(), start=1):
        arrays[f"W_{l}"], arrays[f"b_{l}"] = W, b
    if net.standardizer is not None:
        arrays["standardizer_mean"] = net.standardizer.mean
        arrays["standardizer_std"] = net.standardizer.std
    meta = {"format": FORMAT, "version": VERSION, "config": net.config}
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8)
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".fastbp-", suffix=".npz", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def load(path, backend="auto"):
    """The :class:`~fastbp.MLP` saved at ``path``, on ``backend``."""
    from .data import Standardizer
    from .model import MLP

    meta, arrays = read(path)
    config = meta["config"]
    net = MLP(**config, backend=backend)
    n_layers = len(config["sizes"]) - 1
    try:
        net.set_weights([(arrays[f"W_{l}"], arrays[f"b_{l}"]) for l in range(1, n_layers + 1)])
    except (KeyError, ValueError) as exc:
        raise ValueError(f"{path}: weights do not match the saved architectures: {exc}") from None
    if "standardizer_mean" in arrays:
        net.standardizer = Standardizer(arrays["standardizer_mean"], arrays["standardizer_std"])
    return net


def read(path):
    """``(meta, arrays)`` from a fastbp file; a clear ValueError for anything else."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no model file at {path!r}")
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
        meta = json.loads(arrays.pop("meta").tobytes().decode("utf-8"))
    except Exception as exc:
        raise ValueError(f"{path!r} is not a fastbp model file (corrupt or foreign): "
                         f"{type(exc).__name__}: {exc}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError(f"{path!r} is not a fastbp model file (format {meta.get('format')!r})"
                         if isinstance(meta, dict) else f"{path!r} is not a fastbp model file")
    if meta.get("version", 0) > VERSION:
        raise ValueError(f"{path!r} was written by a newer fastbp (format version "
                         f"{meta['version']} > {VERSION}); upgrade fastbp to read it")
    return meta, arrays
