"""GPT-2's block: pre-LayerNorm, biased multi-head attention and a GELU MLP (Radford et al., 2019)."""

import keras

from tfllm.layers import FeedForward, LayerNorm, MultiHeadAttention
from tfllm.layers.blocks import TransformerBlock


@keras.saving.register_keras_serializable(package="tfllm")
class GPT2Block(TransformerBlock):
    """`h = x + attn(ln_1(x)); y = h + mlp(ln_2(h))`, every projection with a bias.

    Args:
        num_heads: attention heads.
        hidden_dim: width of the residual stream.
        intermediate_dim: width of the MLP's inner layer.
        layer_norm_epsilon: epsilon of both LayerNorms.
        dropout: dropout rate on attention probabilities, the MLP and both residual branches.
        activation: the MLP's activation ("gelu_tanh" is GPT-2's `gelu_new`).
        initializer_range: standard deviation of the kernels' normal initializer.

    See `TransformerBlock` for the call arguments and outputs.
    """

    def __init__(self, num_heads, hidden_dim, intermediate_dim, layer_norm_epsilon=1e-5, dropout=0.0,
                 activation="gelu_tanh", initializer_range=0.02, **kwargs):
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
