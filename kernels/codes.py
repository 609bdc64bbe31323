"""Integer codes that name activations and losses inside compiled kernels.

Kernels branch on these codes (an ``int`` is cheap to dispatch on inside Numba code);
``fastbp.activations`` and ``fastbp.losses`` map the public names onto them.
"""

IDENTITY = 0
SIGMOID = 1
TANH = 2
RELU = 3
LEAKY_RELU = 4
ELU = 5
SOFTMAX = 6

MSE = 0
BINARY_CROSS_ENTROPY = 1
CROSS_ENTROPY = 2
HINGE = 3

ACTIVATION_CODES = {
    "identity": IDENTITY,
    "sigmoid": SIGMOID,
    "tanh": TANH,
    "relu": RELU,
    "leaky_relu": LEAKY_RELU,
    "elu": ELU,
    "softmax": SOFTMAX,
}

LOSS_CODES = {
    "mse": MSE,
    "binary_cross_entropy": BINARY_CROSS_ENTROPY,
    "cross_entropy": CROSS_ENTROPY,
    "hinge": HINGE,
}

# Matched (output activation, loss) pairs: dJ/dz_L = (a_L - y) / N exactly.
MATCHED_PAIRS = {(IDENTITY, MSE), (SIGMOID, BINARY_CROSS_ENTROPY), (SOFTMAX, CROSS_ENTROPY)}
