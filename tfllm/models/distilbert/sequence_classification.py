"""DistilBERT with its classification head on the first (`[CLS]`) token."""

import keras

from tfllm.models.bert.sequence_classification import FirstTokenClassification
from tfllm.models.weight_tables import linear


@keras.saving.register_keras_serializable(package="tfllm")
class DistilBertSequenceClassification(FirstTokenClassification):
    """`DistilBertBackbone` + DistilBERT's head on the `[CLS]` token: dense (`pre_classifier`), ReLU,
    dropout, dense (`classifier`).

    Args:
        backbone: a `DistilBertBackbone`.
        num_labels, pad_token_id, id2label: as `BertSequenceClassification`.

    Call arguments and returns: as `BertSequenceClassification`.

    Example:
    >>> model = tfllm.AutoModelForSequenceClassification.from_pretrained("path/to/distilbert", num_labels=3)
    >>> logits = model(tok(["great movie"], return_tensors="tf"))
    """

    model_type = "distilbert"
    head_optional_hf_keys = (r"(pre_classifier|classifier)\.(weight|bias)",)
    first_token_activation = "relu"

    def head_weight_table(self):
        return [*linear(self.first_token_dense, "pre_classifier"), *linear(self.classifier, "classifier")]
