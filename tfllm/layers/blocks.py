"""The residual wiring every transformer block shares; each family composes its own block on it."""

import keras

from tfllm.errors import check_float
from tfllm.layers.attention import MultiHeadAttention
from tfllm.layers.feedforward import FeedForward


class TransformerBlock(keras.layers.Layer):
    """A pre-norm transformer block: `h = x + attn(attention_norm(x)); y = h + ffn(ffn_norm(h))`.

    A family's block subclasses this and, in its constructor, creates its sublayers with
    `create_sublayers`: the norm class and the `MultiHeadAttention` and `FeedForward` options its
    paper describes (biases, rotary positions, grouped-query heads, gating, ...). A post-norm
    family (BERT) or one with more sublayers (T5's decoder) overrides `call` and reuses `attend`
    and `residual`.

    Args:
        num_heads: query heads.
        hidden_dim: width of the residual stream.
        intermediate_dim: width of the feed-forward inner layer.
        activation: the feed-forward's activation (see `tfllm.layers.ACTIVATIONS`).
        layer_norm_epsilon: epsilon of the block's norms.
        dropout: dropout rate on attention probabilities, the feed-forward and the residual branches.
        initializer_range: standard deviation of the kernels' normal initializer.

    Call arguments:
        inputs: `(batch_size, sequence_length, hidden_dim)`.
        attention_mask: `(batch_size, sequence_length, key_length)` bool.
        positions: `(batch_size, sequence_length)` int positions (for rotary embeddings).
        cache: `(batch_size, 2, cache_length, num_key_value_heads, head_dim)` or None.
        cache_index: where this call's keys and values are written into `cache`.
        attention_bias: added to the self-attention scores, broadcastable to `(batch_size,
            num_heads, sequence_length, key_length)` (T5's relative position bias).
        return_attention_scores: also return the self-attention probabilities.
        training: enables dropout.

    Returns:
        `(batch_size, sequence_length, hidden_dim)`; with a cache, `(outputs, cache)`; with
        `return_attention_scores`, the probabilities `(batch_size, num_heads, sequence_length,
        key_length)` are appended, as `MultiHeadAttention` does.
    """

    def __init__(self, num_heads, hidden_dim, intermediate_dim, activation="gelu", layer_norm_epsilon=1e-5,
                 dropout=0.0, initializer_range=0.02, **kwargs):
        super().__init__(**kwargs)
        self.num_heads = num_heads
        self.hidden_dim = hidden_dim
        self.intermediate_dim = intermediate_dim
        self.activation = activation
        self.layer_norm_epsilon = check_float("layer_norm_epsilon", layer_norm_epsilon, low=0.0)
        self.dropout = check_float("dropout", dropout, low=0.0, high=1.0, high_inclusive=False)
        self.initializer_range = initializer_range
        self.residual_dropout = keras.layers.Dropout(self.dropout, dtype=self.dtype_policy)

    def create_sublayers(self, norm, attention=None, ffn=None, cross_attention=None):
        """Creates `attention_norm`, `attention`, `ffn_norm` and `ffn` (and `cross_attention_norm`,
        `cross_attention` between them for an encoder-decoder's decoder block).

        Args:
            norm: the norm class (`LayerNorm`, `RMSNorm`).
            attention: `MultiHeadAttention` options beyond the block's sizes, dropout and initializer.
            ffn: `FeedForward` options beyond the block's sizes, activation, dropout and initializer.
            cross_attention: the cross-attention's `MultiHeadAttention` options, or None for none.
        """
        self.attention_norm, self.attention = self.attention_sublayer(norm, "attention", **(attention or {}))
        if cross_attention is not None:
            self.cross_attention_norm, self.cross_attention = self.attention_sublayer(
                norm, "cross_attention", cross_attention=True, **cross_attention
            )
        self.ffn_norm = norm(self.layer_norm_epsilon, dtype=self.dtype_policy, name="ffn_norm")
        self.ffn = FeedForward(self.hidden_dim, self.intermediate_dim, activation=self.activation, name="ffn",
                               dropout=self.dropout, initializer_range=self.initializer_range, dtype=self.dtype_policy,
                               **(ffn or {}))

    def attention_sublayer(self, norm, name, **options):
        """`(norm, attention)` named `{name}_norm` and `name`: a norm and a `MultiHeadAttention` with `options`."""
        attention = MultiHeadAttention(self.num_heads, self.hidden_dim, dropout=self.dropout,
                                       initializer_range=self.initializer_range, dtype=self.dtype_policy, name=name,
                                       **options)
        return norm(self.layer_norm_epsilon, dtype=self.dtype_policy, name=f"{name}_norm"), attention

    def build(self, input_shape):
        for layer in (self.attention_norm, self.attention, self.ffn_norm, self.ffn):
            layer.build(input_shape)
        self.built = True

    def call(self, inputs, attention_mask=None, positions=None, cache=None, cache_index=0, attention_bias=None,
             return_attention_scores=False, training=None):
        attended, extras = self.attend(
            self.attention_norm(inputs), attention_mask=attention_mask, positions=positions, cache=cache,
            cache_index=cache_index, attention_bias=attention_bias,
            return_attention_scores=return_attention_scores, training=training,
        )
        x = self.residual(inputs, attended, training)
        x = self.residual(x, self.ffn(self.ffn_norm(x), training=training), training)
        return (x, *extras) if extras else x

    def attend(self, x, cache=None, return_attention_scores=False, **kwargs):
        """Self-attention of `x`: returns `(outputs, extras)`, `extras` the updated cache and/or the
        probabilities when asked for (a tuple, empty without either)."""
        outputs = self.attention(x, cache=cache, return_attention_scores=return_attention_scores, **kwargs)
        if cache is None and not return_attention_scores:
            return outputs, ()
        return outputs[0], tuple(outputs[1:])

    def residual(self, x, branch, training):
        """`x + dropout(branch)`."""
        return x + self.residual_dropout(branch, training=training)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            num_heads=self.num_heads,
            hidden_dim=self.hidden_dim,
            intermediate_dim=self.intermediate_dim,
            activation=self.activation,
            layer_norm_epsilon=self.layer_norm_epsilon,
            dropout=self.dropout,
            initializer_range=self.initializer_range,
        )
        return config
