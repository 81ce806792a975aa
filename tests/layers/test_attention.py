import keras
import numpy as np
import pytest

from layer_testing import LEFT_PADDED_MASK, assert_cached_decoding_matches_full, random_inputs, randomize_weights
from testing import run_serialization_test
from tfllm.layers import MultiHeadAttention, attention_mask, positions_from_mask

PADDING = LEFT_PADDED_MASK
X = random_inputs((2, 6, 8))
POSITIONS = np.asarray(positions_from_mask(PADDING))
MASK = attention_mask(PADDING, 6)


def _rope(x, positions, base, scale):
    """Rotate-half RoPE written per half: x is (B, T, heads, head_dim)."""
    half = x.shape[-1] // 2
    angles = (positions / scale)[..., None] * base ** (-2.0 * np.arange(half) / x.shape[-1])  # (B, T, half)
    cos, sin = np.cos(angles)[:, :, None, :], np.sin(angles)[:, :, None, :]
    first, second = x[..., :half], x[..., half:]
    return np.concatenate([first * cos - second * sin, second * cos + first * sin], axis=-1)


def _dense(layer, x):
    out = x @ np.asarray(layer.kernel, "float64")
    return out + np.asarray(layer.bias, "float64") if layer.bias is not None else out


def _reference_attention(layer, x, padding, positions):
    """Causal softmax attention with the layer's kernels, one query head at a time (float64)."""
    heads, kv_heads, head_dim = layer.num_heads, layer.num_key_value_heads, layer.head_dim
    batch, length, _ = x.shape
    qkv = _dense(layer.qkv, x.astype("float64"))
    q = qkv[..., : heads * head_dim].reshape(batch, length, heads, head_dim)
    k = qkv[..., heads * head_dim : (heads + kv_heads) * head_dim].reshape(batch, length, kv_heads, head_dim)
    v = qkv[..., (heads + kv_heads) * head_dim :].reshape(batch, length, kv_heads, head_dim)
    if layer.rotary_max_wavelength is not None:
        q = _rope(q, positions, layer.rotary_max_wavelength, layer.rotary_scaling_factor)
        k = _rope(k, positions, layer.rotary_max_wavelength, layer.rotary_scaling_factor)
    allowed = np.tril(np.ones((length, length), bool))[None] & padding.astype(bool)[:, None, :]  # (B, T, S)
    out = np.zeros((batch, length, heads, head_dim))
    for h in range(heads):
        kv = h // (heads // kv_heads)  # consecutive query heads share one key/value head
        scores = np.einsum("btd,bsd->bts", q[:, :, h], k[:, :, kv]) / np.sqrt(head_dim)
        scores = np.where(allowed, scores, -np.inf)
        with np.errstate(invalid="ignore"):  # rows of padding queries see no key at all
            probs = np.exp(scores - scores.max(-1, keepdims=True))
            probs = probs / probs.sum(-1, keepdims=True)
        out[:, :, h] = np.einsum("bts,bsd->btd", probs, v[:, :, kv])
    return _dense(layer.output_dense, out.reshape(batch, length, heads * head_dim))


CONFIGS = {
    "mha": dict(num_heads=4, hidden_dim=8),
    "gqa_rotary": dict(num_heads=4, hidden_dim=8, num_key_value_heads=2, rotary_max_wavelength=10000.0),
    "mqa_no_bias": dict(num_heads=4, hidden_dim=8, num_key_value_heads=1, use_bias=False),
    "head_dim_scaled_rotary": dict(
        num_heads=4, hidden_dim=8, num_key_value_heads=2, head_dim=6, rotary_max_wavelength=100.0, rotary_scaling_factor=2.0
    ),
}


def _layer(config, seed=0):
    layer = MultiHeadAttention(**config)
    layer.build(X.shape)
    return randomize_weights(layer, seed=seed)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_matches_numpy_reference(name):
    layer = _layer(CONFIGS[name])
    out = np.asarray(layer(X, attention_mask=MASK, positions=POSITIONS))
    assert out.shape == X.shape
    real = PADDING.astype(bool)
    np.testing.assert_allclose(out[real], _reference_attention(layer, X, PADDING, POSITIONS)[real], atol=1e-5)


