"""Loading a model from a Hugging Face folder and saving one back, for every family.

Loading is exact or refused: the config is mapped (unknown options raise `NotImplementedError`),
the weight table is checked against the checkpoint (missing, unused and mis-shaped keys raise
`CheckpointError`) and only then are variables assigned.
"""

import inspect
import logging
import re

import keras
import numpy as np

from tfllm.checkpoints import (
    StateDict, export_weights, find_weight_files, load_config, load_weights, open_state_dict, save_folder,
)
from tfllm.layers.keras_internals import deferred_initializers, run_deferred_initializers
from tfllm.models import tasks
from tfllm.models.registry import family_of, get_family
from tfllm.models.sizing import check_model_size

logger = logging.getLogger(__name__)


def strip_prefix(state_dict, prefix):
    """Drops `prefix` from the keys that carry it, so task and base checkpoints share one table."""
    if not isinstance(state_dict, StateDict):
        state_dict = StateDict(state_dict)
    return state_dict.renamed(lambda key: key[len(prefix):] if prefix and key.startswith(prefix) else key)


def build_model(model):
    """Creates every variable by calling the model once on a one-token batch."""
    model({"input_ids": np.zeros((1, 1), "int32"), "attention_mask": np.ones((1, 1), "int32")})
    return model


# What calling a model on `keras.Input`s raises where only real values would do: a tensor used as a
# Python bool or iterated (OperatorNotAllowedInGraphError, a TypeError), `int()` of a tensor or an
# unknown (None) dimension used as a number (TypeError, ValueError), `.numpy()` (AttributeError),
# `np.asarray` of a symbolic tensor (NotImplementedError). Anything else is a real error and propagates.
SYMBOLIC_TRACING_ERRORS = (TypeError, ValueError, AttributeError, NotImplementedError)


def build_model_without_running(model):
    """Creates every variable by calling the model on symbolic inputs, so no forward pass runs.

    An eager call (`build_model`) computes real activations, and TensorFlow's CPU allocator keeps
    the peak of their temporaries resident afterwards: in GPT-2 the tied head's transposed
    embedding alone is 150 MB, a third of the weights. A model that cannot be traced on symbolic
    inputs is built by `build_model` instead.
    """
    spec = dict(shape=(None,), dtype="int32", batch_size=1)
    try:
        model({"input_ids": keras.Input(**spec), "attention_mask": keras.Input(**spec)})
    except SYMBOLIC_TRACING_ERRORS as error:
        logger.debug("Symbolic build of %s failed (%s); building with an eager call.", type(model).__name__, error)
        build_model(model)
    return model


def _accepted(task_class, config_task_kwargs):
    """The config's task settings that `task_class` takes (a family's tasks need different ones)."""
    parameters = inspect.signature(task_class.__init__).parameters
    return {key: value for key, value in config_task_kwargs.items() if key in parameters}


def _new_model(family, backbone_kwargs, config_task_kwargs, task, task_kwargs):
    """The family's backbone, or its `task` model around a new backbone (not built)."""
    backbone = family.backbone(**backbone_kwargs)
    if task == tasks.BACKBONE:
        return backbone
    if task not in family.tasks:
        raise NotImplementedError(
            f"`{family.model_type}` models have no `{task}` task in tfllm. Supported: {sorted(family.tasks)}"
        )
    task_class = family.tasks[task]
    config_kwargs = _accepted(task_class, config_task_kwargs)
    if "num_labels" in task_kwargs and "id2label" not in task_kwargs:
        config_kwargs.pop("id2label", None)  # a new label count gets default names, as in transformers
    return task_class(backbone=backbone, **{**config_kwargs, **task_kwargs})


def build_task_model(hf_config, task, **task_kwargs):
    """A model with fresh (initialised) weights, as `from_pretrained` builds it before loading.

    Args:
        hf_config: a Hugging Face `config.json` dict (its `model_type` picks the family).
        task: one of `tfllm.models.tasks.TASKS` the family has.
        **task_kwargs: overrides for the task model's constructor (`num_labels`, `id2label`, ...).

    Returns:
        The built model.
    """
    family = get_family(hf_config.get("model_type"))
    backbone_kwargs, config_task_kwargs = family.config_from_hf(hf_config)
    return build_model(_new_model(family, backbone_kwargs, config_task_kwargs, task, task_kwargs))


