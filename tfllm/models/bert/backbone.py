"""BERT: word + position + token-type embeddings, post-norm bidirectional encoder blocks, a tanh pooler."""

import keras
import tensorflow as tf

from tfllm.errors import check_int
from tfllm.layers import LayerNorm, PositionEmbedding, TokenEmbedding
from tfllm.models import tasks
from tfllm.models.backbone import Backbone
from tfllm.models.bert import weights
from tfllm.models.bert.block import BertBlock
from tfllm.models.decoder import run_blocks
from tfllm.models.inputs import unpack_inputs


def unpack_bert_inputs(inputs):
    """Returns `(token_ids, padding_mask, token_type_ids)`; token types default to zeros."""
    token_ids, padding_mask = unpack_inputs(inputs)
    token_type_ids = inputs.get("token_type_ids") if isinstance(inputs, dict) else None
    if token_type_ids is None:
        token_type_ids = tf.zeros_like(token_ids)
    return token_ids, padding_mask, tf.cast(token_type_ids, tf.int32)


@keras.saving.register_keras_serializable(package="tfllm")
class BertBackbone(Backbone):
    """The BERT encoder: token ids, padding mask and token types in, hidden states and pooled output out.

    Every position attends to every real (unpadded) token; positions are absolute, `0..T-1`, so
    batches are padded on the right as BERT tokenizers do.

    Args:
        vocabulary_size: number of tokens.
        num_layers: number of encoder blocks.
        num_heads: attention heads per block.
        hidden_dim: width of the residual stream.
        intermediate_dim: width of the feed-forward inner layer.
        max_sequence_length: number of learned positions.
        type_vocabulary_size: number of token types (segments).
        layer_norm_epsilon: epsilon of every LayerNorm.
        dropout: dropout rate on embeddings, attention and residual branches.
        activation: feed-forward activation ("gelu" is the exact erf GELU of BERT).
        initializer_range: standard deviation of the weight initializer.

    Call arguments:
        inputs: a tokenizer's dict (`input_ids`, `attention_mask`, optional `token_type_ids`) or a
            tensor of token ids.
        training: enables dropout.
        output_attentions: also return every layer's attention probabilities.
        output_hidden_states: also return the embeddings and every layer's output.

    Returns:
        A dict with `"last_hidden_state"`, `(batch_size, sequence_length, hidden_dim)` final hidden
        states (also under `"sequence_output"`, the same tensor), and `"pooled_output"`,
        `(batch_size, hidden_dim)`: `tanh(dense(first token))` (none when `has_pooler` is False).
        `output_hidden_states=True` adds `"hidden_states"`, `num_layers + 1` tensors `(batch_size,
        sequence_length, hidden_dim)` (the embeddings, then each layer's output);
        `output_attentions=True` adds `"attentions"`, `num_layers` tensors `(batch_size,
        num_heads, sequence_length, sequence_length)` of probabilities.

    Example:
    >>> backbone = BertBackbone(vocabulary_size=100, num_layers=2, num_heads=2, hidden_dim=16,
    ...                         intermediate_dim=32, max_sequence_length=32)
    >>> tuple(backbone(np.array([[1, 2, 3]]))["last_hidden_state"].shape)
    (1, 3, 16)
    """

    model_type = "bert"
    is_encoder = True
    export_formats = tasks.EXPORT_FORMATS
    # Subclass hooks: a family without token types or without a pooler sets these False (no layer, no output).
    has_token_types = True
    has_pooler = True
    # A BertForMaskedLM checkpoint has no pooler: it then keeps its initial values (with a warning).
    optional_hf_keys = weights.OPTIONAL

    def __init__(
        self,
        vocabulary_size,
        num_layers,
        num_heads,
        hidden_dim,
        intermediate_dim,
        max_sequence_length=512,
        type_vocabulary_size=2,
        layer_norm_epsilon=1e-12,
        dropout=0.0,
        activation="gelu",
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
        self.type_vocabulary_size = check_int("type_vocabulary_size", type_vocabulary_size, minimum=1)
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
        if self.has_token_types:
            self.token_type_embedding = TokenEmbedding(
                type_vocabulary_size, hidden_dim, initializer_range, dtype=policy, name="token_type_embedding"
            )
        self.embeddings_norm = LayerNorm(layer_norm_epsilon, dtype=policy, name="embeddings_norm")
        self.embeddings_dropout = keras.layers.Dropout(dropout, dtype=policy, name="embeddings_dropout")
        self.transformer_layers = [
            BertBlock(
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
        if self.has_pooler:
            self.pooler = keras.layers.Dense(
                hidden_dim,
                activation="tanh",
                kernel_initializer=keras.initializers.RandomNormal(stddev=initializer_range),
                dtype=policy,
                name="pooler",
            )

    def build(self, input_shape=None):
        if self.built:
            return
        hidden_shape = (None, None, self.hidden_dim)
        self.token_embedding.build()
        self.position_embedding.build()
        if self.has_token_types:
            self.token_type_embedding.build()
        self.embeddings_norm.build(hidden_shape)
        for block in self.transformer_layers:
            block.build(hidden_shape)
        if self.has_pooler:
            self.pooler.build((None, self.hidden_dim))
        self.built = True

    def call(self, inputs, training=None, output_attentions=False, output_hidden_states=False):
        token_ids, padding_mask, token_type_ids = unpack_bert_inputs(inputs)
        length = tf.shape(token_ids)[1]
        positions = self.position_ids(token_ids)
        # Bidirectional: every query sees every real key.
        mask = tf.cast(padding_mask, tf.bool)[:, None, :]  # (B, 1, S)
        mask = tf.broadcast_to(mask, [tf.shape(token_ids)[0], length, length])  # (B, T, S)
        x = self.token_embedding(token_ids) + self.position_embedding(positions)
        if self.has_token_types:
            x = x + self.token_type_embedding(token_type_ids)
        x = self.embeddings_norm(x)
        x = self.embeddings_dropout(x, training=training)
        outputs = run_blocks(
            self.transformer_layers,
            x,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            attention_mask=mask,
            training=training,
        )
        x = outputs["last_hidden_state"]
        pooled = {"pooled_output": self.pooler(x[:, 0, :])} if self.has_pooler else {}
        return {**outputs, "sequence_output": x, **pooled}

    def position_ids(self, token_ids):
        """The position of every token, from the `(batch_size, length)` token ids.

        A subclass hook (a family may count positions from its token ids, skipping pads).

        Returns:
            `(1, length)` int32 absolute positions `0..length-1`, as batches are padded on the right.
        """
        return tf.range(tf.shape(token_ids)[1])[None, :]

    def get_config(self):
        config = super().get_config()
        config.update(
            vocabulary_size=self.vocabulary_size,
            num_layers=self.num_layers,
            num_heads=self.num_heads,
            hidden_dim=self.hidden_dim,
            intermediate_dim=self.intermediate_dim,
            max_sequence_length=self.max_sequence_length,
            type_vocabulary_size=self.type_vocabulary_size,
            layer_norm_epsilon=self.layer_norm_epsilon,
            dropout=self.dropout,
            activation=self.activation,
            initializer_range=self.initializer_range,
        )
        return config
