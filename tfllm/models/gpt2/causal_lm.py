"""GPT-2 with its language-model head (tied to the token embedding)."""

import keras

from tfllm.models.causal_lm import CausalLM


@keras.saving.register_keras_serializable(package="tfllm")
class GPT2CausalLM(CausalLM):
    """GPT-2 language model: `GPT2Backbone` + the transposed token embedding as output projection.

    Example:
    >>> model = tfllm.AutoModelForCausalLM.from_pretrained("path/to/gpt2")
    >>> ids = model.generate(tok(["Hello"], return_tensors="tf")["input_ids"], max_new_tokens=8)
    """

    model_type = "gpt2"
