"""Sentence vectors from token vectors, as sentence-transformers' `Pooling` computes them (TF ops, so
the same function serves eager pipelines and exported `embed` signatures)."""

import tensorflow as tf

POOLING_MODES = ("cls", "max", "mean", "mean_sqrt_len_tokens", "lasttoken")


def pool(hidden, mask, modes):
    """Pools `(batch_size, sequence_length, hidden_dim)` hidden states over the real tokens.

    Args:
        hidden: `(batch_size, sequence_length, hidden_dim)` hidden states.
        mask: `(batch_size, sequence_length)` attention mask (1 on real tokens), padding on either side.
        modes: pooling modes (`POOLING_MODES`); several are concatenated in the given order.

    Returns:
        `(batch_size, hidden_dim * len(modes))` float32 embeddings.
    """
    hidden = tf.cast(hidden, tf.float32)
    real = tf.cast(mask, tf.int32) > 0  # (B, T)
    weights = tf.cast(real, tf.float32)[:, :, None]  # (B, T, 1)
    count = tf.maximum(tf.reduce_sum(weights, axis=1), 1e-9)  # (B, 1); sentence-transformers' clamp
    length = tf.shape(hidden)[1]
    parts = []
    for mode in modes:
        if mode == "cls":  # the first real token
            first = tf.argmax(tf.cast(real, tf.int32), axis=1, output_type=tf.int32)
            parts.append(tf.gather(hidden, first, batch_dims=1))
        elif mode == "max":
            parts.append(tf.reduce_max(tf.where(weights > 0, hidden, tf.float32.min), axis=1))
        elif mode in ("mean", "mean_sqrt_len_tokens"):
            total = tf.reduce_sum(hidden * weights, axis=1)
            parts.append(total / (count if mode == "mean" else tf.sqrt(count)))
        elif mode == "lasttoken":  # the last real token
            last = length - 1 - tf.argmax(tf.cast(real[:, ::-1], tf.int32), axis=1, output_type=tf.int32)
            parts.append(tf.gather(hidden, last, batch_dims=1))
        else:
            raise ValueError(f"Invalid value for argument `modes`. Expected modes from {POOLING_MODES}. Received: modes={modes!r}")
    return tf.concat(parts, axis=-1)
