"""BERT's block: post-LayerNorm, as the original Transformer (Vaswani et al., 2017; Devlin et al., 2019)."""

import keras

from tfllm.layers import FeedForward, LayerNorm, MultiHeadAttention
from tfllm.layers.blocks import TransformerBlock


@keras.saving.register_keras_serializable(package="tfllm")
class BertBlock(TransformerBlock):
    """`h = attention_norm(x + attn(x)); y = ffn_norm(h + ffn(h))`: the norms after the residual sums.

    Args:
        num_heads: attention heads.
        hidden_dim: width of the residual stream.
        intermediate_dim: width of the feed-forward inner layer.
        layer_norm_epsilon: epsilon of both LayerNorms.
        dropout: dropout rate on attention probabilities, the feed-forward and both residual branches.
        activation: feed-forward activation ("gelu" is BERT's exact erf GELU).
        initializer_range: standard deviation of the kernels' normal initializer.

    See `TransformerBlock` for the call arguments and outputs.
    """

    def __init__(self, num_heads, hidden_dim, intermediate_dim, layer_norm_epsilon=1e-12, dropout=0.0,
                 activation="gelu", initializer_range=0.02, **kwargs):
        super().__init__(layer_norm_epsilon, dropout, **kwargs)
        self.num_heads = num_heads
        self.hidden_dim = hidden_dim
        self.intermediate_dim = intermediate_dim
        self.activation = activation
        self.initializer_range = initializer_range

        # === Layers ===
        policy = self.dtype_policy
        self.attention_norm = LayerNorm(self.layer_norm_epsilon, dtype=policy, name="attention_norm")
        self.attention = MultiHeadAttention(num_heads, hidden_dim, dropout=dropout, initializer_range=initializer_range,
                                            dtype=policy, name="attention")
        self.ffn_norm = LayerNorm(self.layer_norm_epsilon, dtype=policy, name="ffn_norm")
        self.ffn = FeedForward(hidden_dim, intermediate_dim, activation=activation, dropout=dropout,
                               initializer_range=initializer_range, dtype=policy, name="ffn")

    def call(self, inputs, attention_mask=None, positions=None, cache=None, cache_index=0, attention_bias=None,
             return_attention_scores=False, training=None):
        attended, extras = self.attend(
            inputs, attention_mask=attention_mask, positions=positions, cache=cache, cache_index=cache_index,
            attention_bias=attention_bias, return_attention_scores=return_attention_scores, training=training,
        )
        x = self.attention_norm(self.residual(inputs, attended, training))
        x = self.ffn_norm(self.residual(x, self.ffn(x, training=training), training))
        return (x, *extras) if extras else x

    def get_config(self):
        config = super().get_config()
        config.update(
            num_heads=self.num_heads,
            hidden_dim=self.hidden_dim,
            intermediate_dim=self.intermediate_dim,
            activation=self.activation,
            initializer_range=self.initializer_range,
        )
        return config
