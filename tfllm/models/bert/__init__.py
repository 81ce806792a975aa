"""BERT: encoder backbone, masked-LM and sequence-classification heads, config mapping and weight table."""

from tfllm.models.bert import config, weights
from tfllm.models.bert.backbone import BertBackbone
from tfllm.models.bert.masked_lm import BertMaskedLM
from tfllm.models.bert.sequence_classification import BertSequenceClassification
from tfllm.models.family import ModelFamily

FAMILY = ModelFamily(
    model_type="bert",
    backbone=BertBackbone,
    tasks={"masked_lm": BertMaskedLM, "sequence_classification": BertSequenceClassification},
    config_from_hf=config.config_from_hf,
    config_to_hf=config.config_to_hf,
    weight_table=weights.weight_table,
    parameter_terms=config.parameter_terms,
    hf_prefix="bert.",
    hf_architectures={
        "backbone": "BertModel",
        "masked_lm": "BertForMaskedLM",
        "sequence_classification": "BertForSequenceClassification",
    },
    ignorable=weights.IGNORABLE,
)

__all__ = ["FAMILY", "BertBackbone", "BertMaskedLM", "BertSequenceClassification"]
