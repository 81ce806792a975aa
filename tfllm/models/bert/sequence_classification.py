"""BERT with a classifier on its pooled output."""

import keras

from tfllm.errors import check_int
from tfllm.models.bert import weights
from tfllm.models.bert.task import BertTask


@keras.saving.register_keras_serializable(package="tfllm")
class BertSequenceClassification(BertTask):
    """`BertBackbone` + dropout + a dense layer on the pooled output.

    A checkpoint without `classifier.weight` and `classifier.bias` (a base model) loads with a freshly
    initialised classifier, and a warning names it, as transformers does.

    Args:
        backbone: a `BertBackbone`.
        num_labels: number of classes.
        pad_token_id: the checkpoint's padding id.

    Call arguments:
        inputs: a tokenizer's dict (`input_ids`, `attention_mask`, optional `token_type_ids`).
        training: enables dropout.

    Returns:
        `(batch_size, num_labels)` logits.

    Example:
    >>> model = tfllm.AutoModelForSequenceClassification.from_pretrained("path/to/bert", num_labels=3)
    >>> logits = model(tok(["great movie"], return_tensors="tf"))
    """

    task = "sequence_classification"
    head_optional_hf_keys = (r"classifier\.(weight|bias)",)

    def __init__(self, backbone, num_labels=2, pad_token_id=None, **kwargs):
        super().__init__(backbone, pad_token_id=pad_token_id, **kwargs)
        self.num_labels = check_int("num_labels", num_labels, minimum=1)
        # === Layers ===
        policy = backbone.dtype_policy
        self.classifier_dropout = keras.layers.Dropout(backbone.dropout, dtype=policy, name="classifier_dropout")
        self.classifier = keras.layers.Dense(
            num_labels,
            kernel_initializer=keras.initializers.RandomNormal(stddev=backbone.initializer_range),
            dtype=policy,
            name="classifier",
        )

    def build(self, input_shape=None):
        if not self.backbone.built:
            self.backbone.build(input_shape)
        self.classifier.build((None, self.backbone.hidden_dim))
        self.built = True

    def call(self, inputs, training=None):
        pooled = self.backbone(inputs, training=training)["pooled_output"]
        return self.classifier(self.classifier_dropout(pooled, training=training))

    def head_weight_table(self):
        return weights.dense(self.classifier, "classifier")

    def task_config(self):
        return {"num_labels": self.num_labels, **super().task_config()}
