"""Llama's block: pre-RMSNorm, rotary grouped-query attention and a SwiGLU MLP (Touvron et al., 2023)."""

import keras

from tfllm.layers import FeedForward, MultiHeadAttention, RMSNorm
from tfllm.layers.blocks import TransformerBlock


@keras.saving.register_keras_serializable(package="tfllm")
class LlamaBlock(TransformerBlock):
    """`h = x + attn(input_layernorm(x)); y = h + mlp(post_attention_layernorm(h))`.

    The biases are independent, as in transformers: Llama's `attention_bias` sets both
    `attention_bias` and `attention_output_bias`, Qwen2 has query/key/value biases only.

    Args:
        num_heads: query heads.
        hidden_dim: width of the residual stream.
        intermediate_dim: width of the SwiGLU inner layer.
        num_key_value_heads: key/value heads (grouped-query attention). Defaults to `num_heads`.
        head_dim: width of each head. Defaults to `hidden_dim // num_heads`.
        layer_norm_epsilon: epsilon of both RMSNorms.
        rope_max_wavelength: the rotary base (`rope_theta`).
        rope_scaling_factor: linear rotary scaling.
        attention_bias: biases on the query/key/value projections.
        attention_output_bias: bias on the attention output projection (`o_proj`).
        mlp_bias: biases on the gate, up and down projections.
        dropout: dropout rate on attention probabilities, the MLP and both residual branches.
        initializer_range: standard deviation of the kernels' normal initializer.

    See `TransformerBlock` for the call arguments and outputs.
    """

    def __init__(self, num_heads, hidden_dim, intermediate_dim, num_key_value_heads=None, head_dim=None,
                 layer_norm_epsilon=1e-6, rope_max_wavelength=10000.0, rope_scaling_factor=1.0, attention_bias=False,
                 attention_output_bias=False, mlp_bias=False, dropout=0.0, initializer_range=0.02, **kwargs):
        super().__init__(layer_norm_epsilon, dropout, **kwargs)
        self.num_heads = num_heads
        self.hidden_dim = hidden_dim
        self.intermediate_dim = intermediate_dim
        self.num_key_value_heads = num_key_value_heads
        self.head_dim = head_dim
        self.rope_max_wavelength = rope_max_wavelength
        self.rope_scaling_factor = rope_scaling_factor
        self.attention_bias = attention_bias
        self.attention_output_bias = attention_output_bias
        self.mlp_bias = mlp_bias
        self.initializer_range = initializer_range

        # === Layers ===
        policy = self.dtype_policy
        self.attention_norm = RMSNorm(self.layer_norm_epsilon, dtype=policy, name="attention_norm")
        self.attention = MultiHeadAttention(
            num_heads, hidden_dim, num_key_value_heads=num_key_value_heads, head_dim=head_dim,
            use_bias=attention_bias, output_bias=attention_output_bias, dropout=dropout,
            rotary_max_wavelength=rope_max_wavelength, rotary_scaling_factor=rope_scaling_factor,
            initializer_range=initializer_range, dtype=policy, name="attention",
        )
        self.ffn_norm = RMSNorm(self.layer_norm_epsilon, dtype=policy, name="ffn_norm")
        self.ffn = FeedForward(hidden_dim, intermediate_dim, activation="silu", gated=True, use_bias=mlp_bias,
                               dropout=dropout, initializer_range=initializer_range, dtype=policy, name="ffn")

    def get_config(self):
        config = super().get_config()
        config.update(
            num_heads=self.num_heads,
            hidden_dim=self.hidden_dim,
            intermediate_dim=self.intermediate_dim,
            num_key_value_heads=self.num_key_value_heads,
            head_dim=self.head_dim,
            rope_max_wavelength=self.rope_max_wavelength,
            rope_scaling_factor=self.rope_scaling_factor,
            attention_bias=self.attention_bias,
            attention_output_bias=self.attention_output_bias,
            mlp_bias=self.mlp_bias,
            initializer_range=self.initializer_range,
        )
        return config
