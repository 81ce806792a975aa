"""GPT-2's block: pre-LayerNorm, biased multi-head attention and a GELU MLP (Radford et al., 2019)."""

import keras

from tfllm.layers import LayerNorm
from tfllm.layers.blocks import TransformerBlock


@keras.saving.register_keras_serializable(package="tfllm")
class GPT2Block(TransformerBlock):
    """`h = x + attn(ln_1(x)); y = h + mlp(ln_2(h))`, every projection with a bias.

    Args:
        num_heads, hidden_dim, intermediate_dim, layer_norm_epsilon, dropout, initializer_range:
            see `TransformerBlock`.
        activation: the MLP's activation ("gelu_tanh" is GPT-2's `gelu_new`).

    See `TransformerBlock` for the call arguments and outputs.
    """

    def __init__(self, num_heads, hidden_dim, intermediate_dim, activation="gelu_tanh", layer_norm_epsilon=1e-5,
                 dropout=0.0, initializer_range=0.02, **kwargs):
        super().__init__(num_heads, hidden_dim, intermediate_dim, activation, layer_norm_epsilon, dropout,
                         initializer_range, **kwargs)
        self.create_sublayers(LayerNorm)
