"""GPT-2: backbone, causal LM head, config mapping and weight table."""

from tfllm.models.family import ModelFamily
from tfllm.models.gpt2 import config, weights
from tfllm.models.gpt2.backbone import GPT2Backbone
from tfllm.models.gpt2.causal_lm import GPT2CausalLM

FAMILY = ModelFamily(
    model_type="gpt2",
    backbone=GPT2Backbone,
    tasks={"causal_lm": GPT2CausalLM},
    config_from_hf=config.config_from_hf,
    config_to_hf=config.config_to_hf,
    weight_table=weights.weight_table,
    parameter_terms=config.parameter_terms,
    hf_prefix="transformer.",
    hf_architectures={"backbone": "GPT2Model", "causal_lm": "GPT2LMHeadModel"},
    ignorable=weights.IGNORABLE,
)

__all__ = ["FAMILY", "GPT2Backbone", "GPT2CausalLM"]
