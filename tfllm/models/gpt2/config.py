"""GPT-2's `config.json` ↔ `GPT2Backbone` constructor arguments."""

ACTIVATIONS_FROM_HF = {"gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "gelu": "gelu", "relu": "relu", "silu": "silu", "swish": "silu"}
ACTIVATIONS_TO_HF = {"gelu_tanh": "gelu_new", "gelu": "gelu", "relu": "relu", "silu": "silu"}

# Options that change the computation in ways tfllm does not implement: option -> the only value accepted.
UNSUPPORTED = {
    "add_cross_attention": False,
    "scale_attn_by_inverse_layer_idx": False,
    "scale_attn_weights": True,
    "tie_word_embeddings": True,
}


def _refuse_unsupported(hf):
    for option, supported in UNSUPPORTED.items():
        if option in hf and hf[option] != supported:
            raise NotImplementedError(
                f"GPT-2 config option `{option}={hf[option]!r}` is not implemented by tfllm "
                f"(only {option}={supported!r})."
            )
    activation = hf.get("activation_function", "gelu_new")
    if activation not in ACTIVATIONS_FROM_HF:
        raise NotImplementedError(
            f"GPT-2 config option `activation_function={activation!r}` is not implemented by tfllm. "
            f"Supported: {sorted(ACTIVATIONS_FROM_HF)}"
        )


def config_from_hf(hf):
    """Maps a GPT-2 `config.json` dict to `(backbone_kwargs, task_kwargs)`."""
    _refuse_unsupported(hf)
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
        activation=ACTIVATIONS_FROM_HF[hf.get("activation_function", "gelu_new")],
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
