"""BERT's block: post-LayerNorm, as the original Transformer (Vaswani et al., 2017; Devlin et al., 2019)."""

import keras

from tfllm.layers import LayerNorm
from tfllm.layers.blocks import TransformerBlock


@keras.saving.register_keras_serializable(package="tfllm")
class BertBlock(TransformerBlock):
    """`h = attention_norm(x + attn(x)); y = ffn_norm(h + ffn(h))`: the norms after the residual sums.

    Args:
        num_heads, hidden_dim, intermediate_dim, layer_norm_epsilon, dropout, initializer_range:
            see `TransformerBlock`.
        activation: feed-forward activation ("gelu" is BERT's exact erf GELU).

    See `TransformerBlock` for the call arguments and outputs.
    """

    def __init__(self, num_heads, hidden_dim, intermediate_dim, activation="gelu", layer_norm_epsilon=1e-12,
                 dropout=0.0, initializer_range=0.02, **kwargs):
        super().__init__(num_heads, hidden_dim, intermediate_dim, activation, layer_norm_epsilon, dropout,
                         initializer_range, **kwargs)
        self.create_sublayers(LayerNorm)

    def call(self, inputs, attention_mask=None, positions=None, cache=None, cache_index=0, attention_bias=None,
             return_attention_scores=False, training=None):
        attended, extras = self.attend(
            inputs, attention_mask=attention_mask, positions=positions, cache=cache, cache_index=cache_index,
            attention_bias=attention_bias, return_attention_scores=return_attention_scores, training=training,
        )
        x = self.attention_norm(self.residual(inputs, attended, training))
        x = self.ffn_norm(self.residual(x, self.ffn(x, training=training), training))
        return (x, *extras) if extras else x
