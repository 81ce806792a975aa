"""GPT-2: token + learned position embeddings, pre-norm decoder blocks, a final LayerNorm."""

import keras

from tfllm.errors import check_int
from tfllm.layers import LayerNorm, PositionEmbedding, TokenEmbedding
from tfllm.models.decoder import DecoderBackbone
from tfllm.models.gpt2.block import GPT2Block


@keras.saving.register_keras_serializable(package="tfllm")
class GPT2Backbone(DecoderBackbone):
    """The GPT-2 decoder stack: token ids and padding mask in, final hidden states out.

    Args:
        vocabulary_size: number of tokens.
        num_layers: number of decoder blocks.
        num_heads: attention heads per block.
        hidden_dim: width of the residual stream.
        intermediate_dim: width of the feed-forward inner layer.
        max_sequence_length: number of learned positions.
        layer_norm_epsilon: epsilon of every LayerNorm.
        dropout: dropout rate on embeddings, attention and residual branches.
        activation: feed-forward activation ("gelu_tanh" is GPT-2's `gelu_new`).
        initializer_range: standard deviation of the weight initializer.

    Call arguments:
        inputs: a tokenizer's dict (`input_ids`, `attention_mask`) or a tensor of token ids.
        training: enables dropout.
        output_attentions: also return every layer's attention probabilities.
        output_hidden_states: also return the embeddings and every layer's output.

    Returns:
        A dict with `"last_hidden_state"`, `(batch_size, sequence_length, hidden_dim)`, and what
        the flags ask for (see `DecoderBackbone`).

    Example:
    >>> backbone = GPT2Backbone(vocabulary_size=100, num_layers=2, num_heads=2, hidden_dim=16,
    ...                         intermediate_dim=32, max_sequence_length=32)
    >>> tuple(backbone(np.array([[1, 2, 3]]))["last_hidden_state"].shape)
    (1, 3, 16)
    """

    model_type = "gpt2"

    def __init__(
        self,
        vocabulary_size,
        num_layers,
        num_heads,
        hidden_dim,
        intermediate_dim,
        max_sequence_length=1024,
        layer_norm_epsilon=1e-5,
        dropout=0.0,
        activation="gelu_tanh",
        initializer_range=0.02,
        **kwargs,
    ):
        super().__init__(**kwargs)
        # === Config ===
        self.vocabulary_size = vocabulary_size
        self.num_layers = check_int("num_layers", num_layers, minimum=1)
        self.num_heads = num_heads
        self.hidden_dim = hidden_dim
        self.intermediate_dim = intermediate_dim
        self.max_sequence_length = check_int("max_sequence_length", max_sequence_length, minimum=1)
        self.layer_norm_epsilon = layer_norm_epsilon
        self.dropout = dropout
        self.activation = activation
        self.initializer_range = initializer_range

        # === Layers ===
        policy = self.dtype_policy
        self.token_embedding = TokenEmbedding(
            vocabulary_size, hidden_dim, initializer_range, dtype=policy, name="token_embedding"
        )
        self.position_embedding = PositionEmbedding(
            max_sequence_length, hidden_dim, initializer_range, dtype=policy, name="position_embedding"
        )
        self.embeddings_dropout = keras.layers.Dropout(dropout, dtype=policy, name="embeddings_dropout")
        self.transformer_layers = [
            GPT2Block(
                num_heads,
                hidden_dim,
                intermediate_dim,
                activation=activation,
                layer_norm_epsilon=layer_norm_epsilon,
                dropout=dropout,
                initializer_range=initializer_range,
                dtype=policy,
                name=f"transformer_layer_{i}",
            )
            for i in range(num_layers)
        ]
        self.layer_norm = LayerNorm(layer_norm_epsilon, dtype=policy, name="layer_norm")

    def build(self, input_shape=None):
        if not self.built:
            self.position_embedding.build()
        super().build(input_shape)

    def embed(self, token_ids, positions):
        return self.token_embedding(token_ids) + self.position_embedding(positions)

    def get_config(self):
        config = super().get_config()
        config.update(
            vocabulary_size=self.vocabulary_size,
            num_layers=self.num_layers,
            num_heads=self.num_heads,
            hidden_dim=self.hidden_dim,
            intermediate_dim=self.intermediate_dim,
            max_sequence_length=self.max_sequence_length,
            layer_norm_epsilon=self.layer_norm_epsilon,
            dropout=self.dropout,
            activation=self.activation,
            initializer_range=self.initializer_range,
        )
        return config
