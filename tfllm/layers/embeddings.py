"""Token and learned position embeddings."""

import keras
from keras import ops

from tfllm.errors import check_int


@keras.saving.register_keras_serializable(package="tfllm")
class TokenEmbedding(keras.layers.Layer):
    """A token embedding table that doubles as the tied output projection.

    Args:
        vocabulary_size: number of rows of the table.
        hidden_dim: width of each embedding.
        initializer_range: standard deviation of the normal initializer.

    Call arguments:
        inputs: `(batch_size, sequence_length)` token ids, or with `reverse=True`
            `(batch_size, sequence_length, hidden_dim)` hidden states.
        reverse: project hidden states onto the vocabulary with the transposed table.

    Returns:
        `(batch_size, sequence_length, hidden_dim)` embeddings, or with `reverse=True`
        `(batch_size, sequence_length, vocabulary_size)` logits.

    Example:
    >>> layer = TokenEmbedding(vocabulary_size=10, hidden_dim=4)
    >>> tuple(layer(np.array([[1, 2]])).shape)
    (1, 2, 4)
    """

    def __init__(self, vocabulary_size, hidden_dim, initializer_range=0.02, **kwargs):
        super().__init__(**kwargs)
        self.vocabulary_size = check_int("vocabulary_size", vocabulary_size, minimum=1)
        self.hidden_dim = check_int("hidden_dim", hidden_dim, minimum=1)
        self.initializer_range = initializer_range

    def build(self, input_shape=None):
        self.embeddings = self.add_weight(
            name="embeddings",
            shape=(self.vocabulary_size, self.hidden_dim),
            initializer=keras.initializers.RandomNormal(stddev=self.initializer_range),
        )
        self.built = True

    def call(self, inputs, reverse=False):
        if reverse:
            return ops.matmul(inputs, ops.transpose(ops.cast(self.embeddings, inputs.dtype)))
        return ops.take(self.embeddings, ops.cast(inputs, "int32"), axis=0)

    def compute_output_shape(self, input_shape, reverse=False):
        if reverse:
            return tuple(input_shape[:-1]) + (self.vocabulary_size,)
        return tuple(input_shape) + (self.hidden_dim,)

    def get_config(self):
        config = super().get_config()
        config.update(
            vocabulary_size=self.vocabulary_size,
            hidden_dim=self.hidden_dim,
            initializer_range=self.initializer_range,
        )
        return config


@keras.saving.register_keras_serializable(package="tfllm")
class PositionEmbedding(keras.layers.Layer):
    """A learned embedding per position, looked up by explicit position ids.

    Position ids (not a range) are taken so left-padded prompts and cached decoding steps get the
    positions of their real tokens.

    Args:
        sequence_length: the number of positions the table holds.
        hidden_dim: width of each embedding.
        initializer_range: standard deviation of the normal initializer.

    Call arguments:
        positions: `(batch_size, sequence_length)` integer positions.

    Returns:
        `(batch_size, sequence_length, hidden_dim)` embeddings.
    """

    def __init__(self, sequence_length, hidden_dim, initializer_range=0.02, **kwargs):
        super().__init__(**kwargs)
        self.sequence_length = check_int("sequence_length", sequence_length, minimum=1)
        self.hidden_dim = check_int("hidden_dim", hidden_dim, minimum=1)
        self.initializer_range = initializer_range

    def build(self, input_shape=None):
        self.embeddings = self.add_weight(
            name="embeddings",
            shape=(self.sequence_length, self.hidden_dim),
            initializer=keras.initializers.RandomNormal(stddev=self.initializer_range),
        )
        self.built = True

    def call(self, positions):
        return ops.take(self.embeddings, ops.cast(positions, "int32"), axis=0)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape) + (self.hidden_dim,)

    def get_config(self):
        config = super().get_config()
        config.update(
            sequence_length=self.sequence_length,
            hidden_dim=self.hidden_dim,
            initializer_range=self.initializer_range,
        )
        return config
