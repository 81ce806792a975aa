"""T5's weight table: tfllm variable ← Hugging Face key (PyTorch names; T5 has no base-model prefix).

PyTorch `Linear` weights are `(out, in)`, so every kernel is transposed. Self-attention's separate
q/k/v are concatenated into tfllm's fused query/key/value kernel; cross-attention keeps its query
projection and fuses k/v into one key/value kernel. Only block 0 of each stack has the relative
position bias, which tfllm keeps beside the stack (`encoder_position_bias`, `decoder_position_bias`).
"""

from tfllm.models.t5.block import T5DecoderBlock
from tfllm.models.weight_tables import embedding, fused, linear, norm, qkv

# The embedding's tied copies, the tied (or, for the base model, unused) head, and a bias that
# old checkpoints carry and transformers ignores as well.
IGNORABLE = (
    r"encoder\.embed_tokens\.weight",
    r"decoder\.embed_tokens\.weight",
    r"lm_head\.weight",
    r"decoder\.block\.0\.layer\.1\.EncDecAttention\.relative_attention_bias\.weight",
)


def _cross_attention(attention, key):
    inner = attention.num_heads * attention.head_dim
    return [
        *linear(attention.query, f"{key}.q"),
        *fused(attention.key_value, [f"{key}.k", f"{key}.v"], [inner] * 2),
        *linear(attention.output_dense, f"{key}.o"),
    ]


def _feed_forward(ffn, key):
    if ffn.gate is None:
        return [*linear(ffn.up, f"{key}.wi"), *linear(ffn.down, f"{key}.wo")]
    # transformers computes act(wi_0(x)) * wi_1(x): wi_0 is the gate.
    return [*linear(ffn.gate, f"{key}.wi_0"), *linear(ffn.up, f"{key}.wi_1"), *linear(ffn.down, f"{key}.wo")]


def _block(block, key):
    entries = norm(block.attention_norm, f"{key}.layer.0.layer_norm")
    entries += qkv(block.attention, [f"{key}.layer.0.SelfAttention.{name}" for name in "qkv"])
    entries += linear(block.attention.output_dense, f"{key}.layer.0.SelfAttention.o")
    ffn_layer = 1
    if isinstance(block, T5DecoderBlock):
        entries += norm(block.cross_attention_norm, f"{key}.layer.1.layer_norm")
        entries += _cross_attention(block.cross_attention, f"{key}.layer.1.EncDecAttention")
        ffn_layer = 2
    entries += norm(block.ffn_norm, f"{key}.layer.{ffn_layer}.layer_norm")
    entries += _feed_forward(block.ffn, f"{key}.layer.{ffn_layer}.DenseReluDense")
    return entries


def _stack(blocks, position_bias, final_norm, name):
    entries = embedding(position_bias, f"{name}.block.0.layer.0.SelfAttention.relative_attention_bias.weight")
    for i, block in enumerate(blocks):
        entries += _block(block, f"{name}.block.{i}")
    entries += norm(final_norm, f"{name}.final_layer_norm")
    return entries


def weight_table(backbone):
    """Returns the `WeightEntry` list of a built `T5Backbone`."""
    return [
        *embedding(backbone.token_embedding, "shared.weight"),
        *_stack(backbone.encoder_layers, backbone.encoder_position_bias, backbone.encoder_norm, "encoder"),
        *_stack(backbone.decoder_layers, backbone.decoder_position_bias, backbone.decoder_norm, "decoder"),
    ]
