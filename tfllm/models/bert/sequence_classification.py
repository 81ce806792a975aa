"""BERT with a classifier on its pooled output."""

import keras
from keras import ops

from tfllm.errors import check_int, invalid_argument
from tfllm.models import tasks
from tfllm.models.bert.task import BertTask
from tfllm.models.weight_tables import linear


@keras.saving.register_keras_serializable(package="tfllm")
class BertSequenceClassification(BertTask):
    """`BertBackbone` + dropout + a dense layer on the pooled output.

    A checkpoint without `classifier.weight` and `classifier.bias` (a base model) loads with a freshly
    initialised classifier, and a warning names it, as transformers does.

    Args:
        backbone: a `BertBackbone`.
        num_labels: number of classes.
        pad_token_id: the checkpoint's padding id.
        id2label: the class names, `{index: name}` as in `config.json` (keys may be strings);
            default `"LABEL_{index}"`. Kept in `self.id2label` (int keys) and written to
            `config.json` with `label2id` by `save_pretrained`.

    Call arguments:
        inputs: a tokenizer's dict (`input_ids`, `attention_mask`, optional `token_type_ids`).
        training: enables dropout.

    Returns:
        `(batch_size, num_labels)` logits.

    Example:
    >>> model = tfllm.AutoModelForSequenceClassification.from_pretrained("path/to/bert", num_labels=3)
    >>> logits = model(tok(["great movie"], return_tensors="tf"))
    """

    task = tasks.SEQUENCE_CLASSIFICATION
    export_formats = tasks.EXPORT_FORMATS
    head_optional_hf_keys = (r"classifier\.(weight|bias)",)

    def __init__(self, backbone, num_labels=2, pad_token_id=None, id2label=None, **kwargs):
        super().__init__(backbone, pad_token_id=pad_token_id, **kwargs)
        self.num_labels = check_int("num_labels", num_labels, minimum=1)
        self.id2label = _check_id2label(id2label, self.num_labels)
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

    def head(self, backbone_outputs, training=None):
        features = self.classifier_features(backbone_outputs, training=training)
        logits = self.classifier(self.classifier_dropout(features, training=training))
        return ops.cast(logits, "float32")  # float32 under mixed precision too

    def classifier_features(self, backbone_outputs, training=None):
        """What the classifier reads (after dropout): the backbone's pooled output.

        A subclass hook: `FirstTokenClassification` puts a dense layer of its own on the first token instead.

        Args:
            backbone_outputs: the backbone's output dict.
            training: enables dropout.

        Returns:
            `(batch_size, hidden_dim)` features.
        """
        return backbone_outputs["pooled_output"]

    def head_weight_table(self):
        return linear(self.classifier, "classifier")

    def task_config(self):
        """The config.json settings: `num_labels`, `id2label`, `label2id` and `pad_token_id`."""
        return {
            "num_labels": self.num_labels,
            "id2label": {str(i): name for i, name in self.id2label.items()},
            "label2id": {name: i for i, name in self.id2label.items()},
            **super().task_config(),
        }

    def get_config(self):
        config = super().get_config()
        del config["label2id"]  # derived from id2label; config.json keeps it for transformers
        return config


class FirstTokenClassification(BertSequenceClassification):
    """`BertSequenceClassification` whose classifier reads a dense layer of its own on the first token's
    last hidden state instead of the backbone's pooler.

    Subclasses set `first_token_activation` (the dense layer's activation) and `dropout_before_dense`
    (also drop out the first token before the dense layer), and name both dense layers in
    `head_weight_table`.

    Args:
        backbone, num_labels, pad_token_id, id2label: as `BertSequenceClassification`.

    Call arguments and returns: as `BertSequenceClassification`.
    """

    first_token_activation = None
    dropout_before_dense = False

    def __init__(self, backbone, num_labels=2, pad_token_id=None, id2label=None, **kwargs):
        super().__init__(backbone, num_labels=num_labels, pad_token_id=pad_token_id, id2label=id2label, **kwargs)
        # === Layers ===
        self.first_token_dense = keras.layers.Dense(
            backbone.hidden_dim,
            activation=self.first_token_activation,
            kernel_initializer=keras.initializers.RandomNormal(stddev=backbone.initializer_range),
            dtype=backbone.dtype_policy,
            name="first_token_dense",
        )

    def build(self, input_shape=None):
        self.first_token_dense.build((None, self.backbone.hidden_dim))
        super().build(input_shape)

    def classifier_features(self, backbone_outputs, training=None):
        first = backbone_outputs["last_hidden_state"][:, 0, :]  # (B, hidden_dim)
        if self.dropout_before_dense:
            first = self.classifier_dropout(first, training=training)
        return self.first_token_dense(first)


def _check_id2label(id2label, num_labels):
    """Returns `{index: name}` with int keys `0..num_labels-1`; `LABEL_i` names by default."""
    if id2label is None:
        return {i: f"LABEL_{i}" for i in range(num_labels)}
    expected = f"a dict mapping each index 0..{num_labels - 1} to a label name (num_labels={num_labels})"
    if not isinstance(id2label, dict) or not all(isinstance(name, str) for name in id2label.values()):
        raise invalid_argument("id2label", expected, id2label)
    try:
        labels = {int(key): name for key, name in id2label.items()}
    except (TypeError, ValueError) as error:
        raise invalid_argument("id2label", expected, id2label) from error
    if sorted(labels) != list(range(num_labels)):
        raise invalid_argument("id2label", expected, id2label)
    return dict(sorted(labels.items()))
