"""Model files in the safetensors format: raw little-endian tensors plus a JSON header, no
pickle, readable by ``safetensors.numpy.load_file`` (and by PyTorch, JAX, ... loaders).

The same ``(arrays, meta)`` as a fastbp ``.npz`` (:mod:`fastbp.io` picks the format from the
suffix): every array is a tensor under its own name (``W_1``, ``b_1``, ``standardizer_mean``,
...) and ``meta`` (format, version, config) is JSON under the metadata key ``fastbp``.
safetensors holds numbers only, so a text array (a whitener's method name) travels in the
metadata key ``fastbp_text``. Writes are atomic (:func:`fastbp.files.atomic_write_bytes`).
"""

from __future__ import annotations

import json
import os
from contextlib import contextmanager

import numpy as np

from .files import atomic_write_bytes

SUFFIX = ".safetensors"
META_KEY = "fastbp"
TEXT_KEY = "fastbp_text"


def is_safetensors(path) -> bool:
    """Whether ``path`` names a safetensors file (by its suffix)."""
    return os.fspath(path).lower().endswith(SUFFIX)


def import_safetensors():
    try:
        import safetensors.numpy
    except ImportError:
        raise ImportError("safetensors model files need the safetensors package: "
                          "pip install 'fastbp[safetensors]'") from None
    return safetensors


def write(path, arrays: dict, meta: dict):
    """Write ``arrays`` and ``meta`` to ``path`` atomically (the signature of
    :func:`fastbp.files.atomic_savez`)."""
    safetensors = import_safetensors()
    text = {name: str(a) for name, a in arrays.items() if np.asarray(a).dtype.kind == "U"}
    tensors = {name: np.ascontiguousarray(a) for name, a in arrays.items() if name not in text}
    header = {META_KEY: json.dumps(meta), TEXT_KEY: json.dumps(text)}
    atomic_write_bytes(path, safetensors.numpy.save(tensors, metadata=header))


def read(path, what: str, validate=None):
    """``(meta, arrays)`` from a file written by :func:`write` (the signature of
    :func:`fastbp.files.read_savez`): ``validate(meta, shapes)`` runs on the header alone,
    before any tensor is read; every problem of the file is a ValueError naming ``path`` and
    ``what``."""
    safetensors = import_safetensors()
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no {what} at {path!r}")
    with reading(path, what):
        f = safetensors.safe_open(path, framework="numpy")
    with f:
        with reading(path, what):
            meta, text = header_json(f.metadata() or {})
            shapes = {name: tuple(f.get_slice(name).get_shape()) for name in f.keys()}
        if validate is not None:
            validate(meta, dict(shapes, **{name: () for name in text}))
        with reading(path, what):
            arrays = {name: f.get_tensor(name) for name in f.keys()}
    arrays.update({name: np.array(value) for name, value in text.items()})
    return meta, arrays


@contextmanager
def reading(path, what):
    """Any failure of the block as one ValueError naming ``path`` and ``what`` it should be."""
    try:
        yield
    except Exception as exc:  # safetensors_rust.SafetensorError, OSError, our ValueErrors
        raise ValueError(f"{path!r} is not a {what} (corrupt or foreign): {exc}") from None


def header_json(metadata: dict):
    """``(meta, text arrays)`` from a file's metadata strings."""
    try:
        meta = json.loads(metadata[META_KEY])
        text = json.loads(metadata.get(TEXT_KEY, "{}"))
    except (KeyError, json.JSONDecodeError) as exc:
        raise ValueError(f"no fastbp metadata ({type(exc).__name__}: {exc})") from None
    if not isinstance(meta, dict) or not isinstance(text, dict):
        raise ValueError("its fastbp metadata is not a JSON object")
    return meta, text
