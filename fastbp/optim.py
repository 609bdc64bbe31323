"""Optimizers: one in-place backend call per step over the flat parameter vector ``theta``.

State (velocity, Adam moments) lives on the backend's device, flat like ``theta``.

- sgd: ``theta -= lr * g``
- momentum: ``v = mu v - lr g; theta += v``
- nesterov: ``v = mu v - lr g; theta += mu v - lr g`` (Nesterov's accelerated gradient in the
  form scikit-learn uses: the step looks ahead along the new velocity)
- adam: ``m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
  theta -= lr * m_hat / (sqrt(v_hat) + eps)``, ``m_hat = m / (1-b1^t)``, ``v_hat = v / (1-b2^t)``

Weight decay (:class:`WeightDecay`): ``g`` above is the gradient of the cost with the L2 term,
``g_W = dL/dW + lam W`` for every weight matrix (biases and PReLU slopes are free). A training
step passes the loss's gradient and the decay, and the optimizer adds ``lam W`` in the update:
Adam inside its one sweep over the vectors (a backend may fuse it: the Numba one does, where a
sweep of its own over the weights cost 4.6% of an MNIST-shaped epoch), the others into ``g``
first. The numbers are those of adding ``lam W`` to ``g`` before the update.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

OPTIMIZERS = ("sgd", "momentum", "nesterov", "adam")


@dataclass(frozen=True)
class WeightDecay:
    """The gradient ``lam W`` of the penalty ``(lam/2) sum_l ||W_l||^2``: ``weights`` holds
    the ``(offset, shape)`` of every weight matrix in the flat vectors."""

    lam: float
    weights: tuple

    @classmethod
    def of(cls, param_layout, lam):
        """The decay of the parameters named ``W`` in ``param_layout`` (per layer, ``[(name,
        shape), ...]`` in their order in the flat vector); None when ``lam`` is 0."""
        if not lam:
            return None
        weights, offset = [], 0
        for spec in param_layout:
            for name, shape in spec:
                if name == "W":
                    weights.append((offset, tuple(shape)))
                offset += math.prod(shape)
        return cls(float(lam), tuple(weights))


class SGD:
    """Plain gradient descent."""

    #: names of the flat device state vectors (saved in checkpoints)
    state_arrays = ()
    #: names of the scalar state (saved in checkpoints)
    state_scalars = ()

    def __init__(self, backend, n_params, dtype, lr):
        self.backend, self.lr = backend, lr

    def step(self, params, grads, decay=None):
        """One update: :meth:`advance` the host-side step count, then :meth:`apply`."""
        self.advance()
        self.apply(params, grads, decay)

    def advance(self):
        """Count a step on the host (kept out of :meth:`apply`, which a GPU backend may capture
        in a CUDA graph and replay)."""

    def apply(self, params, grads, decay: WeightDecay | None = None):
        """The update from the loss's gradient ``grads`` and the weight ``decay`` (None: no
        L2 term), which is added into ``grads`` first."""
        if decay is not None:
            self.backend.add_decay(grads, params, decay.lam, decay.weights)
        self.update(params, grads)

    def update(self, params, grads):
        self.backend.sgd_update(params, grads, self.lr)

    def state(self) -> tuple[dict, dict]:
        """``(device arrays, scalars)`` that determine the next steps."""
        return ({name: getattr(self, name) for name in self.state_arrays},
                {name: getattr(self, name) for name in self.state_scalars})

    def load_state(self, arrays: dict, scalars: dict):
        """Restore what :meth:`state` returned (arrays as host data)."""
        for name in self.state_arrays:
            self.backend.copy(self.backend.asarray(arrays[name], getattr(self, name).dtype),
                              getattr(self, name))
        for name in self.state_scalars:
            setattr(self, name, scalars[name])

    def __getstate__(self):
        """Pickled without its backend and with its state vectors on the host; :meth:`bind`
        puts them back on a device."""
        state = {key: value for key, value in self.__dict__.items() if key != "backend"}
        state.update({name: self.backend.to_numpy(getattr(self, name)).copy()
                      for name in self.state_arrays})
        return state

    def bind(self, backend):
        """After unpickling: the state vectors onto ``backend``, which the steps then use."""
        self.backend = backend
        for name in self.state_arrays:
            host = getattr(self, name)
            setattr(self, name, backend.asarray(host, host.dtype))


class Momentum(SGD):
    """Classical (heavy-ball) momentum."""

    state_arrays = ("velocity",)

    def __init__(self, backend, n_params, dtype, lr, momentum=0.9):
        super().__init__(backend, n_params, dtype, lr)
        self.momentum = momentum
        self.velocity = backend.zeros((n_params,), dtype)

    def update(self, params, grads):
        self.backend.momentum_update(params, grads, self.velocity, self.lr, self.momentum)


class Nesterov(Momentum):
    """Nesterov momentum from the existing kernels, no new pass: after the heavy-ball step
    ``theta += v`` (``v = mu v - lr g``), ``theta -= lr g`` and ``theta -= (1 - mu) v`` give
    ``theta += mu v - lr g``."""

    def update(self, params, grads):
        super().update(params, grads)
        self.backend.sgd_update(params, grads, self.lr)
        self.backend.sgd_update(params, self.velocity, 1.0 - self.momentum)


class Adam(SGD):
    """Adam with bias-corrected moments."""

    state_arrays = ("m", "v")
    state_scalars = ("t",)

    def __init__(self, backend, n_params, dtype, lr, beta1=0.9, beta2=0.999, eps=1e-8):
        super().__init__(backend, n_params, dtype, lr)
        self.beta1, self.beta2, self.eps = beta1, beta2, eps
        self.m = backend.zeros((n_params,), dtype)
        self.v = backend.zeros((n_params,), dtype)
        self.t = 0

    def advance(self):
        self.t += 1

    def apply(self, params, grads, decay: WeightDecay | None = None):
        if decay is None:
            self.backend.adam_update(params, grads, self.m, self.v, self.lr, self.beta1,
                                     self.beta2, self.eps, self.t)
        else:
            self.backend.decayed_adam_update(params, grads, self.m, self.v, self.lr,
                                             self.beta1, self.beta2, self.eps, self.t,
                                             decay.lam, decay.weights)


def make_optimizer(name, backend, n_params, dtype, lr, momentum, beta1=0.9, beta2=0.999,
                   epsilon=1e-8):
    """The optimizer ``name`` (one of :data:`OPTIMIZERS`) with its state on ``backend``."""
    if name == "sgd":
        return SGD(backend, n_params, dtype, lr)
    if name == "momentum":
        return Momentum(backend, n_params, dtype, lr, momentum)
    if name == "nesterov":
        return Nesterov(backend, n_params, dtype, lr, momentum)
    if name == "adam":
        return Adam(backend, n_params, dtype, lr, beta1, beta2, epsilon)
    raise ValueError(f"optimizer must be one of {list(OPTIMIZERS)}, got {name!r}")
