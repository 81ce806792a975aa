"""The transformer block: self-attention, optional cross-attention and feed-forward, each with a residual."""

import keras

from tfllm.errors import check_choice, check_float
from tfllm.layers.attention import MultiHeadAttention
from tfllm.layers.feedforward import FeedForward
from tfllm.layers.norms import NORMS


@keras.saving.register_keras_serializable(package="tfllm")
class DecoderBlock(keras.layers.Layer):
    """A transformer block, pre-norm (GPT-2, Llama, T5) or post-norm (original Transformer, BERT).

    Pre-norm: `h = x + attn(norm1(x)); y = h + ffn(norm2(h))`.
    Post-norm: `h = norm1(x + attn(x)); y = norm2(h + ffn(h))`.
    With `cross_attention=True` (an encoder-decoder's decoder, T5) a cross-attention sublayer to a
    `context` sits between the two, with its own norm and residual, in the same pre/post order.

    Args:
        num_heads: query heads.
        hidden_dim: width of the residual stream.
        intermediate_dim: width of the feed-forward inner layer.
        num_key_value_heads: key/value heads (grouped-query attention). Defaults to `num_heads`.
        head_dim: width of each head. Defaults to `hidden_dim // num_heads`.
        activation: feed-forward activation ("gelu", "gelu_tanh", "relu", "silu").
        gated_ffn: use a gated feed-forward (SwiGLU / GeGLU).
        norm: "layer_norm" or "rms_norm".
        layer_norm_epsilon: epsilon of both norms.
        norm_first: pre-norm if True, post-norm if False.
        use_bias: biases on the feed-forward and attention output projections.
        attention_bias: biases on the query/key/value projection. Defaults to `use_bias`.
        dropout: dropout rate on attention probabilities, the feed-forward and both residual branches.
        rotary_max_wavelength: rotary base if the block uses rotary embeddings, else None.
        rotary_scaling_factor: linear scaling of rotary positions.
        initializer_range: standard deviation of the kernels' normal initializer.
        cross_attention: add the cross-attention sublayer (`cross_attention_norm`, `cross_attention`).
        attention_scale: multiplies the query-key scores of both attentions. Defaults to
            `1 / sqrt(head_dim)` (T5 uses 1.0).

    Call arguments:
        inputs: `(batch_size, sequence_length, hidden_dim)`.
        attention_mask: `(batch_size, sequence_length, key_length)` bool.
        positions: `(batch_size, sequence_length)` int positions (for rotary embeddings).
        cache: `(batch_size, 2, cache_length, num_key_value_heads, head_dim)` or None.
        cache_index: where this call's keys and values are written into `cache`.
        return_attention_scores: also return the self-attention probabilities.
        training: enables dropout.
        attention_bias: added to the self-attention scores, broadcastable to `(batch_size,
            num_heads, sequence_length, key_length)` (T5's relative position bias).
        context: `(batch_size, context_length, hidden_dim)` the cross-attention attends to (an
            encoder's output); not needed when `cross_cache` is given.
        context_mask: `(batch_size, sequence_length or 1, context_length)` bool, True for real
            context positions. None attends to every position.
        cross_cache: `(batch_size, 2, context_length, num_key_value_heads, head_dim)`, the context's
            keys and values from `cross_attention.context_cache(context)`, computed once for decoding.

    Returns:
        `(batch_size, sequence_length, hidden_dim)`; with a cache, `(outputs, cache)`; with
        `return_attention_scores`, the probabilities `(batch_size, num_heads, sequence_length,
        key_length)` are appended, as `MultiHeadAttention` does.
    """

    def __init__(
        self,
        num_heads,
        hidden_dim,
        intermediate_dim,
        num_key_value_heads=None,
        head_dim=None,
        activation="gelu",
        gated_ffn=False,
        norm="layer_norm",
        layer_norm_epsilon=1e-5,
        norm_first=True,
        use_bias=True,
        attention_bias=None,
        dropout=0.0,
        rotary_max_wavelength=None,
        rotary_scaling_factor=1.0,
        initializer_range=0.02,
        cross_attention=False,
        attention_scale=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_heads = num_heads
        self.hidden_dim = hidden_dim
        self.intermediate_dim = intermediate_dim
        self.num_key_value_heads = num_key_value_heads
        self.head_dim = head_dim
        self.activation = activation
        self.gated_ffn = gated_ffn
        self.norm = check_choice("norm", norm, tuple(NORMS))
        self.layer_norm_epsilon = check_float("layer_norm_epsilon", layer_norm_epsilon, low=0.0)
        self.norm_first = norm_first
        self.use_bias = use_bias
        self.attention_bias = use_bias if attention_bias is None else attention_bias
        self.dropout = check_float("dropout", dropout, low=0.0, high=1.0, high_inclusive=False)
        self.rotary_max_wavelength = rotary_max_wavelength
        self.rotary_scaling_factor = rotary_scaling_factor
        self.initializer_range = initializer_range
        self.attention_scale = attention_scale

        # === Layers ===
        attention_kwargs = dict(
            num_key_value_heads=num_key_value_heads,
            head_dim=head_dim,
            use_bias=self.attention_bias,
            output_bias=use_bias,
            dropout=dropout,
            initializer_range=initializer_range,
            scale=attention_scale,
            dtype=self.dtype_policy,
        )
        self.attention_norm = NORMS[norm](epsilon=layer_norm_epsilon, dtype=self.dtype_policy, name="attention_norm")
        self.attention = MultiHeadAttention(
            num_heads,
            hidden_dim,
            rotary_max_wavelength=rotary_max_wavelength,
            rotary_scaling_factor=rotary_scaling_factor,
            name="attention",
            **attention_kwargs,
        )
        self.cross_attention_norm = self.cross_attention = None
        if cross_attention:
            self.cross_attention_norm = NORMS[norm](
                epsilon=layer_norm_epsilon, dtype=self.dtype_policy, name="cross_attention_norm"
            )
            self.cross_attention = MultiHeadAttention(
                num_heads, hidden_dim, cross_attention=True, name="cross_attention", **attention_kwargs
            )
        self.ffn_norm = NORMS[norm](epsilon=layer_norm_epsilon, dtype=self.dtype_policy, name="ffn_norm")
        self.ffn = FeedForward(
            hidden_dim,
            intermediate_dim,
            activation=activation,
            gated=gated_ffn,
            use_bias=use_bias,
            dropout=dropout,
            initializer_range=initializer_range,
            dtype=self.dtype_policy,
            name="ffn",
        )
        self.residual_dropout = keras.layers.Dropout(dropout, dtype=self.dtype_policy)

    def build(self, input_shape):
        for layer in (self.attention_norm, self.attention, self.ffn_norm, self.ffn):
            layer.build(input_shape)
        if self.cross_attention is not None:
            self.cross_attention_norm.build(input_shape)
            self.cross_attention.build(input_shape, (None, None, self.hidden_dim))
        self.built = True

    def call(
        self, inputs, attention_mask=None, positions=None, cache=None, cache_index=0, return_attention_scores=False,
        training=None, attention_bias=None, context=None, context_mask=None, cross_cache=None,
    ):
        attended = self.attention(
            self.attention_norm(inputs) if self.norm_first else inputs,
            attention_mask=attention_mask,
            positions=positions,
            cache=cache,
            cache_index=cache_index,
            attention_bias=attention_bias,
            return_attention_scores=return_attention_scores,
            training=training,
        )
        extra = ()
        if cache is not None or return_attention_scores:
            attended, *extra = attended
        x = self._residual(inputs, attended, self.attention_norm, training)
        if self.cross_attention is not None:
            if context is None and cross_cache is None:
                raise ValueError(
                    "Invalid value for argument `context`. Expected the encoder output (or a `cross_cache`) for "
                    "a block with cross_attention=True. Received: context=None"
                )
            attended = self.cross_attention(
                self.cross_attention_norm(x) if self.norm_first else x,
                attention_mask=context_mask,
                cache=cross_cache,
                context=context,
                training=training,
            )
            if cross_cache is not None:
                attended = attended[0]  # the cross cache comes back unchanged
            x = self._residual(x, attended, self.cross_attention_norm, training)
        x = self._residual(x, self.ffn(self.ffn_norm(x) if self.norm_first else x, training=training), self.ffn_norm,
                           training)
        return (x, *extra) if extra else x

    def _residual(self, x, branch, norm, training):
        """`x + dropout(branch)`, normalized after the sum in a post-norm block."""
        x = x + self.residual_dropout(branch, training=training)
        return x if self.norm_first else norm(x)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            num_heads=self.num_heads,
            hidden_dim=self.hidden_dim,
            intermediate_dim=self.intermediate_dim,
            num_key_value_heads=self.num_key_value_heads,
            head_dim=self.head_dim,
            activation=self.activation,
            gated_ffn=self.gated_ffn,
            norm=self.norm,
            layer_norm_epsilon=self.layer_norm_epsilon,
            norm_first=self.norm_first,
            use_bias=self.use_bias,
            attention_bias=self.attention_bias,
            dropout=self.dropout,
            rotary_max_wavelength=self.rotary_max_wavelength,
            rotary_scaling_factor=self.rotary_scaling_factor,
            initializer_range=self.initializer_range,
            cross_attention=self.cross_attention is not None,
            attention_scale=self.attention_scale,
        )
        return config
