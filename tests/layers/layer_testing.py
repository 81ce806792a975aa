"""Helpers shared by the layer tests: random weights and the cached-decoding check."""

import numpy as np

from tfllm.layers import attention_mask, positions_from_mask

# Row 0 is full, row 1 is left-padded by two: decoding must skip its padding and keep its positions.
LEFT_PADDED_MASK = np.array([[1, 1, 1, 1, 1, 1], [0, 0, 1, 1, 1, 1]], np.int32)


def randomize_weights(layer, seed=0, scale=0.5):
    """Overwrites every weight of `layer` with N(0, scale), so zero biases and unit scales are exercised too."""
    rng = np.random.default_rng(seed)
    for weight in layer.weights:
        weight.assign(rng.normal(0.0, scale, weight.shape).astype(weight.dtype))
    return layer


def random_inputs(shape, seed=1):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


def assert_cached_decoding_matches_full(layer, inputs, padding_mask, prefill_length=0, spare_slots=2):
    """Decodes `inputs` with a preallocated cache and checks the outputs equal one full pass.

    The first `prefill_length` tokens go in one call (none if 0), then one token per call. The cache
    has `spare_slots` more positions than the sequence, marked real in the padding mask, so only the
    causal mask keeps queries from the unwritten zero slots.

    Args:
        layer: a `MultiHeadAttention` or a transformer block (same call signature).
        inputs: `(batch_size, sequence_length, hidden_dim)`.
        padding_mask: `(batch_size, sequence_length)`, 1 for real tokens.
        prefill_length: tokens fed in the first call.
        spare_slots: cache positions beyond the sequence.

    Returns:
        The final cache, `(batch_size, 2, cache_length, num_key_value_heads, head_dim)` numpy.
    """
    attention = getattr(layer, "attention", layer)
    batch, length, _ = inputs.shape
    cache_length = length + spare_slots
    cache_padding = np.concatenate([padding_mask, np.ones((batch, spare_slots), padding_mask.dtype)], axis=1)
    positions = positions_from_mask(cache_padding)
    full = layer(inputs, attention_mask=attention_mask(padding_mask, length), positions=positions[:, :length])

    cache = np.zeros((batch, 2, cache_length, attention.num_key_value_heads, attention.head_dim), "float32")
    steps = []
    if prefill_length:
        out, cache = layer(
            inputs[:, :prefill_length],
            attention_mask=attention_mask(cache_padding, prefill_length, 0),
            positions=positions[:, :prefill_length],
            cache=cache,
            cache_index=0,
        )
        steps.append(out)
    for i in range(prefill_length, length):
        out, cache = layer(
            inputs[:, i : i + 1],
            attention_mask=attention_mask(cache_padding, 1, i),
            positions=positions[:, i : i + 1],
            cache=cache,
            cache_index=i,
        )
        steps.append(out)
    incremental = np.concatenate([np.asarray(step) for step in steps], axis=1)

    real = padding_mask.astype(bool)
    full = np.asarray(full)
    # Outputs of order one, so an atol of 1e-5 is a real comparison and not two near-zero tensors.
    assert np.abs(full[real]).max() > 0.1
    np.testing.assert_allclose(incremental[real], full[real], atol=1e-5)
    cache = np.asarray(cache)
    np.testing.assert_array_equal(cache[:, :, length:], 0.0)
    return cache
