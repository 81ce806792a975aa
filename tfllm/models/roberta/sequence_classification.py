"""RoBERTa with its classification head on the first (`<s>`) token."""

import keras

from tfllm.models.bert.sequence_classification import FirstTokenClassification
from tfllm.models.weight_tables import linear


@keras.saving.register_keras_serializable(package="tfllm")
class RobertaSequenceClassification(FirstTokenClassification):
    """`RobertaBackbone` + RoBERTa's classification head on the `<s>` token: dropout, dense
    (`classifier.dense`), tanh, dropout, dense (`classifier.out_proj`).

    The backbone's pooler is not used (`RobertaForSequenceClassification` checkpoints have none).

    Args:
        backbone: a `RobertaBackbone`.
        num_labels, pad_token_id, id2label: as `BertSequenceClassification`.

    Call arguments and returns: as `BertSequenceClassification`.

    Example:
    >>> model = tfllm.AutoModelForSequenceClassification.from_pretrained("path/to/roberta", num_labels=3)
    >>> logits = model(tok(["great movie"], return_tensors="tf"))
    """

    model_type = "roberta"
    head_optional_hf_keys = (r"classifier\.(dense|out_proj)\.(weight|bias)",)
    first_token_activation = "tanh"
    dropout_before_dense = True

    def head_weight_table(self):
        return [*linear(self.first_token_dense, "classifier.dense"), *linear(self.classifier, "classifier.out_proj")]
