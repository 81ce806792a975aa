"""Llama, Mistral and Qwen2 `config.json` ↔ `LlamaBackbone` constructor arguments."""

from tfllm.models.hf_config import config_sizes
from tfllm.models.llama.variants import VARIANTS

_ACTIVATIONS = ("silu", "swish")  # two names for the same function in transformers


def _refuse(option, value, supported):
    raise NotImplementedError(
        f"Llama config option `{option}={value!r}` is not implemented by tfllm (supported: {supported})."
    )


def _rope_scaling_factor(hf):
    scaling = hf.get("rope_scaling")
    if scaling is None:
        return 1.0
    rope_type = scaling.get("rope_type", scaling.get("type"))
    if rope_type == "default":
        return 1.0
    if rope_type != "linear":
        _refuse("rope_scaling", scaling, "None or {'rope_type': 'linear', 'factor': ...}")
    return float(scaling["factor"])


def _check_sliding_window(hf, variant, max_positions):
    if variant.sliding_window_switch is not None and not hf.get(variant.sliding_window_switch, False):
        return
    window = hf.get("sliding_window")
    if window is not None and window < max_positions:
        _refuse("sliding_window", window, f"None, or at least max_position_embeddings ({max_positions})")


def _biases(hf, variant):
    """Returns `(attention_bias, attention_output_bias, mlp_bias)`: biases on q/k/v, on o_proj and on the MLP."""
    if variant.biases is not None:
        return variant.biases
    attention_bias = bool(hf.get("attention_bias", False))  # Llama's covers o_proj too
    return attention_bias, attention_bias, bool(hf.get("mlp_bias", False))


def config_from_hf(hf):
    """Maps a Llama, Mistral or Qwen2 `config.json` dict to `(backbone_kwargs, task_kwargs)`."""
    variant = VARIANTS.get(hf.get("model_type"), VARIANTS["llama"])
    activation = hf.get("hidden_act", "silu")
    if activation not in _ACTIVATIONS:
        _refuse("hidden_act", activation, "'silu'")
    hidden = hf.get("hidden_size", 4096)
    heads = hf.get("num_attention_heads", 32)
    max_positions = hf.get("max_position_embeddings", 2048)
    _check_sliding_window(hf, variant, max_positions)
    attention_bias, attention_output_bias, mlp_bias = _biases(hf, variant)
    backbone = dict(
        vocabulary_size=hf.get("vocab_size", 32000),
        num_layers=hf.get("num_hidden_layers", 32),
        num_heads=heads,
        hidden_dim=hidden,
        intermediate_dim=hf.get("intermediate_size", 11008),
        num_key_value_heads=hf.get("num_key_value_heads") or heads,
        head_dim=hf.get("head_dim") or hidden // heads,
        max_sequence_length=max_positions,
        layer_norm_epsilon=hf.get("rms_norm_eps", 1e-6),
        rope_max_wavelength=float(hf.get("rope_theta", 10000.0)),
        rope_scaling_factor=_rope_scaling_factor(hf),
        attention_bias=attention_bias,
        attention_output_bias=attention_output_bias,
        mlp_bias=mlp_bias,
        dropout=hf.get("attention_dropout", 0.0),
        initializer_range=hf.get("initializer_range", 0.02),
        variant=variant.model_type,
    )
    task = dict(
        tie_word_embeddings=bool(hf.get("tie_word_embeddings", False)),
        bos_token_id=hf.get("bos_token_id"),
        eos_token_id=hf.get("eos_token_id"),
        pad_token_id=hf.get("pad_token_id"),
    )
    return backbone, task


def _hf_biases(backbone, variant):
    """The bias entries of `config.json` for `backbone`, or a `ValueError` when the variant cannot express them."""
    received = (backbone["attention_bias"], backbone["attention_output_bias"], backbone["mlp_bias"])
    described = "attention_bias={}, attention_output_bias={} and mlp_bias={}"
    if variant.biases is not None:
        if received != variant.biases:
            raise ValueError(
                f"A `{variant.model_type}` checkpoint has {described.format(*variant.biases)}; this backbone has "
                f"{described.format(*received)}. Save it with variant='llama'."
            )
        return {}
    if received[0] != received[1]:
        raise ValueError(
            "A `llama` checkpoint's attention_bias covers the query/key/value and output projections alike; this "
            f"backbone has {described.format(*received)}."
        )
    return {"attention_bias": received[0], "mlp_bias": received[2]}


def config_to_hf(backbone, task):
    """Maps `LlamaBackbone.get_config()` and the task's config to a `config.json` of the backbone's variant."""
    variant = VARIANTS[backbone["variant"]]
    biases = _hf_biases(backbone, variant)
    factor = backbone["rope_scaling_factor"]
    hf = dict(
        model_type=backbone["variant"],
        vocab_size=backbone["vocabulary_size"],
        num_hidden_layers=backbone["num_layers"],
        num_attention_heads=backbone["num_heads"],
        num_key_value_heads=backbone["num_key_value_heads"],
        hidden_size=backbone["hidden_dim"],
        intermediate_size=backbone["intermediate_dim"],
        head_dim=backbone["head_dim"] or backbone["hidden_dim"] // backbone["num_heads"],
        max_position_embeddings=backbone["max_sequence_length"],
        rms_norm_eps=backbone["layer_norm_epsilon"],
        rope_theta=backbone["rope_max_wavelength"],
        rope_scaling=None if factor == 1.0 else {"rope_type": "linear", "factor": factor},
        attention_dropout=backbone["dropout"],
        initializer_range=backbone["initializer_range"],
        hidden_act="silu",
        tie_word_embeddings=False,
    )
    hf.update(**biases, **variant.hf_extra)
    hf.update({key: value for key, value in task.items() if value is not None})
    return hf


def parameter_terms(backbone):
    """`LlamaBackbone`'s parameter count (as transformers' `LlamaModel`), by part, each named by its config fields."""
    sizes = config_sizes(backbone, {
        "vocabulary_size": "vocab_size", "hidden_dim": "hidden_size", "num_layers": "num_hidden_layers",
        "intermediate_dim": "intermediate_size", "num_heads": "num_attention_heads",
        "num_key_value_heads": "num_key_value_heads", "head_dim": "head_dim",
    })
    vocab, d, layers, inner, heads, kv_heads, head_dim = sizes.values()
    attention = d * heads * head_dim * 2 + d * kv_heads * head_dim * 2
    biases = ((heads + 2 * kv_heads) * head_dim * backbone["attention_bias"] + d * backbone["attention_output_bias"]
              + (d + 2 * inner) * backbone["mlp_bias"])
    block = attention + 3 * d * inner + 2 * d + biases
    return {
        f"the token embedding (vocab_size={vocab} x hidden_size={d})": vocab * d,
        f"num_hidden_layers={layers} blocks of hidden_size={d}, intermediate_size={inner}, "
        f"num_attention_heads={heads} x head_dim={head_dim}": layers * block + d,
    }