def config_kwargs(hf_config):
    """`(backbone_kwargs, task_kwargs)`: a `config.json` dict in tfllm's constructor vocabulary
    (`vocabulary_size`, `max_sequence_length`, `decoder_start_token_id`, ...)."""
    return get_family(hf_config.get("model_type")).config_from_hf(hf_config)


def family_tasks(hf_config):
    """The task names the family of a `config.json` dict has (besides `tasks.BACKBONE`)."""
    return tuple(sorted(get_family(hf_config.get("model_type")).tasks))


def drop_absent_optional(entries, state_dict, optional, source):
    """Drops the entries whose keys are all absent and match an `optional` regex, and warns naming them.

    The dropped variables keep their initial values, as transformers does for a new head.
    """
    patterns = [re.compile(pattern) for pattern in optional]

    def absent_optional(entry):
        return all(key not in state_dict and any(p.fullmatch(key) for p in patterns) for key in entry.hf_keys)

    absent = [key for entry in entries if absent_optional(entry) for key in entry.hf_keys]
    if absent:
        logger.warning(
            "Weights not in %s, newly initialised (train them before use): %s", source, ", ".join(absent)
        )
    return [entry for entry in entries if not absent_optional(entry)]


def from_pretrained(folder, task, expected_model_type=None, **task_kwargs):
    """Builds the `task` model of the family named in `folder/config.json` and loads its weights.

    Args:
        folder: a Hugging Face checkpoint folder.
        task: "backbone" or a task name of the family ("causal_lm", ...).
        expected_model_type: if set, the config's `model_type` must equal it.
        **task_kwargs: overrides for the task model's constructor.

    Returns:
        The built model with the checkpoint's weights.

    Raises:
        CheckpointError: the checkpoint is corrupt or does not match the config, or the config
            implies weights larger than the memory available or than its weight files (checked
            before anything is built; see `tfllm.models.sizing`).
    """
    hf_config = load_config(folder)
    family = get_family(hf_config.get("model_type"))
    if expected_model_type is not None and family.model_type != expected_model_type:
        raise ValueError(
            f"The checkpoint in {folder} is a `{family.model_type}` model, not `{expected_model_type}`. "
            f"Use tfllm.AutoModel* to load whatever family a folder holds."
        )
    backbone_kwargs, config_task_kwargs = family.config_from_hf(hf_config)
    check_model_size(folder, family, backbone_kwargs, find_weight_files(folder)[1])
    # Memory-mapped where the format allows: checked whole before anything is built, read tensor by
    # tensor while assigning.
    state_dict = strip_prefix(open_state_dict(folder), family.hf_prefix)
    model = _new_model(family, backbone_kwargs, config_task_kwargs, task, task_kwargs)
    with deferred_initializers() as created:
        build_model_without_running(model)
    entries = family.weight_table(model if task == tasks.BACKBONE else model.backbone)
    if task != tasks.BACKBONE:
        entries = entries + model.head_weight_table()
    entries = drop_absent_optional(entries, state_dict, getattr(model, "optional_hf_keys", ()), folder)
    load_weights(entries, state_dict, source=str(folder), ignorable=family.ignorable)
    run_deferred_initializers(created, [entry.variable for entry in entries])
    return model


def save_pretrained(model, folder):
    """Writes `model` as a Hugging Face folder (config.json + model.safetensors), atomically.

    The names and layouts are PyTorch's, so `transformers` loads the folder as it loads its own.
    """
    family = family_of(model)
    is_backbone = isinstance(model, family.backbone)
    backbone = model if is_backbone else model.backbone
    task = tasks.BACKBONE if is_backbone else model.task
    entries = family.weight_table(backbone)
    prefix = "" if is_backbone else family.hf_prefix
    state_dict = {prefix + key: value for key, value in export_weights(entries).items()}
    if not is_backbone:
        state_dict.update(export_weights(model.head_weight_table()))
    task_config = {} if is_backbone else model.task_config()
    hf_config = family.config_to_hf(backbone.get_config(), task_config)
    hf_config.setdefault("model_type", family.model_type)
    architectures = family.hf_architectures
    hf_config["architectures"] = [architectures.get((hf_config["model_type"], task), architectures[task])]
    hf_config.setdefault("torch_dtype", "float32")
    save_folder(folder, config=hf_config, state_dict=state_dict, metadata={"format": "pt"})
    logger.info("Saved %s (%d tensors) to %s", type(model).__name__, len(state_dict), folder)
