"""DistilBERT's backbone: BERT's encoder without token types and without a pooler."""

import keras

from tfllm.models.bert import BertBackbone


@keras.saving.register_keras_serializable(package="tfllm")
class DistilBertBackbone(BertBackbone):
    """The DistilBERT encoder: word + learned position embeddings, post-norm bidirectional blocks.

    Args:
        vocabulary_size, num_layers, num_heads, hidden_dim, intermediate_dim, max_sequence_length,
            dropout, activation, initializer_range: as `BertBackbone` (config.json's `n_layers`,
            `n_heads`, `dim` and `hidden_dim` are `num_layers`, `num_heads`, `hidden_dim` and
            `intermediate_dim`).
        layer_norm_epsilon: epsilon of every LayerNorm (1e-12, fixed in DistilBERT).

    Call arguments: as `BertBackbone`; `token_type_ids` are ignored.

    Returns:
        As `BertBackbone`, without `"pooled_output"`.

    Example:
    >>> backbone = DistilBertBackbone(vocabulary_size=64, num_layers=1, num_heads=2, hidden_dim=8, intermediate_dim=16)
    >>> outputs = backbone({"input_ids": np.array([[2, 7, 3]]), "attention_mask": np.array([[1, 1, 1]])})
    >>> tuple(outputs["last_hidden_state"].shape), "pooled_output" in outputs
    ((1, 3, 8), False)
    """

    model_type = "distilbert"
    has_token_types = False
    has_pooler = False

    def __init__(
        self,
        vocabulary_size,
        num_layers,
        num_heads,
        hidden_dim,
        intermediate_dim,
        max_sequence_length=512,
        layer_norm_epsilon=1e-12,
        dropout=0.0,
        activation="gelu",
        initializer_range=0.02,
        **kwargs,
    ):
        super().__init__(
            vocabulary_size, num_layers, num_heads, hidden_dim, intermediate_dim,
            max_sequence_length=max_sequence_length, layer_norm_epsilon=layer_norm_epsilon, dropout=dropout,
            activation=activation, initializer_range=initializer_range, **kwargs,
        )

    def get_config(self):
        config = super().get_config()
        del config["type_vocabulary_size"]  # no token types
        return config
