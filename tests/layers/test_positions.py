import numpy as np
import pytest
import torch
from transformers import LlamaConfig
from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding, apply_rotary_pos_emb

from layer_testing import random_inputs
from testing import run_serialization_test
from tfllm.layers import RotaryEmbedding, SinusoidalPositionEncoding

# Row 0 is left-padded (positions repeat 0), row 1 starts mid-sequence as in a decoding step.
POSITIONS = np.array([[0, 0, 0, 1, 2], [7, 8, 9, 10, 11]], np.int64)


@pytest.mark.parametrize("max_wavelength", [10000.0, 100.0])
def test_sinusoidal_matches_numpy(max_wavelength):
    hidden_dim = 8
    layer = SinusoidalPositionEncoding(hidden_dim=hidden_dim, max_wavelength=max_wavelength)
    i = np.arange(hidden_dim // 2)
    angles = POSITIONS[..., None] / max_wavelength ** (2.0 * i / hidden_dim)
    expected = np.concatenate([np.sin(angles), np.cos(angles)], axis=-1)
    out = np.asarray(layer(POSITIONS))
    assert out.shape == (2, 5, 8)
    np.testing.assert_allclose(out, expected, atol=1e-5)


def test_sinusoidal_serialization():
    run_serialization_test(SinusoidalPositionEncoding(hidden_dim=6, max_wavelength=50.0), POSITIONS)


@pytest.mark.parametrize("hidden_dim", [7, 1])
def test_sinusoidal_bad_hidden_dim_names_the_argument(hidden_dim):
    with pytest.raises(ValueError, match=rf"Invalid value for argument `hidden_dim`\..*Received: hidden_dim={hidden_dim}"):
        SinusoidalPositionEncoding(hidden_dim=hidden_dim)


def test_sinusoidal_bad_max_wavelength_names_the_argument():
    with pytest.raises(ValueError, match="`max_wavelength`"):
        SinusoidalPositionEncoding(hidden_dim=8, max_wavelength=0.5)


def _hf_rotary(x, positions, rope_theta, scaling_factor):
    """transformers' Llama rotary embedding of `x`, given and returned as (B, T, heads, head_dim)."""
    batch, _, heads, head_dim = x.shape
    config = LlamaConfig(
        hidden_size=heads * head_dim,
        num_attention_heads=heads,
        rope_theta=rope_theta,
        max_position_embeddings=64,
        rope_scaling=None if scaling_factor == 1.0 else {"rope_type": "linear", "factor": scaling_factor},
    )
    torch_x = torch.from_numpy(x).transpose(1, 2)  # (B, heads, T, head_dim)
    cos, sin = LlamaRotaryEmbedding(config)(torch_x, torch.from_numpy(positions))
    rotated, _ = apply_rotary_pos_emb(torch_x, torch_x, cos, sin)
    return rotated.transpose(1, 2).numpy()


@pytest.mark.parametrize("rope_theta,scaling_factor", [(10000.0, 1.0), (500.0, 1.0), (10000.0, 4.0)])
def test_rotary_matches_transformers_llama(rope_theta, scaling_factor):
    x = random_inputs((2, 5, 3, 8))
    layer = RotaryEmbedding(max_wavelength=rope_theta, scaling_factor=scaling_factor)
    out = np.asarray(layer(x, POSITIONS))
    assert out.shape == x.shape
    np.testing.assert_allclose(out, _hf_rotary(x, POSITIONS, rope_theta, scaling_factor), atol=1e-5)


def test_rotary_scores_depend_only_on_relative_position():
    layer = RotaryEmbedding(max_wavelength=100.0)
    q, k = random_inputs((1, 1, 1, 8), seed=2), random_inputs((1, 1, 1, 8), seed=3)

    def score(query_position, key_position):
        rotated_q = np.asarray(layer(q, np.array([[query_position]])))
        rotated_k = np.asarray(layer(k, np.array([[key_position]])))
        return float(np.sum(rotated_q * rotated_k))

    assert score(5, 2) == pytest.approx(score(13, 10), abs=1e-5)
    assert abs(score(5, 2) - score(5, 4)) > 1e-3


def test_rotary_serialization():
    run_serialization_test(RotaryEmbedding(max_wavelength=500.0, scaling_factor=2.0), random_inputs((2, 5, 3, 8)), POSITIONS)


@pytest.mark.parametrize("kwargs,argument", [({"scaling_factor": 0.0}, "scaling_factor"), ({"max_wavelength": -1.0}, "max_wavelength")])
def test_rotary_bad_arguments_name_the_argument(kwargs, argument):
    with pytest.raises(ValueError, match=f"Invalid value for argument `{argument}`"):
        RotaryEmbedding(**kwargs)
