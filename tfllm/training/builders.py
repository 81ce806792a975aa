"""What a training run starts from: its tokenizer, the model's `config.json`, the datasets, the task model.

Used by `tfllm.training.trainer.train`; every function takes its `TrainConfig`.
"""

import json
import os

import numpy as np

from tfllm.checkpoints import load_config
from tfllm.errors import invalid_argument
from tfllm.models import presets, pretrained, tasks
from tfllm.tokenizers import AutoTokenizer, Tokenizer, train_byte_level_bpe
from tfllm.tokenizers.bpe import ENDOFTEXT
from tfllm.training import data as data_lib
from tfllm.training.data import MODEL_TASKS



def load_tokenizer(config, saved=None):
    """The run's tokenizer: `saved` (a resumed run's own), `--tokenizer`, `--model`'s, or one trained here."""
    folder = saved or config.tokenizer or config.model
    return AutoTokenizer.from_pretrained(folder) if folder else train_tokenizer(config)


def train_tokenizer(config):
    """A byte-level BPE tokenizer of `config.vocab_size` tokens trained on the training texts (see
    `end_of_text_tokenizer`), as `tfllm quickstart` does."""
    texts = []
    for source in config.data:
        if source in data_lib.BUILTIN_CORPORA:
            texts += data_lib.pydoc_texts()
            continue
        records = data_lib.read_records(source, fields={config.text_field: "text_field"})
        texts += [str(record.values[config.text_field]) for record in records]
    return end_of_text_tokenizer(texts, config.vocab_size)


def end_of_text_tokenizer(texts, vocab_size):
    """A byte-level BPE tokenizer trained on `texts` whose one special token, `<|endoftext|>`, is the
    bos, eos, unknown and padding token (padding is masked out), as is usual for GPT-style models."""
    trained = train_byte_level_bpe(texts, vocab_size=vocab_size, special_tokens=(ENDOFTEXT,))
    return Tokenizer(trained.backend_tokenizer, bos_token=ENDOFTEXT, eos_token=ENDOFTEXT, unk_token=ENDOFTEXT,
                     pad_token=ENDOFTEXT)


def tiny_config(task, tokenizer, seq_len):
    """The `config.json` of `--config tiny`: 2 layers of width 32, of the family `tfllm.models.presets`
    picks for the task."""
    model_task = MODEL_TASKS[task]
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    if model_task == tasks.CAUSAL_LM:
        special = dict(bos_token_id=eos, eos_token_id=eos, pad_token_id=eos)
    elif model_task == tasks.SEQ2SEQ_LM:
        special = dict(pad_token_id=pad or 0, eos_token_id=eos if eos is not None else 1)
    else:
        special = dict(pad_token_id=pad or 0)
    return presets.new_model_config(model_task, len(tokenizer), max_positions=max(128, seq_len), **special)


def model_config(config, tokenizer):
    """The Hugging Face `config.json` dict of the model to train (`--model`'s, tiny, or `--config FILE`)."""
    if config.model is not None:
        return load_config(config.model)
    if config.config == "tiny":
        return tiny_config(config.task, tokenizer, config.seq_len)
    with open(config.config, encoding="utf-8") as handle:
        return json.load(handle)


def datasets(config, tokenizer, hf_config, num_replicas):
    """`build_datasets` for the run, checked against the model (task, vocabulary, positions, labels).

    The trainer asks for each epoch's batches with `TrainingData.epoch(epoch, skip)`.
    """
    backbone_kwargs = pretrained.config_kwargs(hf_config)[0]
    family_tasks = pretrained.family_tasks(hf_config)
    if MODEL_TASKS[config.task] not in family_tasks:
        raise invalid_argument("task", f"a task `{hf_config.get('model_type')}` models have in tfllm "
                               f"({', '.join(family_tasks)})", config.task)
    if backbone_kwargs.get("vocabulary_size", len(tokenizer)) < len(tokenizer):
        raise invalid_argument("tokenizer", "a tokenizer of at most the model's vocab_size "
                               f"({backbone_kwargs['vocabulary_size']}) tokens", f"{len(tokenizer)} tokens")
    return data_lib.build_datasets(
        config.task, tokenizer, _data_argument(config.data), sequence_length=config.seq_len,
        batch_size=config.batch_size, validation_data=_data_argument(config.validation_data),
        validation_split=config.validation_split, text_field=config.text_field,
        text_pair_field=config.text_pair_field, label_field=config.label_field, source_field=config.source_field,
        target_field=config.target_field, num_labels=num_labels(config, hf_config),
        label2id=_checkpoint_label2id(config, hf_config), mlm_probability=config.mlm_probability,
        max_positions=backbone_kwargs.get("max_sequence_length"), num_replicas=num_replicas,
        seed=config.seed, decoder_start_token_id=backbone_kwargs.get("decoder_start_token_id"))


def _data_argument(paths):
    """`build_datasets`' `data`: one path (or "pydoc") as itself, several as a list."""
    if paths is None or isinstance(paths, (str, os.PathLike)):
        return paths
    return paths[0] if len(paths) == 1 else list(paths)


def _is_classifier(config, hf_config):
    architectures = hf_config.get("architectures") or ()
    return config.model is not None and any(name.endswith("ForSequenceClassification") for name in architectures)


def num_labels(config, hf_config):
    """`--num-labels`, else a fine-tuned classifier's own count, else None (the data decides)."""
    if config.task != "classification":
        return None
    if config.num_labels is not None:
        return config.num_labels
    if _is_classifier(config, hf_config):
        return hf_config.get("num_labels") or len(hf_config.get("id2label") or {}) or None
    return None


def _checkpoint_label2id(config, hf_config):
    """A fine-tuned classifier's own label names, so that the data's labels keep their ids."""
    if config.task != "classification" or not _is_classifier(config, hf_config):
        return None
    names = hf_config.get("id2label") or {}
    if not names or all(name == f"LABEL_{key}" for key, name in names.items()):
        return None
    return {name: int(key) for key, name in names.items()}


def task_model(config, hf_config, prepared):
    """The task model, `--model`'s weights or fresh ones; call it inside the strategy's scope."""
    task = MODEL_TASKS[config.task]
    kwargs = {}
    if config.task == "classification":
        count = num_labels(config, hf_config) or (len(prepared.label2id) if prepared.label2id else
                                                  _largest_label(prepared) + 1)
        kwargs = {"num_labels": count}
        if prepared.label2id:
            kwargs["id2label"] = {i: str(name) for name, i in prepared.label2id.items()}
    if config.model is not None:
        model = pretrained.from_pretrained(config.model, task, **kwargs)
    else:
        model = pretrained.build_task_model(hf_config, task, **kwargs)
    pooler = getattr(model.backbone, "pooler", None)
    if task == tasks.MASKED_LM and pooler is not None:
        pooler.trainable = False  # the masked-LM head does not use it: no gradient, kept as loaded
    return model


def _largest_label(prepared):
    labels = [np.asarray(labels) for _, labels, _ in prepared.train.as_numpy_iterator()]
    if prepared.validation is not None:
        labels += [np.asarray(labels) for _, labels, _ in prepared.validation.as_numpy_iterator()]
    return int(np.concatenate(labels).max())
