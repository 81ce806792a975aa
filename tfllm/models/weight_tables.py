"""The rows every family's weight table is made of: tfllm layer ← Hugging Face keys.

A family's `weights.py` walks its backbone and calls these with its own HF key names. PyTorch
`Linear` weights are `(out, in)`, the transpose of a Keras kernel; GPT-2's `Conv1D` weights are
already `(in, out)` (`transpose=False`).
"""

from tfllm.checkpoints import IDENTITY, TRANSPOSE, WeightEntry, compose, concat
from tfllm.layers import LayerNorm


def embedding(layer, key):
    """A token or position embedding table (`TokenEmbedding`, `PositionEmbedding`): `key` is the full HF name."""
    return [WeightEntry(layer.embeddings, (key,))]


def norm(layer, key):
    """A `LayerNorm` (`key.weight`, `key.bias`) or an `RMSNorm` (`key.weight`)."""
    if isinstance(layer, LayerNorm):
        entries = [WeightEntry(layer.gamma, (f"{key}.weight",))]
        return entries + ([WeightEntry(layer.beta, (f"{key}.bias",))] if layer.beta is not None else [])
    return [WeightEntry(layer.scale, (f"{key}.weight",))]


def linear(layer, key, transpose=True):
    """A `Dense`: `key.weight` (transposed unless `transpose=False`) and `key.bias` when it has one."""
    entries = [WeightEntry(layer.kernel, (f"{key}.weight",), TRANSPOSE if transpose else IDENTITY)]
    if getattr(layer, "bias", None) is not None:
        entries.append(WeightEntry(layer.bias, (f"{key}.bias",)))
    return entries


def fused(layer, keys, sizes):
    """Several PyTorch `Linear`s concatenated along their output axis into one `Dense` (fused q/k/v).

    Args:
        layer: the fused `Dense`.
        keys: the HF module names, in the kernel's order.
        sizes: each one's output width.
    """
    entries = [WeightEntry(layer.kernel, tuple(f"{key}.weight" for key in keys), compose(concat(0, sizes), TRANSPOSE))]
    if getattr(layer, "bias", None) is not None:
        entries.append(WeightEntry(layer.bias, tuple(f"{key}.bias" for key in keys), concat(0, sizes)))
    return entries


def qkv(attention, keys):
    """A `MultiHeadAttention`'s fused query/key/value projection from the HF `keys` of q, k and v."""
    kv_width = attention.num_key_value_heads * attention.head_dim
    return fused(attention.qkv, keys, [attention.num_heads * attention.head_dim, kv_width, kv_width])
