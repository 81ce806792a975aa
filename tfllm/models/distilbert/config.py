"""DistilBERT's `config.json` ↔ `DistilBertBackbone` constructor arguments."""

from tfllm.models.bert.config import task_kwargs_from_hf, task_to_hf
from tfllm.models.hf_config import ACTIVATIONS_TO_HF, activation_from_hf, config_sizes, refuse_unsupported

# Options that change the computation in ways tfllm does not implement: option -> the only value accepted.
UNSUPPORTED = {
    "sinusoidal_pos_embds": False,  # fixed sinusoidal positions; tfllm's position table is learned
    "tie_word_embeddings": True,  # the LM head's projector is always the word embedding
}


def config_from_hf(hf):
    """Maps a DistilBERT `config.json` dict to `(backbone_kwargs, task_kwargs)`."""
    refuse_unsupported("DistilBERT", hf, UNSUPPORTED)
    backbone = dict(
        vocabulary_size=hf.get("vocab_size", 30522),
        num_layers=hf.get("n_layers", 6),
        num_heads=hf.get("n_heads", 12),
        hidden_dim=hf.get("dim", 768),
        intermediate_dim=hf.get("hidden_dim", 3072),
        max_sequence_length=hf.get("max_position_embeddings", 512),
        dropout=hf.get("dropout", 0.1),
        activation=activation_from_hf("DistilBERT", hf, "activation", "gelu"),
        initializer_range=hf.get("initializer_range", 0.02),
    )
    return backbone, task_kwargs_from_hf(hf)


def config_to_hf(backbone, task):
    """Maps `DistilBertBackbone.get_config()` and the task's config to a DistilBERT `config.json` dict.

    Every dropout is the backbone's one rate (the classifier's dropout too).
    """
    hf = dict(
        vocab_size=backbone["vocabulary_size"],
        n_layers=backbone["num_layers"],
        n_heads=backbone["num_heads"],
        dim=backbone["hidden_dim"],
        hidden_dim=backbone["intermediate_dim"],
        max_position_embeddings=backbone["max_sequence_length"],
        dropout=backbone["dropout"],
        attention_dropout=backbone["dropout"],
        seq_classif_dropout=backbone["dropout"],
        activation=ACTIVATIONS_TO_HF[backbone["activation"]],
        initializer_range=backbone["initializer_range"],
        sinusoidal_pos_embds=False,
    )
    return {**hf, **task_to_hf(task)}


def parameter_terms(backbone):
    """`DistilBertBackbone`'s parameter count (as transformers' `DistilBertModel`), by part."""
    sizes = config_sizes(backbone, {
        "vocabulary_size": "vocab_size", "hidden_dim": "dim", "num_layers": "n_layers",
        "intermediate_dim": "hidden_dim", "max_sequence_length": "max_position_embeddings",
    })
    vocab, d, layers, inner, positions = sizes.values()
    block = 4 * (d * d + d) + (d * inner + inner) + (inner * d + d) + 4 * d
    return {
        f"the token embedding (vocab_size={vocab} x dim={d})": vocab * d,
        f"the position embedding and its norm (max_position_embeddings={positions}, dim={d})": positions * d + 2 * d,
        f"n_layers={layers} blocks of dim={d}, hidden_dim={inner}": layers * block,
    }
