"""Llama with its language-model head: a separate output projection, or tied to the embedding."""

import keras
from keras import ops

from tfllm.checkpoints import TRANSPOSE, WeightEntry
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
        super().__init__(backbone, **kwargs)
        self.tie_word_embeddings = tie_word_embeddings
        self.lm_head = None
        if not tie_word_embeddings:
            self.lm_head = keras.layers.Dense(
                backbone.vocabulary_size,
                use_bias=False,
                kernel_initializer=keras.initializers.RandomNormal(stddev=backbone.initializer_range),
                dtype=backbone.dtype_policy,
                name="lm_head",
            )

    def build(self, input_shape=None):
        super().build(input_shape)
        if self.lm_head is not None and not self.lm_head.built:
            self.lm_head.build((None, None, self.backbone.hidden_dim))

    def compute_logits(self, hidden):
        if self.lm_head is None:
            return super().compute_logits(hidden)
        return ops.cast(self.lm_head(hidden), "float32")  # float32 logits under mixed precision too

    def head_weight_table(self):
        if self.lm_head is None:
            return []
        # PyTorch's Linear weight is (vocabulary_size, hidden_dim); the Keras kernel is its transpose.
        return [WeightEntry(self.lm_head.kernel, ("lm_head.weight",), TRANSPOSE)]

    def task_config(self):
        return {**super().task_config(), "tie_word_embeddings": self.tie_word_embeddings}