def test_padding_keys_are_ignored():
    # Changing the inputs at padded positions must not change any real position's output.
    layer = _layer(CONFIGS["gqa_rotary"])
    noisy = X.copy()
    noisy[1, :2] = random_inputs((2, 8), seed=7) * 10.0
    real = PADDING.astype(bool)
    clean = np.asarray(layer(X, attention_mask=MASK, positions=POSITIONS))[real]
    np.testing.assert_allclose(np.asarray(layer(noisy, attention_mask=MASK, positions=POSITIONS))[real], clean, atol=1e-6)


def test_weight_layout():
    layer = _layer(CONFIGS["head_dim_scaled_rotary"])
    assert tuple(layer.qkv.kernel.shape) == (8, (4 + 2 * 2) * 6)
    assert tuple(layer.output_dense.kernel.shape) == (4 * 6, 8)
    no_output_bias = MultiHeadAttention(4, 8, use_bias=True, output_bias=False)
    no_output_bias.build(X.shape)
    assert no_output_bias.qkv.bias is not None and no_output_bias.output_dense.bias is None


@pytest.mark.parametrize("prefill_length", [0, 4], ids=["token_by_token", "prefill_then_steps"])
@pytest.mark.parametrize("name", ["mha", "gqa_rotary"])
def test_cached_decoding_matches_full_pass(name, prefill_length):
    layer = _layer(CONFIGS[name])
    cache = assert_cached_decoding_matches_full(layer, X, PADDING, prefill_length=prefill_length)
    # The cache written step by step holds what one call over the whole sequence writes.
    _, prefilled = layer(
        X,
        attention_mask=attention_mask(np.pad(PADDING, [(0, 0), (0, 2)], constant_values=1), 6),
        positions=POSITIONS,
        cache=np.zeros_like(cache),
        cache_index=0,
    )
    np.testing.assert_allclose(cache, np.asarray(prefilled), atol=1e-6)


def test_dropout_only_in_training():
    layer = _layer(dict(num_heads=2, hidden_dim=8, dropout=0.5))
    inference = np.asarray(layer(X, attention_mask=MASK))
    np.testing.assert_array_equal(np.asarray(layer(X, attention_mask=MASK, training=False)), inference)
    assert not np.allclose(np.asarray(layer(X, attention_mask=MASK, training=True)), inference, atol=1e-3)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_serialization(name):
    run_serialization_test(_layer(CONFIGS[name]), X, attention_mask=MASK, positions=POSITIONS)


def test_serialization_with_cache():
    cache = random_inputs((2, 2, 8, 2, 2))
    padding = np.ones((2, 8), np.int32)
    run_serialization_test(
        _layer(CONFIGS["gqa_rotary"]),
        X[:, :1],
        attention_mask=attention_mask(padding, 1, 5),
        positions=np.full((2, 1), 5),
        cache=cache,
        cache_index=5,
    )


def test_config_resolves_defaults():
    config = MultiHeadAttention(num_heads=4, hidden_dim=8).get_config()
    assert (config["num_key_value_heads"], config["head_dim"], config["output_bias"]) == (4, 2, True)


def test_attention_without_mask_is_causal():
    layer = _layer(CONFIGS["mha"])
    np.testing.assert_allclose(np.asarray(layer(X))[:, :3], np.asarray(layer(X[:, :3])), atol=1e-5)


def test_mixed_precision():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        layer = MultiHeadAttention(num_heads=4, hidden_dim=8, num_key_value_heads=2)
        assert layer(X, attention_mask=MASK).dtype == "float16"
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_num_key_value_heads_must_divide_num_heads():
    with pytest.raises(ValueError, match=r"Invalid value for argument `num_key_value_heads`\..*\(4\)\. Received: num_key_value_heads=3"):
        MultiHeadAttention(num_heads=4, hidden_dim=8, num_key_value_heads=3)


def test_num_heads_must_divide_hidden_dim_without_head_dim():
    with pytest.raises(ValueError, match=r"Invalid value for argument `num_heads`\..*\(10\)\. Received: num_heads=4"):
        MultiHeadAttention(num_heads=4, hidden_dim=10)
    assert MultiHeadAttention(num_heads=4, hidden_dim=10, head_dim=3).head_dim == 3


