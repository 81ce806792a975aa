"""Multi-head attention: self- or cross-attention, grouped-query heads, rotary positions, an additive
position bias and an optional KV cache."""

import keras
import tensorflow as tf

from tfllm.errors import check_float, check_int
from tfllm.layers.masks import attention_mask as build_attention_mask
from tfllm.layers.masks import update_cache
from tfllm.layers.positions import RotaryEmbedding


@keras.saving.register_keras_serializable(package="tfllm")
class MultiHeadAttention(keras.layers.Layer):
    """Self-attention with one fused query/key/value projection, or cross-attention to a context.

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
        scale: multiplies the query-key scores. Defaults to `1 / sqrt(head_dim)` (T5 uses 1.0).
        cross_attention: attend to a `context` (an encoder's output) with a `query` projection and
            a fused `key_value` projection, instead of to the inputs themselves.

    Call arguments:
        inputs: `(batch_size, query_length, hidden_dim)`.
        attention_mask: `(batch_size, query_length, key_length)` bool, True where attending is
            allowed (see `tfllm.layers.attention_mask`). Defaults to a causal mask.
        positions: `(batch_size, query_length)` int positions, needed with rotary embeddings.
        cache: `(batch_size, 2, cache_length, num_key_value_heads, head_dim)` keys and values of
            earlier positions, or None for a full pass.
        cache_index: where the queries' keys and values are written into `cache`. With
            `cross_attention`, `cache` holds the context's keys and values (`context_cache`) and is
            returned unchanged.
        context: `(batch_size, key_length, context_dim)` for cross-attention without a cache.
        attention_bias: added to the scores, broadcastable to `(batch_size, num_heads,
            query_length, key_length)` (T5's relative position bias).
        return_attention_scores: also return the attention probabilities.
        training: enables dropout.

    Returns:
        `(batch_size, query_length, hidden_dim)`; with a cache, `(outputs, cache)`; with
        `return_attention_scores`, the probabilities `(batch_size, num_heads, query_length,
        key_length)` are appended: `(outputs, probabilities)` or `(outputs, cache, probabilities)`.
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
        scale=None,
        cross_attention=False,
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
        self.scale = None if scale is None else check_float("scale", scale, low=0.0, low_inclusive=False)
        self.cross_attention = bool(cross_attention)

        # === Layers ===
        initializer = keras.initializers.RandomNormal(stddev=initializer_range)
        qkv_width = (self.num_heads + 2 * self.num_key_value_heads) * self.head_dim
        policy = self.dtype_policy
        dense = dict(use_bias=use_bias, kernel_initializer=initializer, dtype=policy)
        if self.cross_attention:
            self.query = keras.layers.Dense(self.num_heads * self.head_dim, name="query", **dense)
            self.key_value = keras.layers.Dense(2 * self.num_key_value_heads * self.head_dim, name="key_value", **dense)
        else:
            self.qkv = keras.layers.Dense(qkv_width, name="qkv", **dense)
        self.output_dense = keras.layers.Dense(
            self.hidden_dim, use_bias=self.output_bias, kernel_initializer=initializer, dtype=policy, name="output"
        )
        self.dropout_layer = keras.layers.Dropout(self.dropout, dtype=policy)
        self.rotary = None
        if rotary_max_wavelength is not None:
            self.rotary = RotaryEmbedding(rotary_max_wavelength, rotary_scaling_factor, dtype=policy, name="rotary")

    def build(self, inputs_shape, context_shape=None):
        if self.cross_attention:
            self.query.build(inputs_shape)
            self.key_value.build(context_shape or inputs_shape)
        else:
            self.qkv.build(inputs_shape)
        self.output_dense.build(tuple(inputs_shape[:-1]) + (self.num_heads * self.head_dim,))
        self.built = True

    def call(
        self,
        inputs,
        attention_mask=None,
        positions=None,
        cache=None,
        cache_index=0,
        context=None,
        attention_bias=None,
        return_attention_scores=False,
        training=None,
    ):
        batch, length = tf.shape(inputs)[0], tf.shape(inputs)[1]
        heads, kv_heads, head_dim = self.num_heads, self.num_key_value_heads, self.head_dim
        new_cache = cache
        if self.cross_attention:
            query = tf.reshape(self.query(inputs), [batch, length, heads, head_dim])  # (B, T, nh, hs)
            key_value = cache if cache is not None else self.context_cache(context)
            key, value = key_value[:, 0], key_value[:, 1]  # (B, S, nkv, hs)
        else:
            qkv = self.qkv(inputs)
            query, key, value = tf.split(qkv, [heads * head_dim, kv_heads * head_dim, kv_heads * head_dim], axis=-1)
            query = tf.reshape(query, [batch, length, heads, head_dim])  # (B, T, nh, hs)
            key = tf.reshape(key, [batch, length, kv_heads, head_dim])  # (B, T, nkv, hs)
            value = tf.reshape(value, [batch, length, kv_heads, head_dim])
            if self.rotary is not None:
                query = self.rotary(query, positions)
                key = self.rotary(key, positions)
            if cache is not None:
                new_cache = update_cache(cache, tf.stack([key, value], axis=1), cache_index, axis=2)
                key, value = new_cache[:, 0], new_cache[:, 1]  # (B, S, nkv, hs)
        if attention_mask is None and not self.cross_attention:  # causal over the keys seen so far
            attention_mask = build_attention_mask(tf.ones([batch, tf.shape(key)[1]], tf.int32), length, cache_index)
        out, probs = self._attend(query, key, value, attention_mask, attention_bias, training)
        out = self.output_dense(tf.reshape(out, [batch, length, heads * head_dim]))
        outputs = (out,) if cache is None else (out, new_cache)
        if return_attention_scores:
            outputs += (probs,)
        return outputs[0] if len(outputs) == 1 else outputs

    def context_cache(self, context):
        """Cross-attention keys and values of `context`, computed once per sequence.

        Args:
            context: `(batch_size, key_length, context_dim)`.

        Returns:
            `(batch_size, 2, key_length, num_key_value_heads, head_dim)`.
        """
        batch, length = tf.shape(context)[0], tf.shape(context)[1]
        key_value = tf.reshape(self.key_value(context), [batch, length, 2, self.num_key_value_heads, self.head_dim])
        return tf.transpose(key_value, [0, 2, 1, 3, 4])

    def _attend(self, query, key, value, attention_mask, attention_bias, training):
        batch, length, key_length = tf.shape(query)[0], tf.shape(query)[1], tf.shape(key)[1]
        kv_heads, groups = self.num_key_value_heads, self.num_heads // self.num_key_value_heads
        # Query heads are grouped under the key/value head they share, so keys are never repeated.
        query = tf.reshape(query, [batch, length, kv_heads, groups, self.head_dim])
        scores = tf.einsum("btkgd,bskd->bkgts", tf.cast(query, "float32"), tf.cast(key, "float32"))
        scale = self.scale if self.scale is not None else 1.0 / float(self.head_dim) ** 0.5
        if scale != 1.0:
            scores = scores * scale  # (B, nkv, g, T, S)
        if attention_bias is not None:
            bias = tf.cast(attention_bias, "float32")  # (B or 1, nh, T, S)
            scores = scores + tf.reshape(bias, [tf.shape(bias)[0], kv_heads, groups, length, key_length])
        if attention_mask is not None:
            mask = tf.cast(attention_mask, tf.bool)[:, None, None, :, :]
            scores = tf.where(mask, scores, tf.float32.min)
        probs = tf.nn.softmax(scores, axis=-1)
        dropped = tf.cast(self.dropout_layer(probs, training=training), "float32")
        out = tf.einsum("bkgts,bskd->btkgd", dropped, tf.cast(value, "float32"))
        out = tf.cast(tf.reshape(out, [batch, length, self.num_heads, self.head_dim]), self.compute_dtype)
        return out, tf.reshape(probs, [batch, self.num_heads, length, key_length])

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
            scale=self.scale,
            cross_attention=self.cross_attention,
        )
        return config
