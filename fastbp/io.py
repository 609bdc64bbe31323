"""Save and load models: one .npz of arrays plus a JSON config, never pickle.

The arrays are each layer's parameters by name and 1-based layer index (``W_1``, ``b_1``,
``alpha_2`` for a PReLU layer, ...; see :meth:`fastbp.MLP.get_weights`) and the fitted
preprocessor's arrays (:func:`fastbp.preprocess.to_arrays`). The file is written atomically
(:func:`fastbp.files.atomic_savez`), so a crash never leaves a half-written model.

A model file is validated before anything is allocated for it, whatever its format:
:func:`validate_model` checks the config against the stored arrays' shapes (read from the
file's headers alone), :func:`check_values` the arrays' values once read, and only then does
:func:`build` make the network. Any mismatch is a :class:`~fastbp.files.FileFormatError`
naming the file and the entry.

A path ending in ``.safetensors`` is written and read by :mod:`fastbp.safetensors_io`
instead (the same arrays and config; any other suffix is an .npz).

Version 2 added PReLU / maxout layers and whitening (config keys ``maxout_pieces``,
``prelu_init``, ``preprocess``); version 1 files load unchanged.
"""

from __future__ import annotations

import inspect
import numbers

import numpy as np

from . import preprocess, safetensors_io
from .backend import resolve
from .files import FileFormatError, atomic_savez, read_savez

FORMAT = "fastbp-mlp"
VERSION = 2
#: config keys that are not constructor arguments of :class:`~fastbp.MLP`
EXTRA_CONFIG_KEYS = ("classes",)
#: the arrays of each kind of fitted preprocessor, and their shapes for ``d`` features
PREPROCESSOR_SHAPES = {
    "standardize": {"standardizer_mean": lambda d: (d,), "standardizer_std": lambda d: (d,)},
    "whiten": {"whitener_mean": lambda d: (d,), "whitener_matrix": lambda d: (d, d),
               "whitener_method": lambda d: ()},
}


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
    resolve(backend)  # a bad backend is the caller's mistake, not the file's
    meta, arrays = read(path)
    return build(meta["config"], arrays, backend, path)


def read(path):
    """``(meta, arrays)`` from a fastbp model file, validated (:func:`validate_model`,
    :func:`check_values`); a :class:`~fastbp.files.FileFormatError` for anything else."""

    def validate(meta, shapes):
        check_meta(meta, path)
        validate_model(meta["config"], shapes, path)

    reader = safetensors_io.read if safetensors_io.is_safetensors(path) else read_savez
    meta, arrays = reader(path, "fastbp model file", validate)
    check_values(meta["config"], arrays, path)
    return meta, arrays


def check_meta(meta, source):
    """The file's ``format`` and ``version`` entries."""
    if meta.get("format") != FORMAT:
        raise FileFormatError(f"{source!r} is not a fastbp model file (format "
                              f"{meta.get('format')!r})")
    version = meta.get("version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise FileFormatError(f"{source!r}: format version must be a positive integer, got "
                              f"{version!r}")
    if version > VERSION:
        raise FileFormatError(f"{source!r} was written by a newer fastbp (format version "
                              f"{version} > {VERSION}); upgrade fastbp to read it")
    if not isinstance(meta.get("config"), dict):
        raise FileFormatError(f"{source!r}: 'config' must be a JSON object, got "
                              f"{meta.get('config')!r}")


def validate_model(config: dict, shapes: dict, source="model file"):
    """Check a model ``config`` against ``shapes`` (array name -> shape tuple) before anything
    is allocated: known keys only, layer sizes, activations and maxout pieces that give
    exactly the stored parameter shapes, and the arrays of one preprocessor matching
    ``sizes[0]`` features. Format-independent: every model file format calls it."""
    unknown = sorted(set(config) - config_keys())
    if unknown:
        raise FileFormatError(f"{source!r}: unknown config key(s) {unknown}")
    if "sizes" not in config:
        raise FileFormatError(f"{source!r}: the config has no 'sizes'")
    expected = dict(parameter_shapes(config, source))
    expected.update(preprocessor_shapes(config["sizes"][0], shapes, source))
    missing = sorted(set(expected) - set(shapes))
    extra = sorted(set(shapes) - set(expected))
    if missing or extra:
        raise FileFormatError(f"{source!r}: arrays do not match the config's architecture "
                              f"{config['sizes']}: missing {missing}, unexpected {extra}")
    for name, shape in expected.items():
        if tuple(shapes[name]) != shape:
            raise FileFormatError(f"{source!r}: array {name!r} has shape {tuple(shapes[name])},"
                                  f" the config's architecture needs {shape}")
    check_classes(config.get("classes"), source)


def config_keys() -> set:
    """The keys a model config may hold: :class:`~fastbp.MLP`'s constructor arguments (all of
    them, so new ones are covered) and :data:`EXTRA_CONFIG_KEYS`."""
    from .model import MLP

    return set(inspect.signature(MLP.__init__).parameters) - {"self", "backend"} \
        | set(EXTRA_CONFIG_KEYS)


