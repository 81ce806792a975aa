"""DistilBERT with its masked-language-model head (`vocab_transform`, `vocab_layer_norm`, `vocab_projector`)."""

import keras

from tfllm.models.bert import BertMaskedLM


@keras.saving.register_keras_serializable(package="tfllm")
class DistilBertMaskedLM(BertMaskedLM):
    """`DistilBertBackbone` + `BertMaskedLM`'s head: dense, activation, LayerNorm, the tied word
    embedding with a bias.

    Args:
        backbone: a `DistilBertBackbone`.
        pad_token_id: the checkpoint's padding id.

    Call arguments and returns: as `BertMaskedLM`.

    Example:
    >>> model = tfllm.AutoModelForMaskedLM.from_pretrained("path/to/distilbert")
    >>> logits = model(tok(["Paris is the [MASK] of France."], return_tensors="tf"))
    """

    model_type = "distilbert"
    head_hf_keys = ("vocab_transform", "vocab_layer_norm", "vocab_projector.bias")
