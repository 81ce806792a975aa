"""GPT-2's `config.json` ↔ `GPT2Backbone` constructor arguments."""

from tfllm.models.hf_config import ACTIVATIONS_TO_HF, activation_from_hf, config_sizes, refuse_unsupported

# Options that change the computation in ways tfllm does not implement: option -> the only value accepted.
UNSUPPORTED = {
    "add_cross_attention": False,
    "scale_attn_by_inverse_layer_idx": False,
    "scale_attn_weights": True,
    "tie_word_embeddings": True,
}


def config_from_hf(hf):
    """Maps a GPT-2 `config.json` dict to `(backbone_kwargs, task_kwargs)`."""
    refuse_unsupported("GPT-2", hf, UNSUPPORTED)
    activation = activation_from_hf("GPT-2", hf, "activation_function", "gelu_new")
    n_embd = hf.get("n_embd", 768)
    backbone = dict(
        vocabulary_size=hf.get("vocab_size", 50257),
        num_layers=hf.get("n_layer", 12),
        num_heads=hf.get("n_head", 12),
        hidden_dim=n_embd,
        intermediate_dim=hf.get("n_inner") or 4 * n_embd,
        max_sequence_length=hf.get("n_positions", 1024),
        layer_norm_epsilon=hf.get("layer_norm_epsilon", 1e-5),
        dropout=hf.get("resid_pdrop", 0.1),
        activation=activation,
        initializer_range=hf.get("initializer_range", 0.02),
    )
    task = dict(
        bos_token_id=hf.get("bos_token_id"),
        eos_token_id=hf.get("eos_token_id"),
        pad_token_id=hf.get("pad_token_id"),
    )
    return backbone, task


def config_to_hf(backbone, task):
    """Maps `GPT2Backbone.get_config()` and the task's config to a GPT-2 `config.json` dict."""
    hf = dict(
        vocab_size=backbone["vocabulary_size"],
        n_layer=backbone["num_layers"],
        n_head=backbone["num_heads"],
        n_embd=backbone["hidden_dim"],
        n_inner=backbone["intermediate_dim"],
        n_positions=backbone["max_sequence_length"],
        n_ctx=backbone["max_sequence_length"],
        layer_norm_epsilon=backbone["layer_norm_epsilon"],
        resid_pdrop=backbone["dropout"],
        embd_pdrop=backbone["dropout"],
        attn_pdrop=backbone["dropout"],
        activation_function=ACTIVATIONS_TO_HF[backbone["activation"]],
        initializer_range=backbone["initializer_range"],
        tie_word_embeddings=True,
    )
    hf.update({key: value for key, value in task.items() if value is not None})
    return hf


def parameter_terms(backbone):
    """`GPT2Backbone`'s parameter count (as transformers' `GPT2Model`), by part, each named by its config fields."""
    sizes = config_sizes(backbone, {"vocabulary_size": "vocab_size", "hidden_dim": "n_embd", "num_layers": "n_layer",
                                    "intermediate_dim": "n_inner", "max_sequence_length": "n_positions"})
    vocab, d, layers, inner, positions = sizes.values()
    block = 2 * 2 * d + (3 * d * d + 3 * d) + (d * d + d) + (d * inner + inner) + (inner * d + d)
    return {
        f"the token embedding (vocab_size={vocab} x n_embd={d})": vocab * d,
        f"the position embedding (n_positions={positions} x n_embd={d})": positions * d,
        f"n_layer={layers} blocks of n_embd={d}, n_inner={inner}": layers * block + 2 * d,
    }
