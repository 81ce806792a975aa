"""Activation functions used by feed-forward layers, by the names checkpoints use.

Exact GELU is written with `erf` rather than Keras' built-in, which lowers to `Erfc` and does not
convert to ONNX (ENVIRONMENT.md, trap 5).
"""

import math

from keras import ops

from tfllm.errors import check_choice


def gelu_exact(x):
    """GELU with the Gaussian CDF: `0.5 * x * (1 + erf(x / sqrt(2)))`."""
    return 0.5 * x * (1.0 + ops.erf(x / math.sqrt(2.0)))


def gelu_tanh(x):
    """GELU with the tanh approximation (GPT-2's `gelu_new`)."""
    return 0.5 * x * (1.0 + ops.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * ops.power(x, 3))))


def relu(x):
    return ops.relu(x)


def silu(x):
    return x * ops.sigmoid(x)


ACTIVATIONS = {"gelu": gelu_exact, "gelu_tanh": gelu_tanh, "relu": relu, "silu": silu}


def get_activation(name):
    """Returns the activation function called `name` (one of `ACTIVATIONS`)."""
    check_choice("activation", name, tuple(ACTIVATIONS))
    return ACTIVATIONS[name]
