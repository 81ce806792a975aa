"""BERT's `config.json` ↔ `BertBackbone` constructor arguments."""

from tfllm.models.hf_config import ACTIVATIONS_TO_HF, activation_from_hf, config_sizes, refuse_unsupported

# Options that change the computation in ways tfllm does not implement: option -> the only value accepted.
UNSUPPORTED = {
    "position_embedding_type": "absolute",
    "is_decoder": False,
    "add_cross_attention": False,
}


def _num_labels(hf):
    if hf.get("id2label"):
        return len(hf["id2label"])
    return hf.get("num_labels", 2)  # transformers' default


def config_from_hf(hf, family="BERT"):
    """Maps a BERT `config.json` dict to `(backbone_kwargs, task_kwargs)`.

    Args:
        hf: the `config.json` dict.
        family: the family named in refusals (a family whose `config.json` has BERT's keys names itself).
    """
    refuse_unsupported(family, hf, UNSUPPORTED)
    activation = activation_from_hf(family, hf, "hidden_act", "gelu")
    backbone = dict(
        vocabulary_size=hf.get("vocab_size", 30522),
        num_layers=hf.get("num_hidden_layers", 12),
        num_heads=hf.get("num_attention_heads", 12),
        hidden_dim=hf.get("hidden_size", 768),
        intermediate_dim=hf.get("intermediate_size", 3072),
        max_sequence_length=hf.get("max_position_embeddings", 512),
        type_vocabulary_size=hf.get("type_vocab_size", 2),
        layer_norm_epsilon=hf.get("layer_norm_eps", 1e-12),
        dropout=hf.get("hidden_dropout_prob", 0.1),
        activation=activation,
        initializer_range=hf.get("initializer_range", 0.02),
    )
    return backbone, task_kwargs_from_hf(hf)


def task_kwargs_from_hf(hf):
    """The task settings of a BERT-like `config.json`: `num_labels`, `pad_token_id` and `id2label`."""
    return dict(num_labels=_num_labels(hf), pad_token_id=hf.get("pad_token_id", 0), id2label=hf.get("id2label"))


def config_to_hf(backbone, task):
    """Maps `BertBackbone.get_config()` and the task's config to a BERT `config.json` dict."""
    hf = dict(
        vocab_size=backbone["vocabulary_size"],
        num_hidden_layers=backbone["num_layers"],
        num_attention_heads=backbone["num_heads"],
        hidden_size=backbone["hidden_dim"],
        intermediate_size=backbone["intermediate_dim"],
        max_position_embeddings=backbone["max_sequence_length"],
        type_vocab_size=backbone["type_vocabulary_size"],
        layer_norm_eps=backbone["layer_norm_epsilon"],
        hidden_dropout_prob=backbone["dropout"],
        attention_probs_dropout_prob=backbone["dropout"],
        hidden_act=ACTIVATIONS_TO_HF[backbone["activation"]],
        initializer_range=backbone["initializer_range"],
        position_embedding_type="absolute",
    )
    return {**hf, **task_to_hf(task)}


def task_to_hf(task):
    """A task model's `task_config()` as `config.json` settings: the labels and the special token ids."""
    task = dict(task)
    hf = {}
    num_labels = task.pop("num_labels", None)
    if num_labels is not None:
        hf["id2label"] = {str(i): f"LABEL_{i}" for i in range(num_labels)}
        hf["label2id"] = {f"LABEL_{i}": i for i in range(num_labels)}
    hf.update({key: value for key, value in task.items() if value is not None})
    return hf


def parameter_terms(backbone):
    """`BertBackbone`'s parameter count (as transformers' `BertModel`), by part, each named by its config fields."""
    sizes = config_sizes(backbone, {
        "vocabulary_size": "vocab_size", "hidden_dim": "hidden_size", "num_layers": "num_hidden_layers",
        "intermediate_dim": "intermediate_size", "max_sequence_length": "max_position_embeddings",
        "type_vocabulary_size": "type_vocab_size",
    })
    vocab, d, layers, inner, positions, types = sizes.values()
    block = 4 * (d * d + d) + 2 * d + (d * inner + inner) + (inner * d + d) + 2 * d
    return {
        f"the token embedding (vocab_size={vocab} x hidden_size={d})": vocab * d,
        f"the position and token type embeddings (max_position_embeddings={positions}, type_vocab_size={types}, "
        f"hidden_size={d})": (positions + types) * d + 2 * d,
        f"num_hidden_layers={layers} blocks of hidden_size={d}, intermediate_size={inner}, and the pooler":
            layers * block + d * d + d,
    }
