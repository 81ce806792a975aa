"""GPT-2: token + learned position embeddings, pre-norm decoder blocks, a final LayerNorm."""

import keras
import tensorflow as tf

from tfllm.errors import check_int
from tfllm.layers import DecoderBlock, LayerNorm, PositionEmbedding, TokenEmbedding, attention_mask, positions_from_mask
from tfllm.models import pretrained
from tfllm.models.inputs import unpack_inputs


@keras.saving.register_keras_serializable(package="tfllm")
class GPT2Backbone(keras.Model):
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

    Returns:
        `(batch_size, sequence_length, hidden_dim)` hidden states.

    Example:
    >>> backbone = GPT2Backbone(vocabulary_size=100, num_layers=2, num_heads=2, hidden_dim=16,
    ...                         intermediate_dim=32, max_sequence_length=32)
    >>> tuple(backbone(np.array([[1, 2, 3]])).shape)
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
            DecoderBlock(
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
        if self.built:
            return
        hidden_shape = (None, None, self.hidden_dim)
        self.token_embedding.build()
        self.position_embedding.build()
        for block in self.transformer_layers:
            block.build(hidden_shape)
        self.layer_norm.build(hidden_shape)
        self.built = True

    def build_from_config(self, config):
        self.build()

    def call(self, inputs, training=None):
        token_ids, padding_mask = unpack_inputs(inputs)
        return self.forward(token_ids, padding_mask, training=training)

    def forward(self, token_ids, padding_mask, cache=None, cache_index=0, training=None):
        """The one forward pass, full or incremental.

        Args:
            token_ids: `(batch_size, length)` int32.
            padding_mask: `(batch_size, key_length)` int32; `key_length` is `length` for a full
                pass and the cache length with a cache.
            cache: tuple of per-layer `(batch_size, 2, cache_length, num_heads, head_dim)` or None.
            cache_index: position of `token_ids[:, 0]` in the cache.
            training: enables dropout.

        Returns:
            Hidden states `(batch_size, length, hidden_dim)`, and with a cache the updated cache.
        """
        length = tf.shape(token_ids)[1]
        positions = positions_from_mask(padding_mask)[:, cache_index : cache_index + length]
        mask = attention_mask(padding_mask, length, cache_index)  # (B, T, S)
        x = self.token_embedding(token_ids) + self.position_embedding(positions)
        x = self.embeddings_dropout(x, training=training)
        new_cache = []
        for i, block in enumerate(self.transformer_layers):
            if cache is None:
                x = block(x, attention_mask=mask, positions=positions, training=training)
            else:
                x, layer_cache = block(x, attention_mask=mask, positions=positions, cache=cache[i], cache_index=cache_index)
                new_cache.append(layer_cache)
        x = self.layer_norm(x)
        return x if cache is None else (x, tuple(new_cache))

    def init_cache(self, batch_size, cache_length):
        """A zero cache: tuple of `num_layers` tensors `(batch_size, 2, cache_length, num_heads, head_dim)`."""
        head_dim = self.hidden_dim // self.num_heads
        shape = [batch_size, 2, cache_length, self.num_heads, head_dim]
        return tuple(tf.zeros(shape, self.compute_dtype) for _ in self.transformer_layers)

    @classmethod
    def from_pretrained(cls, folder):
        """Loads the base model (no head) from a Hugging Face GPT-2 folder."""
        return pretrained.from_pretrained(folder, "backbone", expected_model_type=cls.model_type)

    def save_pretrained(self, folder):
        """Writes a `GPT2Model` folder that transformers loads."""
        pretrained.save_pretrained(self, folder)

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
