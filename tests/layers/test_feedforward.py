import math

import numpy as np
import pytest

from layer_testing import random_inputs, randomize_weights
from testing import run_serialization_test
from tfllm.layers import FeedForward

X = random_inputs((2, 3, 8))

NUMPY_ACTIVATIONS = {
    "gelu": np.vectorize(lambda v: 0.5 * v * (1.0 + math.erf(v / math.sqrt(2.0)))),
    "gelu_tanh": lambda v: 0.5 * v * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (v + 0.044715 * v**3))),
    "relu": lambda v: np.maximum(v, 0.0),
    "silu": lambda v: v / (1.0 + np.exp(-v)),
}


def _dense(layer, x):
    out = x @ np.asarray(layer.kernel, "float64")
    return out + np.asarray(layer.bias, "float64") if layer.bias is not None else out


def _reference(layer, x):
    act = NUMPY_ACTIVATIONS[layer.activation]
    x = x.astype("float64")
    inner = act(_dense(layer.gate, x)) * _dense(layer.up, x) if layer.gated else act(_dense(layer.up, x))
    return _dense(layer.down, inner)


@pytest.mark.parametrize(
    "activation,gated,use_bias",
    [("gelu", False, True), ("gelu_tanh", False, False), ("relu", False, True), ("silu", True, False), ("gelu_tanh", True, True)],
)
def test_matches_numpy(activation, gated, use_bias):
    layer = FeedForward(8, 12, activation=activation, gated=gated, use_bias=use_bias)
    layer.build(X.shape)
    randomize_weights(layer)
    assert len(layer.weights) == (3 if gated else 2) * (2 if use_bias else 1)
    out = np.asarray(layer(X))
    assert out.shape == X.shape
    np.testing.assert_allclose(out, _reference(layer, X), atol=1e-5)


def test_output_shape():
    assert FeedForward(8, 12).compute_output_shape((2, 3, 8)) == (2, 3, 8)


@pytest.mark.parametrize("gated", [False, True], ids=["plain", "gated"])
def test_serialization(gated):
    layer = FeedForward(8, 12, activation="silu" if gated else "gelu", gated=gated, dropout=0.1)
    layer.build(X.shape)
    randomize_weights(layer)
    run_serialization_test(layer, X)


def test_dropout_only_in_training():
    layer = FeedForward(8, 12, dropout=0.5, initializer_range=0.5)
    inference = np.asarray(layer(X, training=False))
    np.testing.assert_array_equal(np.asarray(layer(X, training=False)), inference)
    np.testing.assert_array_equal(np.asarray(layer(X)), inference)
    assert not np.allclose(np.asarray(layer(X, training=True)), inference, atol=1e-3)


def test_zero_dropout_is_deterministic_in_training():
    layer = FeedForward(8, 12, initializer_range=0.5)
    np.testing.assert_array_equal(np.asarray(layer(X, training=True)), np.asarray(layer(X, training=False)))


@pytest.mark.parametrize("activation", ["gelu_new", "tanh"])
def test_bad_activation_names_the_argument(activation):
    with pytest.raises(ValueError, match=rf"Invalid value for argument `activation`\..*Received: activation='{activation}'"):
        FeedForward(8, 12, activation=activation)


@pytest.mark.parametrize("dropout", [1.0, -0.1, 2])
def test_bad_dropout_names_the_argument(dropout):
    with pytest.raises(ValueError, match=r"Invalid value for argument `dropout`\. Expected a number in \[0\.0, 1\.0\)"):
        FeedForward(8, 12, dropout=dropout)


def test_bad_intermediate_dim_names_the_argument():
    with pytest.raises(ValueError, match=r"`intermediate_dim`.*Received: intermediate_dim=0"):
        FeedForward(8, 0)
