import numpy as np
import pytest
import torch
from transformers import T5Config
from transformers.models.t5.modeling_t5 import T5Attention

from testing import run_serialization_test
from tfllm.layers import RelativePositionBias, relative_position_bucket

# (num_buckets, max_distance): T5's defaults, a small table, an odd count and a long reach.
SETTINGS = [(32, 128), (8, 20), (33, 64), (16, 1000)]


@pytest.mark.parametrize("bidirectional", [True, False], ids=["encoder", "decoder"])
@pytest.mark.parametrize("num_buckets,max_distance", SETTINGS)
def test_buckets_match_transformers(num_buckets, max_distance, bidirectional):
    relative = np.arange(-1500, 1500)
    expected = T5Attention._relative_position_bucket(
        torch.tensor(relative), bidirectional=bidirectional, num_buckets=num_buckets, max_distance=max_distance
    ).numpy()
    ours = np.asarray(relative_position_bucket(relative, bidirectional, num_buckets, max_distance))
    np.testing.assert_array_equal(ours, expected)
    assert ours.min() == 0 and ours.max() == expected.max()


def _hf_attention(num_heads, num_buckets, max_distance, is_decoder, table):
    config = T5Config(num_heads=num_heads, d_model=8, d_kv=4, relative_attention_num_buckets=num_buckets,
                      relative_attention_max_distance=max_distance, is_decoder=is_decoder)
    attention = T5Attention(config, has_relative_attention_bias=True, layer_idx=0)
    with torch.no_grad():
        attention.relative_attention_bias.weight.copy_(torch.from_numpy(table))
    return attention


@pytest.mark.parametrize("bidirectional", [True, False], ids=["encoder", "decoder"])
def test_bias_matches_transformers_compute_bias(bidirectional):
    layer = RelativePositionBias(num_heads=3, num_buckets=8, max_distance=20, bidirectional=bidirectional)
    layer.build()
    table = np.random.default_rng(0).normal(size=(8, 3)).astype("float32")
    layer.embeddings.assign(table)
    reference = _hf_attention(3, 8, 20, not bidirectional, table)
    with torch.no_grad():
        expected = reference.compute_bias(6, 30).numpy()  # (1, heads, 6, 30)
        # A decoding step: one query at cache position 17 against a 30-slot cache.
        step = reference.compute_bias(18, 30, cache_position=torch.tensor([17])).numpy()
    ours = np.asarray(layer(np.arange(6), np.arange(30)))
    assert ours.shape == (1, 3, 6, 30)
    np.testing.assert_allclose(ours, expected, atol=1e-7)
    np.testing.assert_allclose(np.asarray(layer(np.array([17]), np.arange(30))), step, atol=1e-7)


def test_bias_depends_only_on_distance():
    layer = RelativePositionBias(num_heads=2, num_buckets=8, max_distance=20)
    full = np.asarray(layer(np.arange(10), np.arange(10)))
    shifted = np.asarray(layer(np.arange(3, 13), np.arange(3, 13)))
    np.testing.assert_array_equal(full, shifted)


def test_serialization():
    layer = RelativePositionBias(num_heads=3, num_buckets=8, max_distance=20, bidirectional=False,
                                 initializer_range=0.5)
    run_serialization_test(layer, np.arange(4), np.arange(6))


@pytest.mark.parametrize(
    "kwargs,argument",
    [
        ({"num_heads": 0}, "num_heads"),
        ({"num_buckets": 2}, "num_buckets"),
        ({"max_distance": 8}, "max_distance"),
        ({"max_distance": 1, "num_buckets": 4, "bidirectional": False}, "max_distance"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs, argument):
    with pytest.raises(ValueError, match=f"Invalid value for argument `{argument}`"):
        RelativePositionBias(**{"num_heads": 2, "num_buckets": 32, "max_distance": 128, **kwargs})