def parameter_shapes(config, source):
    """``(name, shape)`` of every layer parameter a config implies (the layout of
    :attr:`fastbp.MLP.param_layout`: ``W_l (n_{l-1}, n_z)``, ``b_l (n_z,)``, ``alpha_l (n_l,)``
    for PReLU; ``n_z = pieces * n_l`` for maxout, else ``n_l``)."""
    sizes = config["sizes"]
    if not (isinstance(sizes, list) and len(sizes) >= 2 and all(
            isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in sizes)):
        raise FileFormatError(f"{source!r}: 'sizes' must be a list of at least two positive "
                              f"integers, got {sizes!r}")
    activation = config.get("activation", "relu")
    hidden = [activation] * (len(sizes) - 2) if isinstance(activation, str) else activation
    if not isinstance(hidden, list) or len(hidden) != len(sizes) - 2:
        raise FileFormatError(f"{source!r}: 'activation' must be a name or a list of one name "
                              f"per hidden layer ({len(sizes) - 2}), got {activation!r}")
    pieces = config.get("maxout_pieces", 2)
    if isinstance(pieces, bool) or not isinstance(pieces, int) or pieces < 2:
        raise FileFormatError(f"{source!r}: 'maxout_pieces' must be an integer >= 2, got "
                              f"{pieces!r}")
    for l, (kind, n_in, n_out) in enumerate(zip(hidden + [None], sizes[:-1], sizes[1:]), 1):
        n_z = pieces * n_out if kind == "maxout" else n_out
        yield f"W_{l}", (n_in, n_z)
        yield f"b_{l}", (n_z,)
        if kind == "prelu":
            yield f"alpha_{l}", (n_out,)


def preprocessor_shapes(n_features, shapes, source) -> dict:
    """The shapes of the stored preprocessor's arrays (at most one kind) for ``n_features``."""
    kinds = [kind for kind, arrays in PREPROCESSOR_SHAPES.items()
             if any(name in shapes for name in arrays)]
    if len(kinds) > 1:
        raise FileFormatError(f"{source!r}: holds the arrays of two preprocessors")
    if not kinds:
        return {}
    return {name: shape(n_features) for name, shape in PREPROCESSOR_SHAPES[kinds[0]].items()}


def check_classes(classes, source):
    """The optional ``classes`` entry: a list of distinct labels (strings or numbers)."""
    if classes is None:
        return
    ok = isinstance(classes, list) and classes and all(
        isinstance(c, (str, numbers.Real)) and not isinstance(c, bool) for c in classes)
    if not ok or len(set(classes)) != len(classes):
        raise FileFormatError(f"{source!r}: 'classes' must be a list of distinct labels "
                              f"(strings or numbers), got {classes!r}")


def check_values(config, arrays, source="model file"):
    """The stored arrays' values: finite parameters and preprocessor arrays, a standardiser
    with ``std > 0``, a known whitening method."""
    for name, array in arrays.items():
        if name == "whitener_method":
            if str(array) not in preprocess.WHITENING:
                raise FileFormatError(f"{source!r}: whitener_method must be one of "
                                      f"{list(preprocess.WHITENING)}, got {str(array)!r}")
            continue
        if array.dtype.kind not in "fiu":
            raise FileFormatError(f"{source!r}: array {name!r} must be numeric, got dtype "
                                  f"{array.dtype}")
        if not np.isfinite(array).all():
            raise FileFormatError(f"{source!r}: array {name!r} holds NaN or inf")
        dtype = config.get("dtype")
        limit = np.finfo(dtype).max if dtype in ("float32", "float64") else np.inf
        if array.dtype.kind == "f" and array.size and np.abs(array).max() > limit:
            raise FileFormatError(f"{source!r}: array {name!r} holds values beyond the "
                                  f"model's {config.get('dtype')} range")
    std = arrays.get("standardizer_std")
    if std is not None and not (std > 0).all():
        raise FileFormatError(f"{source!r}: standardizer_std must be positive, got "
                              f"{float(std.min())}")


def build(config, arrays, backend, source="model file"):
    """The :class:`~fastbp.MLP` of a validated config and its arrays, on ``backend``."""
    from .model import MLP

    arguments = set(inspect.signature(MLP.__init__).parameters)
    try:
        net = MLP(**{k: v for k, v in config.items() if k in arguments}, backend=backend)
    except (TypeError, ValueError) as exc:
        raise FileFormatError(f"{source!r}: bad model config: {exc}") from None
    net.set_weights([tuple(arrays[f"{name}_{l}"] for name, _ in spec)
                     for l, spec in enumerate(net.param_layout, start=1)])
    net.preprocessor = preprocess.from_arrays(arrays)
    net.auto_decided = True  # a saved model's preprocess="auto" chose what the file holds
    return net
