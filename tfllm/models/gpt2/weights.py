"""GPT-2's weight table: tfllm variable ← Hugging Face key (PyTorch names, without "transformer.").

GPT-2 uses `Conv1D` whose weight is already `(in, out)`, the Keras kernel layout, and one fused
`c_attn` projection, which is tfllm's fused query/key/value projection as it is.
"""

from tfllm.checkpoints import WeightEntry

# Buffers older checkpoints carry and the tied head that task checkpoints may repeat.
IGNORABLE = (r"h\.\d+\.attn\.bias", r"h\.\d+\.attn\.masked_bias", r"lm_head\.weight")


def _norm(layer, key):
    return [WeightEntry(layer.gamma, (f"{key}.weight",)), WeightEntry(layer.beta, (f"{key}.bias",))]


def _dense(layer, key):
    return [WeightEntry(layer.kernel, (f"{key}.weight",)), WeightEntry(layer.bias, (f"{key}.bias",))]


def weight_table(backbone):
    """Returns the `WeightEntry` list of a built `GPT2Backbone`."""
    entries = [
        WeightEntry(backbone.token_embedding.embeddings, ("wte.weight",)),
        WeightEntry(backbone.position_embedding.embeddings, ("wpe.weight",)),
    ]
    for i, block in enumerate(backbone.transformer_layers):
        key = f"h.{i}"
        entries += _norm(block.attention_norm, f"{key}.ln_1")
        entries += _dense(block.attention.qkv, f"{key}.attn.c_attn")
        entries += _dense(block.attention.output_dense, f"{key}.attn.c_proj")
        entries += _norm(block.ffn_norm, f"{key}.ln_2")
        entries += _dense(block.ffn.up, f"{key}.mlp.c_fc")
        entries += _dense(block.ffn.down, f"{key}.mlp.c_proj")
    entries += _norm(backbone.layer_norm, "ln_f")
    return entries
