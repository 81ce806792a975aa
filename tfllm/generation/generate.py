"""`generate`: argument checks, then the compiled decoding loop."""

import random

import numpy as np
import tensorflow as tf

from tfllm.errors import check_float, check_int, invalid_argument
from tfllm.generation.loop import _compiled, left_align


def _as_2d_int(name, value):
    array = np.asarray(value.numpy() if isinstance(value, tf.Tensor) else value)
    if array.ndim != 2 or (array.size and not np.issubdtype(array.dtype, np.integer)):
        raise invalid_argument(name, "a 2-D (batch_size, sequence_length) array of integers",
                               f"array of shape {array.shape} and dtype {array.dtype}")
    return array.astype(np.int32)


def generate(
    model,
    input_ids,
    attention_mask=None,
    *,
    max_new_tokens=20,
    do_sample=False,
    temperature=1.0,
    top_k=0,
    top_p=1.0,
    num_beams=1,
    eos_token_id=None,
    pad_token_id=None,
    seed=None,
    jit_compile=False,
):
    """Continues a batch of prompts with a causal language model.

    Args:
        model: a `tfllm.models.CausalLM`.
        input_ids: `(batch_size, prompt_length)` token ids; rows may be padded on either side.
        attention_mask: `(batch_size, prompt_length)`, 1 for real tokens. Defaults to all ones.
        max_new_tokens: how many tokens to add (>= 1).
        do_sample: sample instead of taking the most likely token.
        temperature: divides the logits before sampling (> 0).
        top_k: sample among the k most likely tokens; 0 disables.
        top_p: sample among the most likely tokens whose probability adds up to top_p, in (0, 1].
        num_beams: 1 (beam search is not implemented yet).
        eos_token_id: stop a row when it produces this id. Defaults to the model's; -1 disables.
        pad_token_id: written after a row stopped. Defaults to the model's, else the eos id, else 0.
        seed: an int making sampling repeat exactly; None draws a fresh seed.
        jit_compile: compile the loop with XLA.

    Returns:
        `(batch_size, prompt_length + steps)` int32 tensor: the (left-aligned) prompts followed by
        the new tokens; steps is `max_new_tokens` unless every row stopped earlier.
    """
    ids = _as_2d_int("input_ids", input_ids)
    mask = np.ones_like(ids) if attention_mask is None else _as_2d_int("attention_mask", attention_mask)
    if mask.shape != ids.shape:
        raise invalid_argument("attention_mask", f"the shape of input_ids {ids.shape}", f"shape {mask.shape}")
    if ids.shape[0] == 0 or ids.shape[1] == 0 or (mask.sum(axis=1) == 0).any():
        raise invalid_argument("input_ids", "at least one real (unmasked) token in every row", f"shape {ids.shape}")
    max_new_tokens = check_int("max_new_tokens", max_new_tokens, minimum=1)
    temperature = check_float("temperature", temperature, low=0.0, low_inclusive=False)
    top_k = check_int("top_k", top_k, minimum=0)
    top_p = check_float("top_p", top_p, low=0.0, high=1.0, low_inclusive=False)
    num_beams = check_int("num_beams", num_beams, minimum=1)
    if num_beams > 1:
        raise NotImplementedError("Beam search (`num_beams` > 1) is not implemented yet; use num_beams=1.")
    longest = int(mask.sum(axis=1).max())
    limit = getattr(model, "max_sequence_length", None)  # None: no position table (T5's relative bias)
    if limit is not None and longest + max_new_tokens > limit:
        raise ValueError(
            f"Invalid value for argument `max_new_tokens`. Expected the longest prompt ({longest} tokens in "
            f"`input_ids`) plus max_new_tokens to fit the model's {model.max_sequence_length} positions. "
            f"Received: max_new_tokens={max_new_tokens}"
        )
    eos = model.eos_token_id if eos_token_id is None else eos_token_id
    eos = -1 if eos is None else check_int("eos_token_id", eos, minimum=-1)
    pad = pad_token_id if pad_token_id is not None else model.pad_token_id
    pad = check_int("pad_token_id", pad if pad is not None else max(eos, 0), minimum=0)
    if seed is None:
        seed = random.randrange(2**31)
    seed = check_int("seed", seed, minimum=0)
    ids, mask = left_align(ids, mask)
    fn = _compiled(model, bool(do_sample), bool(jit_compile))
    return fn(
        tf.constant(ids),
        tf.constant(mask),
        tf.constant(max_new_tokens, tf.int32),
        tf.constant(temperature, tf.float32),
        tf.constant(top_k, tf.int32),
        tf.constant(top_p, tf.float32),
        tf.constant([seed % 2**31, 0], tf.int32),
        tf.constant(eos, tf.int32),
        tf.constant(pad, tf.int32),
    )
