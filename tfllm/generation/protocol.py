"""What generation needs from a model: the decoding contract that tfllm's task models implement.

Generation sits below `tfllm.models` (a task model's `generate` calls it), so it names the methods
and attributes it uses here instead of importing model classes. A model that generates has:

- `prefill(token_ids, padding_mask, max_new_tokens)` → `(logits, state, prefix)`: runs the prompts
  into a cache the model owns, sized for `max_new_tokens` more tokens; `logits` are the next-token
  logits `(batch_size, vocabulary_size)`, `prefix` the ids the output starts with.
- `decode_step(token, step, state)` → `(logits, state)`: feeds the `step`-th new token.
- `eos_token_id`, `pad_token_id`, `max_sequence_length` (None when positions are unbounded),
  `is_encoder_decoder`.
- `runtime` (`tfllm.models.runtime.ModelRuntime`): where compiled loops are kept
  (`runtime.function`) and the quantization mode is read (`runtime.quantization`).
The state is opaque to the loops (`tf.nest` structures they carry, gather for beams and pass back).
"""

from typing import NamedTuple


class DecodeState(NamedTuple):
    """A decoder-only model's decoding state, as `prefill` returns it and `decode_step` takes it.

    Exports that hand the state to a client between calls (the SavedModel's streaming signatures)
    read and rebuild it through these fields.

    Attributes:
        cache: one KV cache per layer, `(batch_size, 2, cache_length, num_key_value_heads, head_dim)`.
        padding_mask: `(batch_size, cache_length)` int32: 1 for the prompt's real tokens and for
            every new position, 0 for left padding.
        prompt_length: `(batch_size,)` int32, the (padded) prompt length: new token `step` is
            written at cache position `prompt_length + step`.
    """

    cache: tuple
    padding_mask: object
    prompt_length: object
