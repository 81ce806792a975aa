"""The causal language model task, shared by decoder-only families."""

import tensorflow as tf

from tfllm.generation.protocol import DecodeState
from tfllm.models import tasks
from tfllm.models.lm_head import LMHead, LMHeadTask
from tfllm.models.task import TaskModel


class CausalLM(LMHeadTask, TaskModel):
    """A backbone plus a language-model head; `call` returns logits.

    A family subclasses this and sets `model_type`; the backbone supplies `forward`,
    `init_cache`, `max_sequence_length` and `token_embedding` (the tied head).

    Args:
        backbone: the family's backbone.
        tie_word_embeddings: project onto the vocabulary with the transposed token embedding
            instead of a separate bias-free `lm_head` kernel (see `LMHead`).
        bos_token_id: the checkpoint's beginning-of-sequence id, if any.
        eos_token_id: the default id that stops `generate`, if any.
        pad_token_id: the id `generate` writes after a sequence has ended. Defaults to
            `eos_token_id`, else 0.

    Call arguments:
        inputs: a tokenizer's dict (`input_ids`, `attention_mask`) or a tensor of token ids.
        training: enables dropout.

    Returns:
        `(batch_size, sequence_length, vocabulary_size)` logits. `inspect` adds the attentions
        and hidden states (see `tfllm.models.decoder.run_blocks`).
    """

    task = tasks.CAUSAL_LM
    model_type = None
    export_formats = tasks.EXPORT_FORMATS

    def __init__(self, backbone, bos_token_id=None, eos_token_id=None, pad_token_id=None, tie_word_embeddings=True,
                 **kwargs):
        super().__init__(backbone, **kwargs)
        self.bos_token_id = bos_token_id
        self.eos_token_id = eos_token_id
        self.pad_token_id = pad_token_id
        self.tie_word_embeddings = bool(tie_word_embeddings)
        self.lm_head = LMHead(backbone.vocabulary_size, tied=tie_word_embeddings,
                              initializer_range=backbone.initializer_range, dtype=backbone.dtype_policy, name="lm_head")

    def call_with_cache(self, token_ids, padding_mask, cache, cache_index):
        """One forward step over a preallocated cache: returns `(hidden_states, cache)`."""
        outputs = self.backbone.forward(token_ids, padding_mask, cache=cache, cache_index=cache_index)
        return outputs["last_hidden_state"], outputs["cache"]

    def prefill(self, token_ids, padding_mask, max_new_tokens):
        """Runs left-padded prompts into a fresh cache sized for `max_new_tokens` more tokens.

        Returns:
            `(logits, state, prefix)`: the next-token logits `(batch_size, vocabulary_size)`, the
            `DecodeState` (cache, padding mask, prompt length) and the prompt ids the output
            starts with. See `tfllm.generation.protocol`.
        """
        batch_size, prompt_length = tf.shape(token_ids)[0], tf.shape(token_ids)[1]
        full_mask = tf.concat([padding_mask, tf.ones([batch_size, max_new_tokens], tf.int32)], axis=1)
        cache = self.init_cache(batch_size, prompt_length + max_new_tokens)
        hidden, cache = self.call_with_cache(token_ids, full_mask, cache, 0)
        logits = self.compute_logits(hidden[:, -1:, :])[:, 0, :]  # the head only where it is needed
        return logits, DecodeState(cache, full_mask, tf.fill([batch_size], prompt_length)), token_ids

    def decode_step(self, token, step, state):
        """Feeds the `step`-th new token `(batch_size,)`; returns `(logits, state)`."""
        index = state.prompt_length[0] + step
        hidden, cache = self.call_with_cache(token[:, None], state.padding_mask, state.cache, index)
        return self.compute_logits(hidden)[:, 0, :], state._replace(cache=cache)

    def init_cache(self, batch_size, cache_length):
        return self.backbone.init_cache(batch_size, cache_length)

    @property
    def max_sequence_length(self):
        return self.backbone.max_sequence_length

    def task_config(self):
        return {"bos_token_id": self.bos_token_id, "eos_token_id": self.eos_token_id, "pad_token_id": self.pad_token_id}
