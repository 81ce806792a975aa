"""RoBERTa's `config.json` ↔ `RobertaBackbone` constructor arguments: BERT's keys, plus the padding id."""

from tfllm.models.bert import config as bert_config
from tfllm.models.hf_config import refuse_unsupported

# transformers' `RobertaConfig` defaults where they differ from `BertConfig`'s.
DEFAULTS = {"vocab_size": 50265, "pad_token_id": 1}
# The LM head's decoder is always the word embedding in tfllm.
UNSUPPORTED = {"tie_word_embeddings": True}
parameter_terms = bert_config.parameter_terms  # `RobertaModel` has `BertModel`'s parameters


def config_from_hf(hf):
    """Maps a RoBERTa `config.json` dict to `(backbone_kwargs, task_kwargs)`."""
    hf = {**DEFAULTS, **hf}
    refuse_unsupported("RoBERTa", hf, UNSUPPORTED)
    backbone, task = bert_config.config_from_hf(hf, family="RoBERTa")
    backbone["pad_token_id"] = hf["pad_token_id"]  # positions are counted after it
    return backbone, task


def config_to_hf(backbone, task):
    """Maps `RobertaBackbone.get_config()` and the task's config to a RoBERTa `config.json` dict."""
    backbone = dict(backbone)
    pad_token_id = backbone.pop("pad_token_id")
    return {**bert_config.config_to_hf(backbone, task), "pad_token_id": pad_token_id}
