"""Model families and the `Auto*` registry."""

from tfllm.models.auto import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForMaskedLM,
    AutoModelForSeq2SeqLM,
    AutoModelForSequenceClassification,
    Config,
    get_family,
)
from tfllm.models.causal_lm import CausalLM
from tfllm.models.gpt2 import GPT2Backbone, GPT2CausalLM

__all__ = ["AutoConfig", "AutoModel", "AutoModelForCausalLM", "AutoModelForMaskedLM", "AutoModelForSeq2SeqLM",
           "AutoModelForSequenceClassification", "CausalLM", "Config", "GPT2Backbone", "GPT2CausalLM", "get_family"]
