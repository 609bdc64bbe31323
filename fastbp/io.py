"""Save and load models: one .npz of arrays plus a JSON config, never pickle.

The arrays are each layer's parameters by name and 1-based layer index (``W_1``, ``b_1``,
``alpha_2`` for a PReLU layer, ...; see :meth:`fastbp.MLP.get_weights`) and the fitted
preprocessor's arrays (:func:`fastbp.preprocess.to_arrays`). The file is written atomically
(:func:`fastbp.files.atomic_savez`), so a crash never leaves a half-written model.

A path ending in ``.safetensors`` is written and read by :mod:`fastbp.safetensors_io`
instead (the same arrays and config; any other suffix is an .npz).

Version 2 added PReLU / maxout layers and whitening (config keys ``maxout_pieces``,
``prelu_init``, ``preprocess``); version 1 files load unchanged.
"""

from __future__ import annotations

from . import preprocess, safetensors_io
from .files import atomic_savez, read_savez

FORMAT = "fastbp-mlp"
VERSION = 2


def save(net, path):
    """Write ``net``'s config, parameters and preprocessor to ``path`` atomically."""
    arrays = {}
    for l, (params, spec) in enumerate(zip(net.get_weights(), net.param_layout), start=1):
        arrays.update({f"{name}_{l}": array for array, (name, _) in zip(params, spec)})
    if net.preprocessor is not None:
        arrays.update(preprocess.to_arrays(net.preprocessor))
    writer = safetensors_io.write if safetensors_io.is_safetensors(path) else atomic_savez
    writer(path, arrays, {"format": FORMAT, "version": VERSION, "config": net.config})


def load(path, backend="auto"):
    """The :class:`~fastbp.MLP` saved at ``path``, on ``backend``."""
    from .model import MLP

    meta, arrays = read(path)
    net = MLP(**meta["config"], backend=backend)
    try:
        net.set_weights([tuple(arrays[f"{name}_{l}"] for name, _ in spec)
                         for l, spec in enumerate(net.param_layout, start=1)])
    except (KeyError, ValueError) as exc:
        raise ValueError(f"{path}: weights do not match the saved architecture: {exc}") from None
    net.preprocessor = preprocess.from_arrays(arrays)
    return net


def read(path):
    """``(meta, arrays)`` from a fastbp model file; a clear ValueError for anything else."""
    reader = safetensors_io.read if safetensors_io.is_safetensors(path) else read_savez
    meta, arrays = reader(path, "fastbp model file")
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path!r} is not a fastbp model file (format {meta.get('format')!r})")
    if meta.get("version", 0) > VERSION:
        raise ValueError(f"{path!r} was written by a newer fastbp (format version "
                         f"{meta['version']} > {VERSION}); upgrade fastbp to read it")
    return meta, arrays
