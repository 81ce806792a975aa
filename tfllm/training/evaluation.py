"""Evaluating a trained model: exact token-weighted loss, perplexity and accuracy (`tfllm eval`)."""

import math
import os

import keras
import numpy as np
import tensorflow as tf

from tfllm.checkpoints import load_config
from tfllm.errors import check_choice, invalid_argument
from tfllm.models import pretrained
from tfllm.progress import Progress
from tfllm.tokenizers import AutoTokenizer
from tfllm.training import data as data_lib
from tfllm.training.data import LM_TASKS, MODEL_TASKS


def evaluate(model_dir, data, *, task, batch_size=8, seq_len=128, text_field="text", text_pair_field=None,
             label_field="label", source_field="source", target_field="target", seed=0, progress="none"):
    """Loss, perplexity (language-model tasks) and accuracy of a trained folder on `data`.

    Args:
        model_dir: a Hugging Face folder with its tokenizer (e.g. `tfllm train`'s `--output`).
        data: files (or "pydoc") read as `tfllm train` reads them, every example used.
        task: one of `tfllm.training.data.TASKS`.
        batch_size, seq_len: as in training.
        progress: "auto", "bar", "line" or "none": report the batches (see `tfllm.progress`).

    Returns:
        A dict: `loss` (mean cross-entropy over the weighted tokens, or examples),
        `perplexity` (`exp(loss)`, LM tasks only), `accuracy`, `examples`, `tokens` (weighted
        positions counted).
    """
    check_choice("task", task, data_lib.TASKS)
    if not os.path.isdir(model_dir):
        raise invalid_argument("model", "an existing folder", model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    hf_config = load_config(model_dir)
    backbone_kwargs, _ = pretrained.config_kwargs(hf_config)
    id2label = hf_config.get("id2label") or {}
    label2id = {name: int(i) for i, name in id2label.items()} if task == "classification" else None
    if label2id and all(name == f"LABEL_{i}" for name, i in label2id.items()):
        label2id = None
    paths = [data] if isinstance(data, (str, os.PathLike)) else list(data)
    source = paths[0] if len(paths) == 1 else paths
    # Every example is in the "validation" part (in order, the last batch kept); batch_size=1 lets
    # the unused training part be as small as one example.
    prepared = data_lib.build_datasets(
        task, tokenizer, source, sequence_length=seq_len, batch_size=1, validation_data=source,
        text_field=text_field, text_pair_field=text_pair_field,
        label_field=label_field, source_field=source_field, target_field=target_field,
        num_labels=len(id2label) if task == "classification" and id2label else None, label2id=label2id,
        max_positions=backbone_kwargs.get("max_sequence_length"), shuffle=False, seed=seed,
        decoder_start_token_id=backbone_kwargs.get("decoder_start_token_id"))
    model = pretrained.from_pretrained(model_dir, MODEL_TASKS[task])
    examples = prepared.validation.unbatch().batch(batch_size)
    batches = Progress("eval", math.ceil(prepared.validation_examples / batch_size), mode=progress)
    result = evaluate_dataset(model, examples, task, progress=batches)
    result["examples"] = prepared.validation_examples
    return result


def evaluate_dataset(model, dataset, task, progress=None):
    """Exact weighted mean loss and accuracy of `model` over `(inputs, labels, sample_weight)` batches.

    `progress`, a `tfllm.progress.Progress`, is told of every batch (with the running loss).
    """

    @tf.function
    def sums(inputs, labels, weights):
        logits = tf.cast(model(inputs, training=False), tf.float32)
        losses = keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)
        weights = tf.cast(weights, tf.float32)
        correct = tf.cast(tf.equal(tf.argmax(logits, -1, output_type=labels.dtype), labels), tf.float32)
        return tf.stack([tf.reduce_sum(losses * weights), tf.reduce_sum(correct * weights), tf.reduce_sum(weights)])

    totals = np.zeros(3, np.float64)
    for batch, (inputs, labels, weights) in enumerate(dataset):
        totals += sums(inputs, labels, weights).numpy()
        if progress is not None:
            progress.update(batch + 1, loss=totals[0] / max(totals[2], 1.0))
    if progress is not None:
        progress.finish(loss=totals[0] / max(totals[2], 1.0))
    if totals[2] == 0:
        raise invalid_argument("data", "at least one weighted token or example to evaluate", "none")
    loss = totals[0] / totals[2]
    result = {"loss": float(loss), "accuracy": float(totals[1] / totals[2]), "tokens": int(totals[2])}
    if task in LM_TASKS:
        result["perplexity"] = float(math.exp(min(loss, 700.0)))
    return result
