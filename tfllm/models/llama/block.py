"""Llama's block: pre-RMSNorm, rotary grouped-query attention and a SwiGLU MLP (Touvron et al., 2023)."""

import keras

from tfllm.layers import RMSNorm
from tfllm.layers.blocks import TransformerBlock


@keras.saving.register_keras_serializable(package="tfllm")
class LlamaBlock(TransformerBlock):
    """`h = x + attn(input_layernorm(x)); y = h + mlp(post_attention_layernorm(h))`.

    The biases are independent, as in transformers: Llama's `attention_bias` sets both
    `attention_bias` and `attention_output_bias`, Qwen2 has query/key/value biases only.

    Args:
        num_heads, hidden_dim, intermediate_dim, layer_norm_epsilon, dropout, initializer_range:
            see `TransformerBlock` (`intermediate_dim` is the SwiGLU inner width).
        num_key_value_heads: key/value heads (grouped-query attention). Defaults to `num_heads`.
        head_dim: width of each head. Defaults to `hidden_dim // num_heads`.
        rope_max_wavelength: the rotary base (`rope_theta`).
        rope_scaling_factor: linear rotary scaling.
        attention_bias: biases on the query/key/value projections.
        attention_output_bias: bias on the attention output projection (`o_proj`).
        mlp_bias: biases on the gate, up and down projections.
        activation: the gated MLP's activation (`hidden_act`; SwiGLU's "silu").

    See `TransformerBlock` for the call arguments and outputs.
    """

    def __init__(self, num_heads, hidden_dim, intermediate_dim, num_key_value_heads=None, head_dim=None,
                 layer_norm_epsilon=1e-6, rope_max_wavelength=10000.0, rope_scaling_factor=1.0, attention_bias=False,
                 attention_output_bias=False, mlp_bias=False, dropout=0.0, initializer_range=0.02, activation="silu",
                 **kwargs):
        super().__init__(num_heads, hidden_dim, intermediate_dim, activation, layer_norm_epsilon, dropout,
                         initializer_range, **kwargs)
        self.num_key_value_heads = num_key_value_heads
        self.head_dim = head_dim
        self.rope_max_wavelength = rope_max_wavelength
        self.rope_scaling_factor = rope_scaling_factor
        self.attention_bias = attention_bias
        self.attention_output_bias = attention_output_bias
        self.mlp_bias = mlp_bias
        # === Layers ===
        self.create_sublayers(
            RMSNorm,
            attention=dict(num_key_value_heads=num_key_value_heads, head_dim=head_dim, use_bias=attention_bias,
                           output_bias=attention_output_bias, rotary_max_wavelength=rope_max_wavelength,
                           rotary_scaling_factor=rope_scaling_factor),
            ffn=dict(gated=True, use_bias=mlp_bias),
        )

    def get_config(self):
        config = super().get_config()
        config.update(
            num_key_value_heads=self.num_key_value_heads,
            head_dim=self.head_dim,
            rope_max_wavelength=self.rope_max_wavelength,
            rope_scaling_factor=self.rope_scaling_factor,
            attention_bias=self.attention_bias,
            attention_output_bias=self.attention_output_bias,
            mlp_bias=self.mlp_bias,
        )
        return config
