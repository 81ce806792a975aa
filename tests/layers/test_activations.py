import numpy as np
import pytest
import torch

from tfllm.layers import ACTIVATIONS, get_activation

X = np.concatenate([np.linspace(-6.0, 6.0, 49), np.random.default_rng(0).normal(0.0, 2.0, 32)]).astype("float32")

TORCH_REFERENCES = {
    "gelu": lambda t: torch.nn.functional.gelu(t, approximate="none"),
    "gelu_tanh": lambda t: torch.nn.functional.gelu(t, approximate="tanh"),
    "relu": torch.nn.functional.relu,
    "silu": torch.nn.functional.silu,
}


def test_every_activation_has_a_reference():
    assert set(ACTIVATIONS) == set(TORCH_REFERENCES)


@pytest.mark.parametrize("name", sorted(TORCH_REFERENCES))
def test_activation_matches_torch(name):
    expected = TORCH_REFERENCES[name](torch.from_numpy(X.astype("float64"))).numpy()
    actual = np.asarray(get_activation(name)(X))
    np.testing.assert_allclose(actual, expected, atol=2e-6, rtol=1e-5)


def test_exact_and_tanh_gelu_differ():
    # Guards against both names silently mapping to one approximation.
    exact = np.asarray(get_activation("gelu")(X))
    approximate = np.asarray(get_activation("gelu_tanh")(X))
    assert np.abs(exact - approximate).max() > 1e-4


@pytest.mark.parametrize("name", ["gelu_new", "GELU", "swish", None])
def test_unknown_activation_names_the_argument(name):
    with pytest.raises(ValueError, match=r"Invalid value for argument `activation`\. Expected one of .*'silu'") as info:
        get_activation(name)
    assert f"Received: activation={name!r}" in str(info.value)
