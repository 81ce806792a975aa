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
from tfllm.models.bert import BertBackbone, BertMaskedLM, BertSequenceClassification
from tfllm.models.distilbert import DistilBertBackbone, DistilBertMaskedLM, DistilBertSequenceClassification
from tfllm.models.gpt2 import GPT2Backbone, GPT2CausalLM
from tfllm.models.llama import LlamaBackbone, LlamaCausalLM
from tfllm.models.roberta import RobertaBackbone, RobertaMaskedLM, RobertaSequenceClassification
from tfllm.models.t5 import T5Backbone, T5Seq2SeqLM

__all__ = ["AutoConfig", "AutoModel", "AutoModelForCausalLM", "AutoModelForMaskedLM", "AutoModelForSeq2SeqLM",
           "AutoModelForSequenceClassification", "BertBackbone", "BertMaskedLM", "BertSequenceClassification",
           "DistilBertBackbone", "DistilBertMaskedLM", "DistilBertSequenceClassification", "LlamaBackbone",
           "LlamaCausalLM", "CausalLM", "Config", "GPT2Backbone", "GPT2CausalLM", "RobertaBackbone", "RobertaMaskedLM",
           "RobertaSequenceClassification", "T5Backbone", "T5Seq2SeqLM", "get_family"]
