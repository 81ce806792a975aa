"""Llama's weight table: tfllm variable ← Hugging Face key (PyTorch names, without "model.").

PyTorch `Linear` weights are `(out, in)`, so every kernel is transposed; the separate q/k/v
projections are concatenated along the output axis into tfllm's fused query/key/value kernel.
"""

from tfllm.checkpoints import TRANSPOSE, WeightEntry, compose, concat

# Cached rotary tables some checkpoints carry, and the head when only the backbone is loaded.
IGNORABLE = (r"layers\.\d+\.self_attn\.rotary_emb\.inv_freq", r"rotary_emb\.inv_freq", r"lm_head\.weight")


def _linear(layer, key):
    entries = [WeightEntry(layer.kernel, (f"{key}.weight",), TRANSPOSE)]
    if layer.use_bias:
        entries.append(WeightEntry(layer.bias, (f"{key}.bias",)))
    return entries


def _qkv(attention, key):
    sizes = [
        attention.num_heads * attention.head_dim,
        attention.num_key_value_heads * attention.head_dim,
        attention.num_key_value_heads * attention.head_dim,
    ]
    names = [f"{key}.{name}_proj" for name in ("q", "k", "v")]
    entries = [WeightEntry(attention.qkv.kernel, tuple(f"{n}.weight" for n in names), compose(concat(0, sizes), TRANSPOSE))]
    if attention.use_bias:
        entries.append(WeightEntry(attention.qkv.bias, tuple(f"{n}.bias" for n in names), concat(0, sizes)))
    return entries


def weight_table(backbone):
    """Returns the `WeightEntry` list of a built `LlamaBackbone`."""
    entries = [WeightEntry(backbone.token_embedding.embeddings, ("embed_tokens.weight",))]
    for i, block in enumerate(backbone.transformer_layers):
        key = f"layers.{i}"
        entries.append(WeightEntry(block.attention_norm.scale, (f"{key}.input_layernorm.weight",)))
        entries += _qkv(block.attention, f"{key}.self_attn")
        entries += _linear(block.attention.output_dense, f"{key}.self_attn.o_proj")
        entries.append(WeightEntry(block.ffn_norm.scale, (f"{key}.post_attention_layernorm.weight",)))
        entries += _linear(block.ffn.gate, f"{key}.mlp.gate_proj")
        entries += _linear(block.ffn.up, f"{key}.mlp.up_proj")
        entries += _linear(block.ffn.down, f"{key}.mlp.down_proj")
    entries.append(WeightEntry(backbone.layer_norm.scale, ("norm.weight",)))
    return entries
