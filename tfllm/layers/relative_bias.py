"""T5's relative position bias: a learned scalar per head and bucket of key-minus-query distance."""

import math

import keras
import tensorflow as tf

from tfllm.errors import check_int


def relative_position_bucket(relative_position, bidirectional=True, num_buckets=32, max_distance=128):
    """Maps `key_position - query_position` to T5's bucket ids.

    Half of the buckets hold exact small distances, the other half logarithmically wider bins up to
    `max_distance` (farther distances share the last bucket). Bidirectional buckets split the
    range between keys before and after the query; causal ones only count keys before it.

    Args:
        relative_position: int tensor of `key_position - query_position`, any shape.
        bidirectional: keys after the query get buckets of their own (encoder), or share bucket 0
            with the query itself (decoder).
        num_buckets: number of buckets.
        max_distance: distance from which every key falls in the last bucket.

    Returns:
        int32 tensor of the same shape, values in `[0, num_buckets)`.
    """
    relative_position = tf.cast(relative_position, tf.int32)
    buckets = tf.zeros_like(relative_position)
    if bidirectional:
        num_buckets //= 2
        buckets += tf.cast(relative_position > 0, tf.int32) * num_buckets
        distance = tf.abs(relative_position)
    else:
        distance = -tf.minimum(relative_position, 0)
    max_exact = num_buckets // 2
    is_small = distance < max_exact
    # float32 in the same order of operations as transformers, so bin edges round the same way.
    # The maximum keeps log() finite where the small branch is taken anyway.
    scaled = tf.cast(tf.maximum(distance, max_exact), tf.float32) / float(max_exact)
    log_ratio = tf.math.log(scaled) / tf.constant(math.log(max_distance / max_exact), tf.float32)
    large = max_exact + tf.cast(log_ratio * float(num_buckets - max_exact), tf.int32)
    large = tf.minimum(large, num_buckets - 1)
    return buckets + tf.where(is_small, distance, large)


@keras.saving.register_keras_serializable(package="tfllm")
class RelativePositionBias(keras.layers.Layer):
    """T5's learned relative position bias, added to the attention scores of every layer of a stack.

    Args:
        num_heads: attention heads (one bias per head and bucket).
        num_buckets: number of distance buckets (`relative_attention_num_buckets`).
        max_distance: distance from which keys share the last bucket
            (`relative_attention_max_distance`).
        bidirectional: True for an encoder (keys after the query have their own buckets), False for
            a causal decoder.
        initializer_range: standard deviation of the normal initializer.

    Call arguments:
        query_positions: `(query_length,)` int positions of the queries; a decoding step passes
            its cache index.
        key_positions: `(key_length,)` int positions of the keys.

    Returns:
        `(1, num_heads, query_length, key_length)` float bias.

    Example:
    >>> bias = RelativePositionBias(num_heads=4, num_buckets=32, max_distance=128)
    >>> tuple(bias(np.arange(3), np.arange(5)).shape)
    (1, 4, 3, 5)
    """

    def __init__(self, num_heads, num_buckets=32, max_distance=128, bidirectional=True, initializer_range=0.02,
                 **kwargs):
        super().__init__(**kwargs)
        self.num_heads = check_int("num_heads", num_heads, minimum=1)
        self.num_buckets = check_int("num_buckets", num_buckets, minimum=4 if bidirectional else 2)
        self.max_distance = check_int("max_distance", max_distance, minimum=1)
        # The logarithmic bins start at half the (per-direction) buckets and must reach beyond.
        smallest = (self.num_buckets // 2 if bidirectional else self.num_buckets) // 2 + 1
        if self.max_distance < smallest:
            raise ValueError(
                f"Invalid value for argument `max_distance`. Expected an integer >= {smallest} (beyond the "
                f"{smallest - 1} exact buckets of num_buckets={self.num_buckets}). "
                f"Received: max_distance={max_distance}"
            )
        self.bidirectional = bool(bidirectional)
        self.initializer_range = initializer_range

    def build(self, query_positions_shape=None, key_positions_shape=None):
        self.embeddings = self.add_weight(
            name="embeddings",
            shape=(self.num_buckets, self.num_heads),
            initializer=keras.initializers.RandomNormal(stddev=self.initializer_range),
        )
        self.built = True

    def call(self, query_positions, key_positions):
        query_positions = tf.cast(query_positions, tf.int32)
        key_positions = tf.cast(key_positions, tf.int32)
        relative = key_positions[None, :] - query_positions[:, None]  # (T, S)
        buckets = relative_position_bucket(relative, self.bidirectional, self.num_buckets, self.max_distance)
        values = tf.gather(tf.cast(self.embeddings, self.compute_dtype), buckets)  # (T, S, nh)
        return tf.transpose(values, [2, 0, 1])[None]  # (1, nh, T, S)

    def compute_output_shape(self, query_positions_shape, key_positions_shape):
        return (1, self.num_heads, query_positions_shape[0], key_positions_shape[0])

    def get_config(self):
        config = super().get_config()
        config.update(
            num_heads=self.num_heads,
            num_buckets=self.num_buckets,
            max_distance=self.max_distance,
            bidirectional=self.bidirectional,
            initializer_range=self.initializer_range,
        )
        return config
