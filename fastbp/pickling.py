"""A model as host data, for :mod:`pickle`, :func:`copy.deepcopy` and :mod:`joblib`.

An :class:`~fastbp.MLP` holds device arrays, views of them bound into its layers, a lock and
buffers kept between fits, none of which pickle as themselves. :meth:`MLP.__reduce__` pickles
what determines the model instead: its config, the name of its backend, the flat parameter
vector ``theta`` on the host, the fitted preprocessor, whether ``preprocess="auto"`` has
chosen, the random generator, and the optimizer state a continued fit picks up (with its
moments on the host). Unpickling builds the model anew from these, on the same backend where
it is usable and otherwise on ``backend="auto"`` with a warning (a model pickled on a GPU
opens on a laptop); a continued fit or ``partial_fit`` of the copy then goes on exactly as the
original's would.
"""

from __future__ import annotations

import warnings

from .backend import backend_names, probe


def model_state(net) -> dict:
    """What :func:`restore_model` needs to rebuild ``net``, all of it host data."""
    return {"config": net.config, "backend": net.backend.name,
            "theta": net.get_flat_params(), "preprocessor": net.preprocessor,
            "auto_decided": net.auto_decided, "rng": net.rng,
            "training_state": net.training_state}


def restore_model(state: dict):
    """The :class:`~fastbp.MLP` that :func:`model_state` described."""
    from .model import MLP

    net = MLP(**state["config"], backend=usable_backend(state["backend"]))
    net.set_flat_params(state["theta"])
    net.preprocessor = state["preprocessor"]
    net.auto_decided = state["auto_decided"]
    net.rng = state["rng"]
    training = state["training_state"]
    if training is not None:
        training.bind(net.backend)
    net.training_state = training
    return net


def usable_backend(name: str) -> str:
    """``name`` where that backend works in this process, else "auto" (with a warning)."""
    usable, reason = probe(name) if name in backend_names() else (False, "not registered")
    if usable:
        return name
    warnings.warn(f"the model was pickled on backend {name!r}, which is not usable here "
                  f"({reason}); it opens on backend='auto'", RuntimeWarning, stacklevel=3)
    return "auto"
