"""BERT's weight table: tfllm variable ← Hugging Face key (PyTorch names, without "bert.").

PyTorch `Linear` weights are `(out, in)`, so every kernel is transposed; the separate query, key
and value projections are concatenated into tfllm's fused query/key/value kernel.
"""

from tfllm.checkpoints import TRANSPOSE, WeightEntry, compose, concat

# Buffers, and heads that the base model (or another task) does not use.
IGNORABLE = (
    r"embeddings\.position_ids",
    r"cls\.predictions\..*",
    r"cls\.seq_relationship\..*",
    r"classifier\..*",
)
# Weights a checkpoint may lack (BertForMaskedLM has no pooler); they keep their initial values.
OPTIONAL = (r"pooler\.dense\.(weight|bias)",)


def norm(layer, key):
    return [WeightEntry(layer.gamma, (f"{key}.weight",)), WeightEntry(layer.beta, (f"{key}.bias",))]


def dense(layer, key):
    return [WeightEntry(layer.kernel, (f"{key}.weight",), TRANSPOSE), WeightEntry(layer.bias, (f"{key}.bias",))]


def _attention(attention, key, hidden_dim):
    names = [f"{key}.self.{name}" for name in ("query", "key", "value")]
    sizes = [hidden_dim] * 3
    return [
        WeightEntry(attention.qkv.kernel, tuple(f"{n}.weight" for n in names),
                    compose(concat(axis=0, sizes=sizes), TRANSPOSE)),
        WeightEntry(attention.qkv.bias, tuple(f"{n}.bias" for n in names), concat(axis=0, sizes=sizes)),
        *dense(attention.output_dense, f"{key}.output.dense"),
    ]


def weight_table(backbone):
    """Returns the `WeightEntry` list of a built `BertBackbone`."""
    entries = [
        WeightEntry(backbone.token_embedding.embeddings, ("embeddings.word_embeddings.weight",)),
        WeightEntry(backbone.position_embedding.embeddings, ("embeddings.position_embeddings.weight",)),
        WeightEntry(backbone.token_type_embedding.embeddings, ("embeddings.token_type_embeddings.weight",)),
        *norm(backbone.embeddings_norm, "embeddings.LayerNorm"),
    ]
    for i, block in enumerate(backbone.transformer_layers):
        key = f"encoder.layer.{i}"
        entries += _attention(block.attention, f"{key}.attention", backbone.hidden_dim)
        entries += norm(block.attention_norm, f"{key}.attention.output.LayerNorm")
        entries += dense(block.ffn.up, f"{key}.intermediate.dense")
        entries += dense(block.ffn.down, f"{key}.output.dense")
        entries += norm(block.ffn_norm, f"{key}.output.LayerNorm")
    entries += dense(backbone.pooler, "pooler.dense")
    return entries
