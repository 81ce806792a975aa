"""Llama's weight table: tfllm variable ← Hugging Face key (PyTorch names, without "model.").

PyTorch `Linear` weights are `(out, in)`, so every kernel is transposed; the separate q/k/v
projections are concatenated along the output axis into tfllm's fused query/key/value kernel.
"""

from tfllm.models.weight_tables import embedding, linear, norm, qkv

# Cached rotary tables some checkpoints carry, and the head when only the backbone is loaded.
IGNORABLE = (r"layers\.\d+\.self_attn\.rotary_emb\.inv_freq", r"rotary_emb\.inv_freq", r"lm_head\.weight")


def weight_table(backbone):
    """Returns the `WeightEntry` list of a built `LlamaBackbone`."""
    entries = embedding(backbone.token_embedding, "embed_tokens.weight")
    for i, block in enumerate(backbone.transformer_layers):
        key = f"layers.{i}"
        entries += norm(block.attention_norm, f"{key}.input_layernorm")
        entries += qkv(block.attention, [f"{key}.self_attn.{name}_proj" for name in "qkv"])
        entries += linear(block.attention.output_dense, f"{key}.self_attn.o_proj")
        entries += norm(block.ffn_norm, f"{key}.post_attention_layernorm")
        for name in ("gate", "up", "down"):
            entries += linear(getattr(block.ffn, name), f"{key}.mlp.{name}_proj")
    entries += norm(backbone.layer_norm, "norm")
    return entries
