"""Llama (and Mistral, Qwen2): token embeddings, RMSNorm pre-norm blocks with rotary GQA attention and SwiGLU."""

import keras

from tfllm.errors import check_choice, check_int
from tfllm.layers import RMSNorm, TokenEmbedding
from tfllm.models.decoder import DecoderBackbone
from tfllm.models.llama.block import LlamaBlock
from tfllm.models.llama.variants import VARIANTS


@keras.saving.register_keras_serializable(package="tfllm")
class LlamaBackbone(DecoderBackbone):
    """The Llama decoder stack: token ids and padding mask in, final hidden states out.

    No position embedding: rotary embeddings are applied to queries and keys inside attention,
    at positions that count only real tokens (left padding does not shift them).

    Args:
        vocabulary_size: number of tokens.
        num_layers: number of decoder blocks.
        num_heads: query heads per block.
        hidden_dim: width of the residual stream.
        intermediate_dim: width of the SwiGLU inner layer.
        num_key_value_heads: key/value heads (grouped-query attention). Defaults to `num_heads`.
        head_dim: width of each head. Defaults to `hidden_dim // num_heads`.
        max_sequence_length: the longest sequence the model is used with.
        layer_norm_epsilon: epsilon of every RMSNorm.
        rope_max_wavelength: the rotary base (`rope_theta`).
        rope_scaling_factor: linear rotary scaling (positions are divided by it).
        attention_bias: biases on the query/key/value projections (Llama's `attention_bias`, Qwen2).
        attention_output_bias: bias on the attention output projection (Llama's `attention_bias`).
        mlp_bias: biases on the feed-forward projections (Llama's `mlp_bias`).
        dropout: dropout rate on attention probabilities, the feed-forward and residual branches.
        initializer_range: standard deviation of the weight initializer.
        variant: the checkpoint's `model_type` ("llama", "mistral" or "qwen2"), written back on save
            (see `tfllm.models.llama.variants`).

    Call arguments:
        inputs: a tokenizer's dict (`input_ids`, `attention_mask`) or a tensor of token ids.
        training: enables dropout.
        output_attentions: also return every layer's attention probabilities.
        output_hidden_states: also return the embeddings and every layer's output.

    Returns:
        A dict with `"last_hidden_state"`, `(batch_size, sequence_length, hidden_dim)`, and what
        the flags ask for (see `DecoderBackbone`).

    Example:
    >>> backbone = LlamaBackbone(vocabulary_size=100, num_layers=2, num_heads=4, num_key_value_heads=2,
    ...                          hidden_dim=16, intermediate_dim=32)
    >>> tuple(backbone(np.array([[1, 2, 3]]))["last_hidden_state"].shape)
    (1, 3, 16)
    """

    model_type = "llama"

    def __init__(
        self,
        vocabulary_size,
        num_layers,
        num_heads,
        hidden_dim,
        intermediate_dim,
        num_key_value_heads=None,
        head_dim=None,
        max_sequence_length=2048,
        layer_norm_epsilon=1e-6,
        rope_max_wavelength=10000.0,
        rope_scaling_factor=1.0,
        attention_bias=False,
        attention_output_bias=False,
        mlp_bias=False,
        dropout=0.0,
        initializer_range=0.02,
        variant="llama",
        **kwargs,
    ):
        super().__init__(**kwargs)
        # === Config ===
        self.vocabulary_size = vocabulary_size
        self.num_layers = check_int("num_layers", num_layers, minimum=1)
        self.num_heads = num_heads
        self.hidden_dim = hidden_dim
        self.intermediate_dim = intermediate_dim
        self.num_key_value_heads = num_heads if num_key_value_heads is None else num_key_value_heads
        self.head_dim = head_dim
        self.max_sequence_length = check_int("max_sequence_length", max_sequence_length, minimum=1)
        self.layer_norm_epsilon = layer_norm_epsilon
        self.rope_max_wavelength = rope_max_wavelength
        self.rope_scaling_factor = rope_scaling_factor
        self.attention_bias = attention_bias
        self.attention_output_bias = attention_output_bias
        self.mlp_bias = mlp_bias
        self.dropout = dropout
        self.initializer_range = initializer_range
        self.variant = check_choice("variant", variant, tuple(VARIANTS))

        # === Layers ===
        policy = self.dtype_policy
        self.token_embedding = TokenEmbedding(
            vocabulary_size, hidden_dim, initializer_range, dtype=policy, name="token_embedding"
        )
        self.embeddings_dropout = keras.layers.Dropout(dropout, dtype=policy, name="embeddings_dropout")
        self.transformer_layers = [
            LlamaBlock(
                num_heads,
                hidden_dim,
                intermediate_dim,
                num_key_value_heads=self.num_key_value_heads,
                head_dim=head_dim,
                layer_norm_epsilon=layer_norm_epsilon,
                rope_max_wavelength=rope_max_wavelength,
                rope_scaling_factor=rope_scaling_factor,
                attention_bias=attention_bias,
                attention_output_bias=attention_output_bias,
                mlp_bias=mlp_bias,
                dropout=dropout,
                initializer_range=initializer_range,
                dtype=policy,
                name=f"transformer_layer_{i}",
            )
            for i in range(num_layers)
        ]
        self.layer_norm = RMSNorm(layer_norm_epsilon, dtype=policy, name="layer_norm")

    def get_config(self):
        config = super().get_config()
        config.update(
            vocabulary_size=self.vocabulary_size,
            num_layers=self.num_layers,
            num_heads=self.num_heads,
            hidden_dim=self.hidden_dim,
            intermediate_dim=self.intermediate_dim,
            num_key_value_heads=self.num_key_value_heads,
            head_dim=self.head_dim,
            max_sequence_length=self.max_sequence_length,
            layer_norm_epsilon=self.layer_norm_epsilon,
            rope_max_wavelength=self.rope_max_wavelength,
            rope_scaling_factor=self.rope_scaling_factor,
            attention_bias=self.attention_bias,
            attention_output_bias=self.attention_output_bias,
            mlp_bias=self.mlp_bias,
            dropout=self.dropout,
            initializer_range=self.initializer_range,
            variant=self.variant,
        )
        return config
