"""RoBERTa's backbone: BERT's, with position ids that start after the padding id and skip pads."""

import keras
import tensorflow as tf

from tfllm.models.bert import BertBackbone


@keras.saving.register_keras_serializable(package="tfllm")
class RobertaBackbone(BertBackbone):
    """The RoBERTa encoder: `BertBackbone` whose position ids come from the token ids.

    A real token's position is `pad_token_id + 1 + (number of real tokens before it)`; a padding
    token's is `pad_token_id`. A checkpoint therefore has `max_sequence_length = longest input +
    pad_token_id + 1` positions (514 for `roberta-base`).

    Args:
        pad_token_id: the padding id, which is also the position id of every pad.
        **kwargs: `BertBackbone`'s arguments (RoBERTa has one token type).

    Call arguments and returns: as `BertBackbone` (`"pooled_output"` is the pooler's, which
    `RobertaForMaskedLM` checkpoints lack).

    Example:
    >>> backbone = RobertaBackbone(vocabulary_size=100, num_layers=2, num_heads=2, hidden_dim=16,
    ...                            intermediate_dim=32, max_sequence_length=34, type_vocabulary_size=1)
    >>> tuple(backbone(np.array([[0, 5, 6, 2]]))["last_hidden_state"].shape)
    (1, 4, 16)
    """

    model_type = "roberta"

    def __init__(self, *args, pad_token_id=1, **kwargs):
        super().__init__(*args, **kwargs)
        self.pad_token_id = pad_token_id

    def position_ids(self, token_ids):
        """The position of every token: real tokens count from `pad_token_id + 1`, pads get `pad_token_id`.

        Returns:
            `(batch_size, length)` int32 position ids.
        """
        real = tf.cast(tf.not_equal(token_ids, self.pad_token_id), tf.int32)
        return tf.cumsum(real, axis=1) * real + self.pad_token_id

    def get_config(self):
        return {**super().get_config(), "pad_token_id": self.pad_token_id}
