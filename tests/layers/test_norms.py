import numpy as np
import pytest
import torch

from layer_testing import random_inputs, randomize_weights
from testing import run_serialization_test
from tfllm.layers import LayerNorm, RMSNorm

X = random_inputs((2, 3, 8)) * 3.0 + 1.0


@pytest.mark.parametrize("epsilon", [1e-5, 0.5])
@pytest.mark.parametrize("use_bias", [True, False])
def test_layer_norm_matches_torch(epsilon, use_bias):
    layer = LayerNorm(epsilon=epsilon, use_bias=use_bias)
    layer.build(X.shape)
    randomize_weights(layer)
    assert len(layer.weights) == (2 if use_bias else 1)
    bias = torch.from_numpy(np.asarray(layer.beta)) if use_bias else None
    expected = torch.nn.functional.layer_norm(
        torch.from_numpy(X), (8,), torch.from_numpy(np.asarray(layer.gamma)), bias, eps=epsilon
    ).numpy()
    np.testing.assert_allclose(np.asarray(layer(X)), expected, atol=1e-5)


@pytest.mark.parametrize("epsilon", [1e-6, 0.5])
def test_rms_norm_matches_numpy(epsilon):
    layer = RMSNorm(epsilon=epsilon)
    layer.build(X.shape)
    randomize_weights(layer)
    x = X.astype("float64")
    expected = x / np.sqrt(np.mean(x**2, axis=-1, keepdims=True) + epsilon) * np.asarray(layer.scale, "float64")
    np.testing.assert_allclose(np.asarray(layer(X)), expected, atol=1e-5)


@pytest.mark.parametrize("layer_class", [LayerNorm, RMSNorm])
def test_norm_computes_in_float32_under_mixed_precision(layer_class):
    reference = layer_class()
    mixed = layer_class(dtype="mixed_float16")
    for layer in (reference, mixed):
        layer.build(X.shape)
        randomize_weights(layer)
    out = mixed(X)
    assert out.dtype == "float16"
    assert mixed.weights[0].dtype == "float32"
    np.testing.assert_allclose(np.asarray(out, "float32"), np.asarray(reference(X)), atol=1e-2)


@pytest.mark.parametrize(
    "layer",
    [LayerNorm(epsilon=1e-3), LayerNorm(use_bias=False), RMSNorm(epsilon=1e-5)],
    ids=["layer_norm", "layer_norm_no_bias", "rms_norm"],
)
def test_serialization(layer):
    layer.build(X.shape)
    randomize_weights(layer)  # default ones/zeros would survive a load that restored nothing
    run_serialization_test(layer, X)


@pytest.mark.parametrize("layer_class", [LayerNorm, RMSNorm])
@pytest.mark.parametrize("epsilon", [-1e-6, "small", float("nan")])
def test_bad_epsilon_names_the_argument(layer_class, epsilon):
    with pytest.raises(ValueError, match=r"Invalid value for argument `epsilon`\. Expected a number in \[0\.0, inf\]"):
        layer_class(epsilon=epsilon)
