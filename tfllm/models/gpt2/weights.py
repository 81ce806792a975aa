"""GPT-2's weight table: tfllm variable ← Hugging Face key (PyTorch names, without "transformer.").

GPT-2 uses `Conv1D` whose weight is already `(in, out)`, the Keras kernel layout, and one fused
`c_attn` projection, which is tfllm's fused query/key/value projection as it is.
"""

from tfllm.models.weight_tables import embedding, linear, norm

# Buffers older checkpoints carry and the tied head that task checkpoints may repeat.
IGNORABLE = (r"h\.\d+\.attn\.bias", r"h\.\d+\.attn\.masked_bias", r"lm_head\.weight")


def weight_table(backbone):
    """Returns the `WeightEntry` list of a built `GPT2Backbone`."""
    entries = [*embedding(backbone.token_embedding, "wte.weight"), *embedding(backbone.position_embedding, "wpe.weight")]
    for i, block in enumerate(backbone.transformer_layers):
        key = f"h.{i}"
        entries += norm(block.attention_norm, f"{key}.ln_1")
        entries += linear(block.attention.qkv, f"{key}.attn.c_attn", transpose=False)
        entries += linear(block.attention.output_dense, f"{key}.attn.c_proj", transpose=False)
        entries += norm(block.ffn_norm, f"{key}.ln_2")
        entries += linear(block.ffn.up, f"{key}.mlp.c_fc", transpose=False)
        entries += linear(block.ffn.down, f"{key}.mlp.c_proj", transpose=False)
    entries += norm(backbone.layer_norm, "ln_f")
    return entries
