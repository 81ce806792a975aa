"""The task vocabulary, defined once: what a model is, as generation, export, pipelines, serving and training see it.

Every tfllm model (a backbone or a task model) declares three class attributes, and code outside
`tfllm.models` reads these instead of asking which family a model belongs to:

- `task`: one of `TASKS` (`BACKBONE` for a base model without a head);
- `is_encoder`: True for a bidirectional encoder (BERT-like) whose hidden states can be pooled into
  sentence embeddings and exported as one forward pass;
- `export_formats`: the formats `tfllm.export` writes for it, a subset of `EXPORT_FORMATS`.
"""

CAUSAL_LM = "causal_lm"
SEQ2SEQ_LM = "seq2seq_lm"
MASKED_LM = "masked_lm"
SEQUENCE_CLASSIFICATION = "sequence_classification"
BACKBONE = "backbone"

TASKS = (CAUSAL_LM, SEQ2SEQ_LM, MASKED_LM, SEQUENCE_CLASSIFICATION, BACKBONE)
# Tasks whose models continue text with `generate`.
GENERATIVE = (CAUSAL_LM, SEQ2SEQ_LM)

SAVED_MODEL = "saved_model"
TFLITE = "tflite"
ONNX = "onnx"
EXPORT_FORMATS = (SAVED_MODEL, TFLITE, ONNX)


def describe(model):
    """`"ClassName (task 'x', model_type 'y', encoder)"`: how error messages name a model."""
    kind = "encoder" if getattr(model, "is_encoder", False) else "decoder"
    return (f"{type(model).__name__} (task {getattr(model, 'task', None)!r}, model_type "
            f"{getattr(model, 'model_type', None)!r}, {kind})")
