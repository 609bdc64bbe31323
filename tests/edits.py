"""Hand edits of saved fastbp files, as an attacker with a text editor would make them."""

import json

import numpy as np


def rewrite(path, edit_meta=None, edit_arrays=None):
    """Rewrite a saved .npz model or checkpoint: ``edit_meta(meta)`` on its JSON entry and
    ``edit_arrays(arrays)`` on its arrays, in place, then save them back (not atomically)."""
    with np.load(path) as f:
        arrays = {k: f[k] for k in f.files}
    meta = json.loads(arrays.pop("meta").tobytes())
    if edit_meta:
        edit_meta(meta)
    if edit_arrays:
        edit_arrays(arrays)
    with open(path, "wb") as out:
        np.savez(out, meta=np.frombuffer(json.dumps(meta).encode(), np.uint8), **arrays)
