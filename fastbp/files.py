"""Atomic file writes: a temporary file beside the target, then one rename over it.

A crash (or SIGKILL) at any moment leaves either the old file or the new one, never half.
"""

from __future__ import annotations

import io
import json
import os
import tempfile

import numpy as np


def atomic_savez(path, arrays: dict, meta: dict):
    """Write ``arrays`` plus ``meta`` (as JSON in a uint8 array named ``meta``) to ``path``."""
    payload = dict(arrays, meta=np.frombuffer(json.dumps(meta).encode("utf-8"), np.uint8))
    buffer = io.BytesIO()
    np.savez(buffer, **payload)
    atomic_write_bytes(path, buffer.getbuffer())


def current_umask() -> int:
    """The process umask (mkstemp creates files 0600; a saved file should look like any other)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def read_savez(path, what: str):
    """``(meta, arrays)`` from a file written by :func:`atomic_savez`; a clear ValueError
    naming ``what`` was expected when the file is corrupt or foreign."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no {what} at {path!r}")
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
        meta = json.loads(arrays.pop("meta").tobytes().decode("utf-8"))
    except Exception as exc:
        raise ValueError(f"{path!r} is not a {what} (corrupt or foreign): "
                         f"{type(exc).__name__}: {exc}") from None
    if not isinstance(meta, dict):
        raise ValueError(f"{path!r} is not a {what}")
    return meta, arrays


def atomic_write_bytes(path, data):
    """Write the bytes ``data`` to ``path`` atomically (model files, exported ONNX graphs)."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".fastbp-", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~current_umask())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
