"""A model family described as data: its config mapping, weight table and classes.

`tfllm.models.auto` keeps a registry of families keyed by the `model_type` of `config.json`.
"""

import dataclasses
from typing import Callable


@dataclasses.dataclass(frozen=True)
class ModelFamily:
    """Everything the generic loader and saver need to know about one architecture.

    Attributes:
        model_type: `config.json`'s `model_type` (e.g. "gpt2").
        backbone: the backbone class; its constructor kwargs are the config.
        tasks: task name ("causal_lm", ...) → task model class taking `backbone=`.
        config_from_hf: HF `config.json` dict → (backbone kwargs, task kwargs). Raises
            `NotImplementedError` naming any option the family does not implement.
        config_to_hf: (backbone config, task config) → HF `config.json` dict.
        weight_table: backbone → list of `WeightEntry` keyed by the base model's HF names.
        hf_prefix: prefix of the base model's keys inside a task checkpoint ("transformer.").
        hf_architectures: task name → HF class name written into `config.json`; an alias's own
            names are keyed by `(model_type, task)`.
        parameter_terms: backbone kwargs → {description: parameter count} of the backbone, each part
            described by the config.json fields that drive it; raises `ValueError` for a size that
            is not a positive integer. Lets a loader refuse an absurd config before building it.
        ignorable: regex patterns of HF keys that may be present and unused.
        aliases: other `model_type` values the family loads (e.g. "mistral" for the Llama family).
    """

    model_type: str
    backbone: type
    tasks: dict
    config_from_hf: Callable
    config_to_hf: Callable
    weight_table: Callable
    parameter_terms: Callable
    hf_prefix: str = ""
    hf_architectures: dict = dataclasses.field(default_factory=dict)
    ignorable: tuple = ()
    aliases: tuple = ()