@pytest.mark.parametrize(
    "kwargs,argument",
    [
        ({"dropout": 1.0}, "dropout"),
        ({"dropout": -0.5}, "dropout"),
        ({"num_heads": 0}, "num_heads"),
        ({"hidden_dim": 8.0}, "hidden_dim"),
        ({"num_key_value_heads": 0}, "num_key_value_heads"),
        ({"scale": 0.0}, "scale"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs, argument):
    with pytest.raises(ValueError, match=f"Invalid value for argument `{argument}`"):
        MultiHeadAttention(**{"num_heads": 4, "hidden_dim": 8, **kwargs})


# --- Cross-attention, score scale, additive bias, returned probabilities ---------------------------


def _softmax(scores):
    probs = np.exp(scores - scores.max(-1, keepdims=True))
    return probs / probs.sum(-1, keepdims=True)


def test_cross_attention_scale_and_bias_match_numpy():
    """Queries from the inputs, keys/values from a longer context, masked context keys, a per-head
    additive bias and no 1/sqrt(d) scaling (T5's attention)."""
    layer = MultiHeadAttention(num_heads=4, hidden_dim=8, num_key_value_heads=2, use_bias=False, scale=1.0,
                               cross_attention=True)
    context = random_inputs((2, 9, 8), seed=3)
    layer.build(X.shape, context.shape)
    randomize_weights(layer, seed=1)
    context_mask = np.ones((2, 9), bool)
    context_mask[1, 6:] = False
    mask = np.broadcast_to(context_mask[:, None, :], (2, 6, 9))
    bias = np.random.default_rng(0).normal(size=(1, 4, 6, 9)).astype("float32")
    out, probs = layer(X, attention_mask=mask, context=context, attention_bias=bias, return_attention_scores=True)

    q = _dense(layer.query, X.astype("float64")).reshape(2, 6, 4, 2)
    kv = _dense(layer.key_value, context.astype("float64")).reshape(2, 9, 2, 2, 2)  # (B, S, k|v, nkv, hs)
    expected = np.zeros((2, 6, 4, 2))
    for h in range(4):
        k, v = kv[:, :, 0, h // 2], kv[:, :, 1, h // 2]
        scores = np.einsum("btd,bsd->bts", q[:, :, h], k) + bias[:, h]
        p = _softmax(np.where(mask, scores, -np.inf))
        np.testing.assert_allclose(probs[:, h], p, atol=1e-5)
        expected[:, :, h] = np.einsum("bts,bsd->btd", p, v)
    expected = _dense(layer.output_dense, expected.reshape(2, 6, 8))
    np.testing.assert_allclose(out, expected, atol=1e-4)

    # A precomputed context cache gives the same result and comes back unchanged.
    cache = layer.context_cache(context)
    cached_out, same_cache = layer(X, attention_mask=mask, cache=cache, attention_bias=bias)
    np.testing.assert_allclose(cached_out, out, atol=1e-6)
    np.testing.assert_array_equal(same_cache, cache)


def test_returned_probabilities_are_the_attention_weights():
    layer = _layer(CONFIGS["gqa_rotary"])
    out, probs = layer(X, attention_mask=MASK, positions=POSITIONS, return_attention_scores=True)
    np.testing.assert_allclose(out, layer(X, attention_mask=MASK, positions=POSITIONS), atol=1e-6)
    assert probs.shape == (2, 4, 6, 6)
    np.testing.assert_allclose(np.asarray(probs).sum(-1), 1.0, atol=1e-5)
    allowed = np.asarray(MASK)[:, None]  # (B, 1, T, S)
    seen = allowed.any(-1, keepdims=True)  # padding queries see no key and get uniform weights
    assert np.all(np.where(seen & ~allowed, np.asarray(probs), 0.0) == 0)


def test_cross_attention_serialization():
    layer = MultiHeadAttention(num_heads=2, hidden_dim=8, cross_attention=True, scale=1.0)
    run_serialization_test(layer, X, context=random_inputs((2, 5, 8), seed=4))
