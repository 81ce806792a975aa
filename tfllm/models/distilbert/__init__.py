"""DistilBERT: BERT's encoder without token types or pooler, its LM and classification heads."""

from tfllm.models.distilbert import config, weights
from tfllm.models.distilbert.backbone import DistilBertBackbone
from tfllm.models.distilbert.masked_lm import DistilBertMaskedLM
from tfllm.models.distilbert.sequence_classification import DistilBertSequenceClassification
from tfllm.models.family import ModelFamily

FAMILY = ModelFamily(
    model_type="distilbert",
    backbone=DistilBertBackbone,
    tasks={"masked_lm": DistilBertMaskedLM, "sequence_classification": DistilBertSequenceClassification},
    config_from_hf=config.config_from_hf,
    config_to_hf=config.config_to_hf,
    weight_table=weights.weight_table,
    parameter_terms=config.parameter_terms,
    hf_prefix="distilbert.",
    hf_architectures={
        "backbone": "DistilBertModel",
        "masked_lm": "DistilBertForMaskedLM",
        "sequence_classification": "DistilBertForSequenceClassification",
    },
    ignorable=weights.IGNORABLE,
)

__all__ = ["FAMILY", "DistilBertBackbone", "DistilBertMaskedLM", "DistilBertSequenceClassification"]
