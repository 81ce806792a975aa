"""T5 (v1.0, v1.1, Flan-T5): encoder-decoder backbone, seq2seq LM head, config mapping and weight table."""

from tfllm.models.family import ModelFamily
from tfllm.models.t5 import config, weights
from tfllm.models.t5.backbone import T5Backbone
from tfllm.models.t5.seq2seq_lm import T5Seq2SeqLM, shift_right

FAMILY = ModelFamily(
    model_type="t5",
    backbone=T5Backbone,
    tasks={"seq2seq_lm": T5Seq2SeqLM},
    config_from_hf=config.config_from_hf,
    config_to_hf=config.config_to_hf,
    weight_table=weights.weight_table,
    parameter_terms=config.parameter_terms,
    hf_prefix="",
    hf_architectures={"backbone": "T5Model", "seq2seq_lm": "T5ForConditionalGeneration"},
    ignorable=weights.IGNORABLE,
)

__all__ = ["FAMILY", "T5Backbone", "T5Seq2SeqLM", "shift_right"]
