"""Export a Hugging Face folder in one call (what `tfllm export` runs): pick the task from the
folder's config, load model and tokenizer, write the format."""

import logging
import os

from tfllm.checkpoints.sentence_config import sentence_transformers_config
from tfllm.errors import check_choice
from tfllm.export.onnx import onnx
from tfllm.export.saved_model import saved_model
from tfllm.export.tflite import tflite
from tfllm.models import auto, tasks
from tfllm.tokenizers import AutoTokenizer

logger = logging.getLogger(__name__)

FORMATS = ("saved_model", "tflite", "onnx")
TASKS = ("auto", tasks.CAUSAL_LM, tasks.SEQ2SEQ_LM, tasks.SEQUENCE_CLASSIFICATION, tasks.BACKBONE)
_LOADERS = {
    tasks.CAUSAL_LM: auto.AutoModelForCausalLM,
    tasks.SEQ2SEQ_LM: auto.AutoModelForSeq2SeqLM,
    tasks.SEQUENCE_CLASSIFICATION: auto.AutoModelForSequenceClassification,
    tasks.BACKBONE: auto.AutoModel,
    tasks.MASKED_LM: auto.AutoModel,  # exported as an encoder: its embeddings
}


def default_output(folder, fmt, root="saved_models"):
    """`saved_models/NAME` (SavedModel base), `saved_models/NAME.tflite` or `saved_models/NAME_onnx`."""
    name = os.path.basename(os.path.normpath(folder))
    name = name[: -len("_hf")] if name.endswith("_hf") else name
    return os.path.join(root, {"saved_model": name, "tflite": f"{name}.tflite", "onnx": f"{name}_onnx"}[fmt])


def export_folder(folder, fmt, output=None, task="auto", overwrite=False, version=None, max_new_tokens=32,
                  quantize=None, cache_length=None, progress="none"):
    """Loads `folder` and exports it as `fmt`; returns the written path.

    Args:
        folder: a Hugging Face folder (config.json, weights, tokenizer files).
        fmt: "saved_model", "tflite" or "onnx".
        output: the SavedModel base folder (versions go under it), the .tflite file or the ONNX
            folder; defaults to `default_output(folder, fmt)`.
        task: which head to export; "auto" reads `architectures` from config.json.
        overwrite: replace an existing version / file instead of refusing (checked before loading).
        version: SavedModel version number (default: the next one).
        max_new_tokens: default generation length of the SavedModel's text signature.
        quantize: TFLite quantization (None, "float16", "dynamic_int8").
        cache_length: KV cache length of TFLite / ONNX decoders.
        progress: "auto", "bar", "line" or "none": report the export's steps (`tfllm.progress`).
    """
    fmt = check_choice("format", fmt, FORMATS)
    task = check_choice("task", task, TASKS)
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"Model folder {folder!r} does not exist.")
    output = output or default_output(folder, fmt)
    if fmt != "saved_model" and os.path.exists(output) and not overwrite:  # refused before loading the model
        raise FileExistsError(
            f"Invalid value for argument `output`. Expected a path that does not exist yet (or --overwrite / "
            f"overwrite=True to replace it). Received: output={output!r}, which exists")
    task = auto.task_of_folder(folder) if task == "auto" else task
    model = _LOADERS[task].from_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    if fmt == "saved_model":
        extra = {"pooling": sentence_transformers_config(folder)} if model.task == tasks.BACKBONE else {}
        return saved_model(model, tokenizer, output, version=version, overwrite=overwrite,
                                  max_new_tokens=max_new_tokens, progress=progress, **extra)
    if fmt == "tflite":
        return tflite(model, output, quantize=quantize, cache_length=cache_length, overwrite=overwrite,
                             progress=progress)
    return onnx(model, output, cache_length=cache_length, overwrite=overwrite, progress=progress)
