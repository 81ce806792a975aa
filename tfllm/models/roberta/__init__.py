"""RoBERTa: BERT's encoder with positions counted after the padding id, its LM and classification heads."""

from tfllm.models.family import ModelFamily
from tfllm.models.roberta import config, weights
from tfllm.models.roberta.backbone import RobertaBackbone
from tfllm.models.roberta.masked_lm import RobertaMaskedLM
from tfllm.models.roberta.sequence_classification import RobertaSequenceClassification

FAMILY = ModelFamily(
    model_type="roberta",
    backbone=RobertaBackbone,
    tasks={"masked_lm": RobertaMaskedLM, "sequence_classification": RobertaSequenceClassification},
    config_from_hf=config.config_from_hf,
    config_to_hf=config.config_to_hf,
    weight_table=weights.weight_table,
    parameter_terms=config.parameter_terms,
    hf_prefix="roberta.",
    hf_architectures={
        "backbone": "RobertaModel",
        "masked_lm": "RobertaForMaskedLM",
        "sequence_classification": "RobertaForSequenceClassification",
    },
    ignorable=weights.IGNORABLE,
)

__all__ = ["FAMILY", "RobertaBackbone", "RobertaMaskedLM", "RobertaSequenceClassification"]
