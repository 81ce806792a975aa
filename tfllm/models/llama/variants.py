"""The checkpoint families the Llama architecture reproduces, as data: what each fixes, reads and writes.

A Mistral or a Qwen2 is a Llama with some options fixed by its architecture; the config mapping
reads these entries instead of comparing `model_type` strings.
"""

import dataclasses

# `(attention_bias, attention_output_bias, mlp_bias)`: biases on q/k/v, on o_proj, on the MLP.
NO_BIASES = (False, False, False)


@dataclasses.dataclass(frozen=True)
class LlamaVariant:
    """One `model_type` the Llama family loads and saves.

    Attributes:
        model_type: `config.json`'s `model_type`, written back on save.
        biases: the `(attention_bias, attention_output_bias, mlp_bias)` the architecture fixes, or
            None when `config.json`'s `attention_bias` (q/k/v and o_proj) and `mlp_bias` say.
        sliding_window_switch: the `config.json` key that turns `sliding_window` on (Qwen2's
            `use_sliding_window`); None when a `sliding_window` that is set is always used.
        hf_extra: `config.json` entries written on save besides the shared ones.
    """

    model_type: str
    biases: tuple = None
    sliding_window_switch: str = None
    hf_extra: dict = dataclasses.field(default_factory=dict)


_NO_WINDOW = {"sliding_window": None, "use_sliding_window": False}

VARIANTS = {
    variant.model_type: variant
    for variant in (
        LlamaVariant("llama"),
        LlamaVariant("mistral", biases=NO_BIASES, hf_extra=_NO_WINDOW),
        LlamaVariant("qwen2", biases=(True, False, False), sliding_window_switch="use_sliding_window",
                     hf_extra=_NO_WINDOW),
    )
}
