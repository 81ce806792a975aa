"""RoBERTa with its masked-language-model head (`lm_head`)."""

import keras

from tfllm.layers import get_activation
from tfllm.models.bert import BertMaskedLM


@keras.saving.register_keras_serializable(package="tfllm")
class RobertaMaskedLM(BertMaskedLM):
    """`RobertaBackbone` + `BertMaskedLM`'s head: dense, GELU, LayerNorm, the tied word embedding with a bias.

    RoBERTa's LM head applies the exact GELU whatever the config's `hidden_act`, and so does this one.

    Args:
        backbone: a `RobertaBackbone`.
        pad_token_id: the checkpoint's padding id.

    Call arguments and returns: as `BertMaskedLM`.

    Example:
    >>> model = tfllm.AutoModelForMaskedLM.from_pretrained("path/to/roberta")
    >>> logits = model(tok(["Paris is the <mask> of France."], return_tensors="tf"))
    """

    model_type = "roberta"
    head_hf_keys = ("lm_head.dense", "lm_head.layer_norm", "lm_head.bias")

    def __init__(self, backbone, pad_token_id=None, **kwargs):
        super().__init__(backbone, pad_token_id=pad_token_id, **kwargs)
        self.transform_activation = get_activation("gelu")
