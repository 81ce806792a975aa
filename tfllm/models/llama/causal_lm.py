"""Llama with its language-model head: a separate output projection, or tied to the embedding."""

import keras

from tfllm.models.causal_lm import CausalLM


@keras.saving.register_keras_serializable(package="tfllm")
class LlamaCausalLM(CausalLM):
    """Llama, Mistral or Qwen2 language model: `LlamaBackbone` + an LM head.

    Args:
        backbone: a `LlamaBackbone`.
        tie_word_embeddings: project onto the vocabulary with the transposed token embedding
            (Qwen2's small models) instead of a separate bias-free `lm_head`.
        **kwargs: `bos_token_id`, `eos_token_id`, `pad_token_id` and Keras model arguments.

    Example:
    >>> model = tfllm.AutoModelForCausalLM.from_pretrained("path/to/llama")
    >>> ids = model.generate(tok(["Hello"], return_tensors="tf")["input_ids"], max_new_tokens=8)
    """

    model_type = "llama"

    def __init__(self, backbone, tie_word_embeddings=False, **kwargs):
        super().__init__(backbone, tie_word_embeddings=tie_word_embeddings, **kwargs)

    def task_config(self):
        return {**super().task_config(), "tie_word_embeddings": self.tie_word_embeddings}
