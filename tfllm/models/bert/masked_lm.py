"""BERT with its masked-language-model head."""

import keras
from keras import ops

from tfllm.checkpoints import WeightEntry
from tfllm.layers import LayerNorm, get_activation
from tfllm.models import tasks
from tfllm.models.bert.task import BertTask
from tfllm.models.weight_tables import linear, norm


@keras.saving.register_keras_serializable(package="tfllm")
class BertMaskedLM(BertTask):
    """`BertBackbone` + transform (dense, activation, LayerNorm) + the tied word embedding with a bias.

    Args:
        backbone: a `BertBackbone`.
        pad_token_id: the checkpoint's padding id.

    Call arguments:
        inputs: a tokenizer's dict (`input_ids`, `attention_mask`, optional `token_type_ids`).
        training: enables dropout.

    Returns:
        `(batch_size, sequence_length, vocabulary_size)` logits. `inspect` adds the attentions and
        hidden states (see `BertBackbone`).

    Example:
    >>> model = tfllm.AutoModelForMaskedLM.from_pretrained("path/to/bert")
    >>> logits = model(tok(["Paris is the [MASK] of France."], return_tensors="tf"))
    """

    task = tasks.MASKED_LM
    export_formats = (tasks.TFLITE, tasks.ONNX)
    # The head's HF names: transform dense, transform norm, output bias (a subclass hook: another family's differ).
    head_hf_keys = ("cls.predictions.transform.dense", "cls.predictions.transform.LayerNorm", "cls.predictions.bias")

    def __init__(self, backbone, pad_token_id=None, **kwargs):
        super().__init__(backbone, pad_token_id=pad_token_id, **kwargs)
        # === Layers ===
        policy = backbone.dtype_policy
        self.transform_dense = keras.layers.Dense(
            backbone.hidden_dim,
            kernel_initializer=keras.initializers.RandomNormal(stddev=backbone.initializer_range),
            dtype=policy,
            name="transform_dense",
        )
        self.transform_activation = get_activation(backbone.activation)
        self.transform_norm = LayerNorm(backbone.layer_norm_epsilon, dtype=policy, name="transform_norm")

    def build(self, input_shape=None):
        if not self.backbone.built:
            self.backbone.build(input_shape)
        hidden_shape = (None, None, self.backbone.hidden_dim)
        self.transform_dense.build(hidden_shape)
        self.transform_norm.build(hidden_shape)
        self.output_bias = self.add_weight(
            name="output_bias", shape=(self.backbone.vocabulary_size,), initializer="zeros", autocast=False
        )
        self.built = True

    def head(self, backbone_outputs, training=None):
        hidden = backbone_outputs["last_hidden_state"]
        hidden = self.transform_norm(self.transform_activation(self.transform_dense(hidden)))
        # Float32 logits (and a float32 bias) under mixed precision too.
        logits = ops.cast(self.backbone.token_embedding(hidden, reverse=True), "float32")
        return logits + ops.cast(self.output_bias, "float32")

    def head_weight_table(self):
        dense_key, norm_key, bias_key = self.head_hf_keys
        return [
            *linear(self.transform_dense, dense_key),
            *norm(self.transform_norm, norm_key),
            WeightEntry(self.output_bias, (bias_key,)),
        ]
