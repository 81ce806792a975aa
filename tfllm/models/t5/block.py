"""T5's blocks: pre-RMSNorm without biases or score scaling; the decoder's adds cross-attention (Raffel et al., 2020)."""

import keras

from tfllm.errors import invalid_argument
from tfllm.layers import RMSNorm
from tfllm.layers.blocks import TransformerBlock


@keras.saving.register_keras_serializable(package="tfllm")
class T5Block(TransformerBlock):
    """The encoder's block: `h = x + attn(norm(x)); y = h + ffn(norm(h))`, no biases, scores not
    scaled (T5 folds `1 / sqrt(head_dim)` into its initialization). The stack adds its relative
    position bias to the self-attention scores (`attention_bias`).

    Args:
        num_heads, hidden_dim, intermediate_dim, layer_norm_epsilon, dropout, initializer_range:
            see `TransformerBlock` (`hidden_dim` is `d_model`, `intermediate_dim` is `d_ff`).
        head_dim: width of each head (`d_kv`).
        activation: feed-forward activation: "relu" (T5 v1.0) or "gelu_tanh" (v1.1).
        gated_ffn: gated feed-forward, `act(gate(x)) * up(x)` (v1.1).

    See `TransformerBlock` for the call arguments and outputs.
    """

    has_cross_attention = False  # the decoder's block (`T5DecoderBlock`) adds it

    def __init__(self, num_heads, hidden_dim, intermediate_dim, head_dim=None, layer_norm_epsilon=1e-6,
                 activation="relu", gated_ffn=False, dropout=0.0, initializer_range=0.02, **kwargs):
        super().__init__(num_heads, hidden_dim, intermediate_dim, activation, layer_norm_epsilon, dropout,
                         initializer_range, **kwargs)
        self.head_dim = head_dim
        self.gated_ffn = gated_ffn
        # === Layers ===
        self.create_sublayers(RMSNorm, attention=self.attention_options, ffn=dict(gated=gated_ffn, use_bias=False),
                              cross_attention=self.attention_options if self.has_cross_attention else None)

    @property
    def attention_options(self):
        """`MultiHeadAttention` options of both attentions: no biases, scores not scaled."""
        return dict(head_dim=self.head_dim, use_bias=False, scale=1.0)

    def get_config(self):
        config = super().get_config()
        config.update(head_dim=self.head_dim, gated_ffn=self.gated_ffn)
        return config


@keras.saving.register_keras_serializable(package="tfllm")
class T5DecoderBlock(T5Block):
    """The decoder's block: causal self-attention, cross-attention to the encoder's output, feed-forward,
    each pre-RMSNorm with a residual.

    Takes `T5Block`'s arguments.

    Call arguments:
        context: `(batch_size, context_length, hidden_dim)` the cross-attention attends to (the
            encoder's output); not needed when `cross_cache` is given.
        context_mask: `(batch_size, sequence_length or 1, context_length)` bool, True for real
            context positions. None attends to every position.
        cross_cache: `(batch_size, 2, context_length, num_heads, head_dim)`, the context's keys
            and values from `cross_attention.context_cache(context)`, computed once for decoding.
        The others as `TransformerBlock`'s; `return_attention_scores` returns the self-attention's.
    """

    has_cross_attention = True

    def build(self, input_shape):
        super().build(input_shape)
        self.cross_attention_norm.build(input_shape)
        self.cross_attention.build(input_shape, (None, None, self.hidden_dim))

    def call(self, inputs, attention_mask=None, positions=None, cache=None, cache_index=0, attention_bias=None,
             return_attention_scores=False, training=None, context=None, context_mask=None, cross_cache=None):
        if context is None and cross_cache is None:
            raise invalid_argument("context", "the encoder output (or a `cross_cache`) for T5's decoder block", None)
        attended, extras = self.attend(
            self.attention_norm(inputs), attention_mask=attention_mask, positions=positions, cache=cache,
            cache_index=cache_index, attention_bias=attention_bias,
            return_attention_scores=return_attention_scores, training=training,
        )
        x = self.residual(inputs, attended, training)
        attended = self.cross_attention(self.cross_attention_norm(x), attention_mask=context_mask, cache=cross_cache,
                                        context=context, training=training)
        if cross_cache is not None:
            attended = attended[0]  # the cross cache comes back unchanged
        x = self.residual(x, attended, training)
        x = self.residual(x, self.ffn(self.ffn_norm(x), training=training), training)
        return (x, *extras) if extras else x
