"""What every family's `config.json` mapping shares: activation names, refusing unsupported options, sizes."""

from tfllm.errors import invalid_argument

# transformers' activation names -> tfllm's (`tfllm.layers.ACTIVATIONS`), and back.
ACTIVATIONS_FROM_HF = {"gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "relu": "relu",
                       "silu": "silu", "swish": "silu"}
ACTIVATIONS_TO_HF = {"gelu": "gelu", "gelu_tanh": "gelu_new", "relu": "relu", "silu": "silu"}


def refuse_unsupported(family, hf, unsupported):
    """Raises `NotImplementedError` naming the first option of `hf` whose value tfllm does not implement.

    Args:
        family: the family's display name ("GPT-2"), for the message.
        hf: the `config.json` dict.
        unsupported: option -> the only value tfllm accepts for it.
    """
    for option, supported in unsupported.items():
        if option in hf and hf[option] != supported:
            raise NotImplementedError(
                f"{family} config option `{option}={hf[option]!r}` is not implemented by tfllm "
                f"(only {option}={supported!r})."
            )


def activation_from_hf(family, hf, key, default):
    """Returns tfllm's name for the activation `hf[key]`, or raises `NotImplementedError` naming it."""
    activation = hf.get(key, default)
    if activation not in ACTIVATIONS_FROM_HF:
        raise NotImplementedError(
            f"{family} config option `{key}={activation!r}` is not implemented by tfllm. "
            f"Supported: {sorted(ACTIVATIONS_FROM_HF)}"
        )
    return ACTIVATIONS_FROM_HF[activation]


def config_sizes(backbone, names):
    """Reads sizes from backbone kwargs, each checked to be a positive integer and keyed by its config.json name.

    Args:
        backbone: the backbone kwargs `config_from_hf` returned.
        names: tfllm name -> config.json name, e.g. `{"vocabulary_size": "vocab_size"}`.

    Raises:
        ValueError: a size is not a positive integer (`vocab_size: 1e12` is a float in JSON).
    """
    sizes = {}
    for name, hf_name in names.items():
        value = backbone[name]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise invalid_argument(hf_name, "a positive integer", value)
        sizes[hf_name] = value
    return sizes
