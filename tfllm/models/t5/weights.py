"""T5's weight table: tfllm variable ← Hugging Face key (PyTorch names; T5 has no base-model prefix).

PyTorch `Linear` weights are `(out, in)`, so every kernel is transposed. Self-attention's separate
q/k/v are concatenated into tfllm's fused query/key/value kernel; cross-attention keeps its query
projection and fuses k/v into one key/value kernel. Only block 0 of each stack has the relative
position bias, which tfllm keeps beside the stack (`encoder_position_bias`, `decoder_position_bias`).
"""

from tfllm.checkpoints import TRANSPOSE, WeightEntry, compose, concat
from tfllm.models.t5.block import T5DecoderBlock

# The embedding's tied copies, the tied (or, for the base model, unused) head, and a bias that
# old checkpoints carry and transformers ignores as well.
IGNORABLE = (
    r"encoder\.embed_tokens\.weight",
    r"decoder\.embed_tokens\.weight",
    r"lm_head\.weight",
    r"decoder\.block\.0\.layer\.1\.EncDecAttention\.relative_attention_bias\.weight",
)


def _linear(layer, key):
    return WeightEntry(layer.kernel, (f"{key}.weight",), TRANSPOSE)


def _fused(layer, keys, sizes):
    """Several PyTorch projections concatenated along their output axis into one Keras kernel."""
    return WeightEntry(layer.kernel, tuple(f"{key}.weight" for key in keys), compose(concat(0, sizes), TRANSPOSE))


def _self_attention(attention, key):
    inner = attention.num_heads * attention.head_dim
    return [
        _fused(attention.qkv, [f"{key}.{name}" for name in "qkv"], [inner] * 3),
        _linear(attention.output_dense, f"{key}.o"),
    ]


def _cross_attention(attention, key):
    inner = attention.num_heads * attention.head_dim
    return [
        _linear(attention.query, f"{key}.q"),
        _fused(attention.key_value, [f"{key}.k", f"{key}.v"], [inner] * 2),
        _linear(attention.output_dense, f"{key}.o"),
    ]


def _feed_forward(ffn, key):
    if ffn.gate is None:
        return [_linear(ffn.up, f"{key}.wi"), _linear(ffn.down, f"{key}.wo")]
    # transformers computes act(wi_0(x)) * wi_1(x): wi_0 is the gate.
    return [_linear(ffn.gate, f"{key}.wi_0"), _linear(ffn.up, f"{key}.wi_1"), _linear(ffn.down, f"{key}.wo")]


def _block(block, key):
    entries = [WeightEntry(block.attention_norm.scale, (f"{key}.layer.0.layer_norm.weight",))]
    entries += _self_attention(block.attention, f"{key}.layer.0.SelfAttention")
    ffn_layer = 1
    if isinstance(block, T5DecoderBlock):
        entries.append(WeightEntry(block.cross_attention_norm.scale, (f"{key}.layer.1.layer_norm.weight",)))
        entries += _cross_attention(block.cross_attention, f"{key}.layer.1.EncDecAttention")
        ffn_layer = 2
    entries.append(WeightEntry(block.ffn_norm.scale, (f"{key}.layer.{ffn_layer}.layer_norm.weight",)))
    entries += _feed_forward(block.ffn, f"{key}.layer.{ffn_layer}.DenseReluDense")
    return entries


def _stack(blocks, position_bias, norm, name):
    bias_key = f"{name}.block.0.layer.0.SelfAttention.relative_attention_bias.weight"
    entries = [WeightEntry(position_bias.embeddings, (bias_key,))]
    for i, block in enumerate(blocks):
        entries += _block(block, f"{name}.block.{i}")
    entries.append(WeightEntry(norm.scale, (f"{name}.final_layer_norm.weight",)))
    return entries


def weight_table(backbone):
    """Returns the `WeightEntry` list of a built `T5Backbone`."""
    return [
        WeightEntry(backbone.token_embedding.embeddings, ("shared.weight",)),
        *_stack(backbone.encoder_layers, backbone.encoder_position_bias, backbone.encoder_norm, "encoder"),
        *_stack(backbone.decoder_layers, backbone.decoder_position_bias, backbone.decoder_norm, "decoder"),
    ]
