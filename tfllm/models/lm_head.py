"""The language-model head every LM task shares: tied to the token embedding, or its own kernel."""

import keras
from keras import ops

from tfllm.models.weight_tables import linear


@keras.saving.register_keras_serializable(package="tfllm")
class LMHead(keras.layers.Layer):
    """Projects hidden states onto the vocabulary, with the transposed token embedding (tied) or a
    bias-free kernel of its own (`dense`, transformers' `lm_head`).

    Args:
        vocabulary_size: number of tokens.
        tied: project with the token embedding passed to `call` instead of an own kernel.
        scale: multiplies the hidden states first (T5 v1.0's tied head uses `hidden_dim ** -0.5`),
            or None.
        initializer_range: standard deviation of the own kernel's normal initializer.

    Call arguments:
        hidden: `(batch_size, length, hidden_dim)`.
        token_embedding: the backbone's `TokenEmbedding`, used when tied. Passed on every call
            rather than kept, so the head always uses the layer the backbone holds (quantization
            replaces it).

    Returns:
        `(batch_size, length, vocabulary_size)` float32 logits (under mixed precision too, so the
        softmax of the loss and of sampling is exact).
    """

    def __init__(self, vocabulary_size, tied=True, scale=None, initializer_range=0.02, **kwargs):
        super().__init__(**kwargs)
        self.vocabulary_size = vocabulary_size
        self.tied = bool(tied)
        self.scale = scale
        self.initializer_range = initializer_range
        self.dense = None
        if not self.tied:
            self.dense = keras.layers.Dense(
                vocabulary_size,
                use_bias=False,
                kernel_initializer=keras.initializers.RandomNormal(stddev=initializer_range),
                dtype=self.dtype_policy,
                name="dense",
            )

    def build(self, input_shape):
        if self.dense is not None:
            self.dense.build(input_shape)
        self.built = True

    def call(self, hidden, token_embedding=None):
        if self.scale is not None:
            hidden = hidden * self.scale
        logits = token_embedding(hidden, reverse=True) if self.dense is None else self.dense(hidden)
        return ops.cast(logits, "float32")

    def weight_table(self):
        """The own kernel's entry, keyed `lm_head.weight` (none when tied)."""
        return [] if self.dense is None else linear(self.dense, "lm_head")

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.vocabulary_size,)

    def get_config(self):
        config = super().get_config()
        config.update(vocabulary_size=self.vocabulary_size, tied=self.tied, scale=self.scale,
                      initializer_range=self.initializer_range)
        return config


class LMHeadTask:
    """What a task model with an `LMHead` in `lm_head` shares (the causal LM, T5's seq2seq LM):
    building the head, logits from the backbone's last hidden states, the head's weight entries.

    Mixed in before `TaskModel`: `class CausalLM(LMHeadTask, TaskModel)`.
    """

    def build(self, input_shape=None):
        super().build(input_shape)
        if not self.lm_head.built:
            self.lm_head.build((None, None, self.backbone.hidden_dim))

    def head(self, backbone_outputs, training=None):
        return self.compute_logits(backbone_outputs["last_hidden_state"])

    def compute_logits(self, hidden):
        """`(batch_size, length, hidden_dim)` hidden states → `(batch_size, length, vocabulary_size)` float32 logits."""
        return self.lm_head(hidden, token_embedding=self.backbone.token_embedding)

    def head_weight_table(self):
        return self.lm_head.weight_table()
