"""T5's `config.json` ↔ `T5Backbone` and `T5Seq2SeqLM` constructor arguments."""

from tfllm.models.hf_config import config_sizes

# `feed_forward_proj` -> (activation, gated): T5 v1.0's ReLU and v1.1 / Flan-T5's GeGLU, whose GELU
# transformers computes with the tanh approximation ("gelu_new").
FEED_FORWARD = {"relu": ("relu", False), "gated-gelu": ("gelu_tanh", True)}


def _feed_forward(hf):
    proj = hf.get("feed_forward_proj", "relu")
    if proj not in FEED_FORWARD:
        raise NotImplementedError(
            f"T5 config option `feed_forward_proj={proj!r}` is not implemented by tfllm "
            f"(supported: {', '.join(repr(name) for name in FEED_FORWARD)})."
        )
    return FEED_FORWARD[proj]


def _refuse(hf, option, supported):
    if option in hf and hf[option] != supported:
        raise NotImplementedError(
            f"T5 config option `{option}={hf[option]!r}` is not implemented by tfllm (only {option}={supported!r})."
        )


def config_from_hf(hf):
    """Maps a T5 `config.json` dict to `(backbone_kwargs, task_kwargs)`."""
    activation, gated = _feed_forward(hf)
    _refuse(hf, "is_encoder_decoder", True)
    _refuse(hf, "tie_encoder_decoder", False)
    num_layers = hf.get("num_layers", 6)
    pad_token_id = hf.get("pad_token_id", 0)
    start = hf.get("decoder_start_token_id")
    backbone = dict(
        vocabulary_size=hf.get("vocab_size", 32128),
        num_layers=num_layers,
        num_decoder_layers=hf.get("num_decoder_layers") or num_layers,
        num_heads=hf.get("num_heads", 8),
        hidden_dim=hf.get("d_model", 512),
        intermediate_dim=hf.get("d_ff", 2048),
        head_dim=hf.get("d_kv", 64),
        relative_attention_num_buckets=hf.get("relative_attention_num_buckets", 32),
        relative_attention_max_distance=hf.get("relative_attention_max_distance", 128),
        layer_norm_epsilon=hf.get("layer_norm_epsilon", 1e-6),
        activation=activation,
        gated_ffn=gated,
        dropout=hf.get("dropout_rate", 0.1),
        initializer_factor=hf.get("initializer_factor", 1.0),
        # T5 starts decoding with its pad token; transformers requires the key, tfllm falls back to it.
        decoder_start_token_id=pad_token_id if start is None else start,
    )
    task = dict(
        tie_word_embeddings=bool(hf.get("tie_word_embeddings", True)),
        eos_token_id=hf.get("eos_token_id", 1),
        pad_token_id=pad_token_id,
    )
    return backbone, task


def _feed_forward_proj(backbone):
    received = (backbone["activation"], backbone["gated_ffn"])
    for name, value in FEED_FORWARD.items():
        if value == received:
            return name
    raise ValueError(
        f"A T5 checkpoint's feed-forward is one of {FEED_FORWARD}; this backbone has activation="
        f"{received[0]!r} and gated_ffn={received[1]}, which transformers' T5 cannot load."
    )


def config_to_hf(backbone, task):
    """Maps `T5Backbone.get_config()` and the task's config to a T5 `config.json` dict."""
    hf = dict(
        model_type="t5",
        vocab_size=backbone["vocabulary_size"],
        d_model=backbone["hidden_dim"],
        d_kv=backbone["head_dim"],
        d_ff=backbone["intermediate_dim"],
        num_layers=backbone["num_layers"],
        num_decoder_layers=backbone["num_decoder_layers"],
        num_heads=backbone["num_heads"],
        relative_attention_num_buckets=backbone["relative_attention_num_buckets"],
        relative_attention_max_distance=backbone["relative_attention_max_distance"],
        layer_norm_epsilon=backbone["layer_norm_epsilon"],
        feed_forward_proj=_feed_forward_proj(backbone),
        dropout_rate=backbone["dropout"],
        initializer_factor=backbone["initializer_factor"],
        decoder_start_token_id=backbone["decoder_start_token_id"],
        is_encoder_decoder=True,
    )
    hf.update({key: value for key, value in task.items() if value is not None})
    return hf


def parameter_terms(backbone):
    """`T5Backbone`'s parameter count (as transformers' `T5Model`), by part, each named by its config fields."""
    sizes = config_sizes(backbone, {
        "vocabulary_size": "vocab_size", "hidden_dim": "d_model", "num_layers": "num_layers",
        "num_decoder_layers": "num_decoder_layers", "intermediate_dim": "d_ff", "num_heads": "num_heads",
        "head_dim": "d_kv", "relative_attention_num_buckets": "relative_attention_num_buckets",
    })
    vocab, d, layers, decoder_layers, inner, heads, head_dim, buckets = sizes.values()
    attention = 4 * d * heads * head_dim + d  # q, k, v, o and the norm before it
    feed_forward = (3 if backbone["gated_ffn"] else 2) * d * inner + d
    stacks = buckets * heads * 2 + d * 2  # one relative bias table and one final norm per stack
    return {
        f"the shared embedding (vocab_size={vocab} x d_model={d})": vocab * d,
        f"num_layers={layers} + num_decoder_layers={decoder_layers} blocks of d_model={d}, d_ff={inner}, "
        f"num_heads={heads} x d_kv={head_dim}":
            layers * (attention + feed_forward) + decoder_layers * (2 * attention + feed_forward) + stacks,
    }
