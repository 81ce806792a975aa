"""BERT's weight table: tfllm variable ← Hugging Face key (PyTorch names, without "bert.").

PyTorch `Linear` weights are `(out, in)`, so every kernel is transposed; the separate query, key
and value projections are concatenated into tfllm's fused query/key/value kernel.
"""

from tfllm.models.weight_tables import embedding, linear, norm, qkv

# Buffers, and heads that the base model (or another task) does not use.
IGNORABLE = (
    r"embeddings\.position_ids",
    r"cls\.predictions\..*",
    r"cls\.seq_relationship\..*",
    r"classifier\..*",
)
# Weights a checkpoint may lack (BertForMaskedLM has no pooler); they keep their initial values.
OPTIONAL = (r"pooler\.dense\.(weight|bias)",)


def weight_table(backbone):
    """Returns the `WeightEntry` list of a built `BertBackbone`."""
    entries = [
        *embedding(backbone.token_embedding, "embeddings.word_embeddings.weight"),
        *embedding(backbone.position_embedding, "embeddings.position_embeddings.weight"),
        *embedding(backbone.token_type_embedding, "embeddings.token_type_embeddings.weight"),
        *norm(backbone.embeddings_norm, "embeddings.LayerNorm"),
    ]
    for i, block in enumerate(backbone.transformer_layers):
        key = f"encoder.layer.{i}"
        entries += qkv(block.attention, [f"{key}.attention.self.{name}" for name in ("query", "key", "value")])
        entries += linear(block.attention.output_dense, f"{key}.attention.output.dense")
        entries += norm(block.attention_norm, f"{key}.attention.output.LayerNorm")
        entries += linear(block.ffn.up, f"{key}.intermediate.dense")
        entries += linear(block.ffn.down, f"{key}.output.dense")
        entries += norm(block.ffn_norm, f"{key}.output.LayerNorm")
    entries += linear(backbone.pooler, "pooler.dense")
    return entries
