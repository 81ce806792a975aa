"""DistilBERT's weight table: tfllm variable ← Hugging Face key (PyTorch names, without "distilbert.")."""

from tfllm.models.weight_tables import embedding, linear, norm, qkv

# Buffers, and heads that the base model (or another task) does not use.
IGNORABLE = (
    r"embeddings\.position_ids",
    r"vocab_(transform|layer_norm|projector)\..*",
    r"(pre_classifier|classifier)\..*",
)


def weight_table(backbone):
    """Returns the `WeightEntry` list of a built `DistilBertBackbone`."""
    entries = [
        *embedding(backbone.token_embedding, "embeddings.word_embeddings.weight"),
        *embedding(backbone.position_embedding, "embeddings.position_embeddings.weight"),
        *norm(backbone.embeddings_norm, "embeddings.LayerNorm"),
    ]
    for i, block in enumerate(backbone.transformer_layers):
        key = f"transformer.layer.{i}"
        entries += qkv(block.attention, [f"{key}.attention.{name}" for name in ("q_lin", "k_lin", "v_lin")])
        entries += linear(block.attention.output_dense, f"{key}.attention.out_lin")
        entries += norm(block.attention_norm, f"{key}.sa_layer_norm")
        entries += linear(block.ffn.up, f"{key}.ffn.lin1")
        entries += linear(block.ffn.down, f"{key}.ffn.lin2")
        entries += norm(block.ffn_norm, f"{key}.output_layer_norm")
    return entries
