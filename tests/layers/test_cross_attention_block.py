"""T5's decoder block: cross-attention, an additive attention bias and unscaled scores, on `TransformerBlock`."""

import numpy as np
import pytest

from layer_testing import random_inputs, randomize_weights
from testing import run_serialization_test
from tfllm.layers import RelativePositionBias, attention_mask
from tfllm.models.t5.block import T5Block, T5DecoderBlock

X = random_inputs((2, 5, 8))
CONTEXT = random_inputs((2, 4, 8), seed=2)
# Row 1's context has one padded position.
CONTEXT_MASK = np.array([[1, 1, 1, 1], [1, 1, 1, 0]], bool)[:, None, :]
CAUSAL = attention_mask(np.ones((2, 5), np.int32), 5)
T5_LIKE = dict(activation="gelu_tanh", gated_ffn=True, head_dim=4)


def _block(seed=0, **kwargs):
    block = T5DecoderBlock(num_heads=3, hidden_dim=8, intermediate_dim=16, **kwargs)
    block.build(X.shape)
    return randomize_weights(block, seed=seed)


def _bias(length, key_length, offset=0):
    layer = RelativePositionBias(num_heads=3, num_buckets=8, max_distance=20, bidirectional=False,
                                 initializer_range=1.0)
    return layer(np.arange(length) + offset, np.arange(key_length)), layer


def test_residual_wiring():
    block = _block(**T5_LIKE)
    bias, _ = _bias(5, 5)
    assert block.cross_attention.cross_attention and block.cross_attention.scale == 1.0
    assert block.attention.scale == 1.0 and block.attention.head_dim == 4

    def self_attend(x):
        return block.attention(x, attention_mask=CAUSAL, attention_bias=bias)

    def cross_attend(x):
        return block.cross_attention(x, attention_mask=CONTEXT_MASK, context=CONTEXT)

    h = X + self_attend(block.attention_norm(X))
    h = h + cross_attend(block.cross_attention_norm(h))
    expected = h + block.ffn(block.ffn_norm(h))
    out = block(X, attention_mask=CAUSAL, attention_bias=bias, context=CONTEXT, context_mask=CONTEXT_MASK)
    np.testing.assert_allclose(np.asarray(out), np.asarray(expected), atol=1e-5)


def test_masked_context_positions_are_ignored():
    block = _block(**T5_LIKE)
    out = block(X, attention_mask=CAUSAL, context=CONTEXT, context_mask=CONTEXT_MASK)
    changed = CONTEXT.copy()
    changed[1, 3] += 10.0
    np.testing.assert_allclose(
        np.asarray(block(X, attention_mask=CAUSAL, context=changed, context_mask=CONTEXT_MASK)), np.asarray(out),
        atol=1e-6,
    )
    assert not np.allclose(np.asarray(block(X, attention_mask=CAUSAL, context=changed)), np.asarray(out), atol=1e-3)


def test_cached_decoding_with_cross_cache_matches_full_pass():
    block = _block(**T5_LIKE)
    full_bias, bias_layer = _bias(5, 5)
    full = np.asarray(block(X, attention_mask=CAUSAL, attention_bias=full_bias, context=CONTEXT,
                            context_mask=CONTEXT_MASK))
    cache_length = 7  # two spare slots, hidden from queries by the causal mask only
    cache = np.zeros((2, 2, cache_length, 3, 4), "float32")
    cross_cache = block.cross_attention.context_cache(CONTEXT)
    assert tuple(cross_cache.shape) == (2, 2, 4, 3, 4)
    steps = []
    for i in range(5):
        out, cache = block(
            X[:, i:i + 1],
            attention_mask=attention_mask(np.ones((2, cache_length), np.int32), 1, i),
            attention_bias=bias_layer(np.array([i]), np.arange(cache_length)),
            cache=cache,
            cache_index=i,
            context_mask=CONTEXT_MASK,
            cross_cache=cross_cache,
        )
        steps.append(np.asarray(out))
    assert np.abs(full).max() > 0.1
    np.testing.assert_allclose(np.concatenate(steps, axis=1), full, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(cache)[:, :, 5:], 0.0)


def test_returns_self_attention_scores_with_cross_attention():
    block = _block(**T5_LIKE)
    out, probs = block(X, attention_mask=CAUSAL, context=CONTEXT, return_attention_scores=True)
    assert tuple(out.shape) == X.shape and tuple(probs.shape) == (2, 3, 5, 5)
    np.testing.assert_allclose(np.asarray(probs).sum(-1), 1.0, atol=1e-5)


@pytest.mark.parametrize("kwargs", [T5_LIKE, dict(dropout=0.1, head_dim=4)], ids=["gated", "relu_dropout"])
def test_serialization(kwargs):
    bias, _ = _bias(5, 5)
    run_serialization_test(_block(**kwargs), X, attention_mask=CAUSAL, attention_bias=bias, context=CONTEXT,
                           context_mask=CONTEXT_MASK)


def test_missing_context_names_the_argument():
    with pytest.raises(ValueError, match="Invalid value for argument `context`"):
        _block(**T5_LIKE)(X, attention_mask=CAUSAL)


def test_encoder_block_has_no_cross_attention():
    block = T5Block(num_heads=2, hidden_dim=8, intermediate_dim=16)
    assert not hasattr(block, "cross_attention") and "cross_attention" not in block.get_config()
    assert block.attention.scale == 1.0 and not block.attention.cross_attention
