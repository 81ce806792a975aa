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


def update_cache(cache, update, index, axis=1):
    """Writes `update` into `cache` at `index` along the sequence axis `axis`.

    Args:
        cache: e.g. `(batch_size, cache_length, num_heads, head_dim)` (axis 1) or a stacked
            `(batch_size, 2, cache_length, num_heads, head_dim)` (axis 2).
        update: the cache's shape with `update_length` positions on `axis`.
        index: scalar int, the first position to write.

    Returns:
        The new cache, same shape as `cache`.
    """
    update = tf.cast(update, cache.dtype)
    shape = tf.shape(update)
    grids = tf.meshgrid(*[tf.range(shape[i]) for i in range(axis + 1)], indexing="ij")
    grids[axis] = grids[axis] + index
    return tf.tensor_scatter_nd_update(cache, tf.stack(grids, axis=-1), update)
