"""RoBERTa's weight table: the base model's Hugging Face keys are BERT's (without "roberta.")."""

from tfllm.models.bert import weights as bert_weights

# Buffers, and heads that the base model (or another task) does not use: `lm_head.decoder.*` are the
# tied copies of the word embedding and of `lm_head.bias`.
IGNORABLE = (
    r"embeddings\.(position_ids|token_type_ids)",
    r"lm_head\..*",
    r"classifier\..*",
)


def weight_table(backbone):
    """Returns the `WeightEntry` list of a built `RobertaBackbone` (BERT's table)."""
    return bert_weights.weight_table(backbone)
