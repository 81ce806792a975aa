"""Multi-head attention with grouped-query heads, rotary positions and an optional KV cache."""

import keras
import tensorflow as tf

from tfllm.errors import check_float, check_int
from tfllm.layers.masks import attention_mask as build_attention_mask
from tfllm.layers.masks import update_cache
from tfllm.layers.positions import RotaryEmbedding


@keras.saving.register_keras_serializable(package="tfllm")
class MultiHeadAttention(keras.layers.Layer):
    """Causal self-attention with one fused query/key/value projection.

    Queries have `num_heads` heads; keys and values have `num_key_value_heads` heads that groups of
    query heads share (grouped-query attention; equal counts give plain multi-head attention).

    Args:
        num_heads: number of query heads.
        hidden_dim: width of the input and output.
        num_key_value_heads: number of key/value heads; divides `num_heads`. Defaults to `num_heads`.
        head_dim: width of each head. Defaults to `hidden_dim // num_heads`.
        use_bias: biases on the query/key/value projection.
        output_bias: bias on the output projection. Defaults to `use_bias`.
        dropout: dropout rate on the attention probabilities.
        rotary_max_wavelength: if set, rotary position embedding with this base is applied to
            queries and keys.
        rotary_scaling_factor: linear scaling of rotary positions.
        initializer_range: standard deviation of the kernels' normal initializer.

    Call arguments:
        inputs: `(batch_size, query_length, hidden_dim)`.
        attention_mask: `(batch_size, query_length, key_length)` bool, True where attending is
            allowed (see `tfllm.layers.attention_mask`). Defaults to a causal mask.
        positions: `(batch_size, query_length)` int positions, needed with rotary embeddings.
        cache: `(batch_size, 2, cache_length, num_key_value_heads, head_dim)` keys and values of
            earlier positions, or None for a full pass.
        cache_index: where the queries' keys and values are written into `cache`.
        training: enables dropout.

    Returns:
        `(batch_size, query_length, hidden_dim)`, and with a cache also the updated cache.
    """

    def __init__(
        self,
        num_heads,
        hidden_dim,
        num_key_value_heads=None,
        head_dim=None,
        use_bias=True,
        output_bias=None,
        dropout=0.0,
        rotary_max_wavelength=None,
        rotary_scaling_factor=1.0,
        initializer_range=0.02,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_heads = check_int("num_heads", num_heads, minimum=1)
        self.hidden_dim = check_int("hidden_dim", hidden_dim, minimum=1)
        self.num_key_value_heads = check_int(
            "num_key_value_heads", num_heads if num_key_value_heads is None else num_key_value_heads, minimum=1
        )
        if self.num_heads % self.num_key_value_heads:
            raise ValueError(
                "Invalid value for argument `num_key_value_heads`. Expected a divisor of the number of "
                f"heads ({self.num_heads}). Received: num_key_value_heads={self.num_key_value_heads}"
            )
        if head_dim is None and self.hidden_dim % self.num_heads:
            raise ValueError(
                f"Invalid value for argument `num_heads`. Expected a divisor of the hidden size "
                f"({self.hidden_dim}). Received: num_heads={self.num_heads}"
            )
        self.head_dim = check_int("head_dim", head_dim or self.hidden_dim // self.num_heads, minimum=1)
        self.use_bias = use_bias
        self.output_bias = use_bias if output_bias is None else output_bias
        self.dropout = check_float("dropout", dropout, low=0.0, high=1.0, high_inclusive=False)
        self.rotary_max_wavelength = rotary_max_wavelength
        self.rotary_scaling_factor = rotary_scaling_factor
        self.initializer_range = initializer_range

        # === Layers ===
        initializer = keras.initializers.RandomNormal(stddev=initializer_range)
        qkv_width = (self.num_heads + 2 * self.num_key_value_heads) * self.head_dim
        policy = self.dtype_policy
        self.qkv = keras.layers.Dense(
            qkv_width, use_bias=use_bias, kernel_initializer=initializer, dtype=policy, name="qkv"
        )
        self.output_dense = keras.layers.Dense(
            self.hidden_dim, use_bias=self.output_bias, kernel_initializer=initializer, dtype=policy, name="output"
        )
        self.dropout_layer = keras.layers.Dropout(self.dropout, dtype=policy)
        self.rotary = None
        if rotary_max_wavelength is not None:
            self.rotary = RotaryEmbedding(rotary_max_wavelength, rotary_scaling_factor, dtype=policy, name="rotary")

    def build(self, input_shape):
        self.qkv.build(input_shape)
        self.output_dense.build(tuple(input_shape[:-1]) + (self.num_heads * self.head_dim,))
        self.built = True

    def call(self, inputs, attention_mask=None, positions=None, cache=None, cache_index=0, training=None):
        batch, length = tf.shape(inputs)[0], tf.shape(inputs)[1]
        heads, kv_heads, head_dim = self.num_heads, self.num_key_value_heads, self.head_dim
        qkv = self.qkv(inputs)
        query, key, value = tf.split(qkv, [heads * head_dim, kv_heads * head_dim, kv_heads * head_dim], axis=-1)
        query = tf.reshape(query, [batch, length, heads, head_dim])  # (B, T, nh, hs)
        key = tf.reshape(key, [batch, length, kv_heads, head_dim])  # (B, T, nkv, hs)
        value = tf.reshape(value, [batch, length, kv_heads, head_dim])
        if self.rotary is not None:
            query = self.rotary(query, positions)
            key = self.rotary(key, positions)
        new_cache = None
        if cache is not None:
            key = update_cache(cache[:, 0], key, cache_index)  # (B, S, nkv, hs)
            value = update_cache(cache[:, 1], value, cache_index)
            new_cache = tf.stack([key, value], axis=1)
        if attention_mask is None:  # causal over the keys seen so far, no padding
            attention_mask = build_attention_mask(tf.ones([batch, tf.shape(key)[1]], tf.int32), length, cache_index)
        out = self._attend(query, key, value, attention_mask, training)
        out = self.output_dense(tf.reshape(out, [batch, length, heads * head_dim]))
        return out if cache is None else (out, new_cache)

    def _attend(self, query, key, value, attention_mask, training):
        batch, length = tf.shape(query)[0], tf.shape(query)[1]
        groups = self.num_heads // self.num_key_value_heads
        # Query heads are grouped under the key/value head they share, so keys are never repeated.
        query = tf.reshape(query, [batch, length, self.num_key_value_heads, groups, self.head_dim])
        scores = tf.einsum("btkgd,bskd->bkgts", tf.cast(query, "float32"), tf.cast(key, "float32"))
        scores = scores * (1.0 / float(self.head_dim) ** 0.5)  # (B, nkv, g, T, S)
        mask = tf.cast(attention_mask, tf.bool)[:, None, None, :, :]
        scores = tf.where(mask, scores, tf.float32.min)
        probs = tf.nn.softmax(scores, axis=-1)
        probs = tf.cast(self.dropout_layer(probs, training=training), "float32")
        out = tf.einsum("bkgts,bskd->btkgd", probs, tf.cast(value, "float32"))
        return tf.cast(tf.reshape(out, [batch, length, self.num_heads, self.head_dim]), self.compute_dtype)

    def get_config(self):
        config = super().get_config()
        config.update(
            num_heads=self.num_heads,
            hidden_dim=self.hidden_dim,
            num_key_value_heads=self.num_key_value_heads,
            head_dim=self.head_dim,
            use_bias=self.use_bias,
            output_bias=self.output_bias,
            dropout=self.dropout,
            rotary_max_wavelength=self.rotary_max_wavelength,
            rotary_scaling_factor=self.rotary_scaling_factor,
            initializer_range=self.initializer_range,
        )
        return config
