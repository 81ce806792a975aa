"""Llama, Mistral and Qwen2: backbone, causal LM head, config mapping and weight table."""

from tfllm.models.family import ModelFamily
from tfllm.models.llama import config, weights
from tfllm.models.llama.backbone import LlamaBackbone
from tfllm.models.llama.causal_lm import LlamaCausalLM

FAMILY = ModelFamily(
    model_type="llama",
    backbone=LlamaBackbone,
    tasks={"causal_lm": LlamaCausalLM},
    config_from_hf=config.config_from_hf,
    config_to_hf=config.config_to_hf,
    weight_table=weights.weight_table,
    parameter_terms=config.parameter_terms,
    hf_prefix="model.",
    hf_architectures={
        "backbone": "LlamaModel",
        "causal_lm": "LlamaForCausalLM",
        ("mistral", "backbone"): "MistralModel",
        ("mistral", "causal_lm"): "MistralForCausalLM",
        ("qwen2", "backbone"): "Qwen2Model",
        ("qwen2", "causal_lm"): "Qwen2ForCausalLM",
    },
    ignorable=weights.IGNORABLE,
    aliases=("mistral", "qwen2"),
)

__all__ = ["FAMILY", "LlamaBackbone", "LlamaCausalLM"]
