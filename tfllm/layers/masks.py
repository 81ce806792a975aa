"""Attention masks and the preallocated KV-cache update.

Both are written with plain TensorFlow ops (`gather`, `where`, comparisons) and no XLA-only ops, so the
same code runs eagerly, under `tf.function`, in a SavedModel, in TFLite and in ONNX.
"""

import tensorflow as tf


def attention_mask(padding_mask, query_length, cache_index=0):
    """Combines causal order and padding into a boolean attention mask.

    Args:
        padding_mask: `(batch_size, key_length)`, 1 (or True) where a key is a real token.
        query_length: number of query positions, starting at `cache_index`.
        cache_index: position of the first query inside the key sequence.

    Returns:
        `(batch_size, query_length, key_length)` bool: True where query i may attend to key j,
        i.e. `j <= cache_index + i` and key j is not padding.
    """
    key_length = tf.shape(padding_mask)[1]
    query_positions = tf.range(query_length) + cache_index
    key_positions = tf.range(key_length)
    causal = key_positions[None, :] <= query_positions[:, None]  # (T, S)
    return tf.logical_and(causal[None, :, :], tf.cast(padding_mask, tf.bool)[:, None, :])


def positions_from_mask(padding_mask):
    """Position ids that count only real tokens, so left padding does not shift positions.

    Args:
        padding_mask: `(batch_size, sequence_length)`, 1 for real tokens.

    Returns:
        `(batch_size, sequence_length)` int32: the number of real tokens before each position,
        0 on leading padding.
    """
    counts = tf.cumsum(tf.cast(padding_mask, tf.int32), axis=1) - 1
    return tf.maximum(counts, 0)


def update_cache(cache, update, index):
    """Writes `update` into `cache` at `index` along the sequence axis.

    Args:
        cache: `(batch_size, cache_length, num_heads, head_dim)`.
        update: `(batch_size, update_length, num_heads, head_dim)`.
        index: scalar int, the first position to write.

    Returns:
        The new cache, same shape as `cache`.
    """
    cache_length = tf.shape(cache)[1]
    update_length = tf.shape(update)[1]
    positions = tf.range(cache_length)
    window = tf.logical_and(positions >= index, positions < index + update_length)
    # Gather rather than pad: the shape stays the cache's, which XLA needs to be static.
    source = tf.clip_by_value(positions - index, 0, update_length - 1)
    spread = tf.gather(tf.cast(update, cache.dtype), source, axis=1)  # (B, S, heads, head_dim)
    return tf.where(window[None, :, None, None], spread, cache)
