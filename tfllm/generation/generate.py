"""`generate`: argument checks, then the compiled decoding loop."""

import math
import numbers
import random

import numpy as np
import tensorflow as tf

from tfllm.errors import check_float, check_int, invalid_argument
from tfllm.generation.beam import EARLY_STOPPING_CODES, compiled_beam_search
from tfllm.generation.loop import _compiled, left_align, pad_prompts, pads_prompts


def _as_2d_int(name, value):
    array = np.asarray(value.numpy() if isinstance(value, tf.Tensor) else value)
    if array.ndim != 2 or (array.size and not np.issubdtype(array.dtype, np.integer)):
        raise invalid_argument(name, "a 2-D (batch_size, sequence_length) array of integers",
                               f"array of shape {array.shape} and dtype {array.dtype}")
    return array.astype(np.int32)


def _check_beam_arguments(num_beams, length_penalty, early_stopping, num_return_sequences, do_sample):
    num_beams = check_int("num_beams", num_beams, minimum=1)
    if num_beams > 1 and do_sample:
        raise NotImplementedError(
            "Beam sampling (`num_beams` > 1 with `do_sample=True`) is not implemented; use beam search "
            f"(do_sample=False) or sampling (num_beams=1). Received: num_beams={num_beams}, do_sample={do_sample!r}"
        )
    length_penalty = check_float("length_penalty", length_penalty)
    if not (isinstance(early_stopping, bool) or (isinstance(early_stopping, str) and early_stopping == "never")):
        raise invalid_argument("early_stopping", "True, False or 'never'", early_stopping)
    num_return_sequences = check_int("num_return_sequences", num_return_sequences, minimum=1)
    if num_return_sequences > num_beams:
        raise invalid_argument("num_return_sequences", f"an integer <= num_beams ({num_beams})", num_return_sequences)
    return num_beams, length_penalty, early_stopping, num_return_sequences


def _check_penalties(repetition_penalty, no_repeat_ngram_size):
    """The processors' settings as tensors, or None when both are off (the loop then skips them)."""
    finite = isinstance(repetition_penalty, numbers.Real) and math.isfinite(repetition_penalty)
    if isinstance(repetition_penalty, bool) or not finite or repetition_penalty <= 0:
        raise invalid_argument("repetition_penalty", "a finite number > 0", repetition_penalty)
    repetition_penalty = float(repetition_penalty)
    no_repeat_ngram_size = check_int("no_repeat_ngram_size", no_repeat_ngram_size, minimum=0)
    if repetition_penalty == 1.0 and no_repeat_ngram_size == 0:
        return None
    return (tf.constant(repetition_penalty, tf.float32), tf.constant(no_repeat_ngram_size, tf.int32))


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
    repetition_penalty=1.0,
    no_repeat_ngram_size=0,
    num_beams=1,
    length_penalty=1.0,
    early_stopping=False,
    num_return_sequences=1,
    eos_token_id=None,
    pad_token_id=None,
    seed=None,
    jit_compile=None,
):
    """Continues a batch of prompts: greedy, sampling or beam search, token for token like transformers.

    Args:
        model: a model with `prefill` and `decode_step`, such as a `tfllm.models.CausalLM`.
        input_ids: `(batch_size, prompt_length)` token ids; rows may be padded on either side.
        attention_mask: `(batch_size, prompt_length)`, 1 for real tokens. Defaults to all ones.
        max_new_tokens: how many tokens to add (>= 1).
        do_sample: sample instead of taking the most likely token.
        temperature: divides the logits before sampling (> 0).
        top_k: sample among the k most likely tokens; 0 disables.
        top_p: sample among the most likely tokens whose probability adds up to top_p, in (0, 1].
        repetition_penalty: divides the logit of every token already in the sequence (prompt included;
            multiplies it when negative), > 0; 1.0 disables. As transformers', except that a
            left-padded batch's padding does not count (see `tfllm.generation.processors`).
        no_repeat_ngram_size: never produce an n-gram of this many tokens twice (counting the prompt);
            0 disables. Beam search applies both to each beam's log-probabilities, as transformers does.
        num_beams: 1 for greedy decoding or sampling; more runs beam search with this many beams
            (transformers' `_beam_search`, see `tfllm.generation.beam`). Not with `do_sample`.
        length_penalty: beam search divides a finished hypothesis' log-probability by
            `generated_length ** length_penalty` (eos included, prompt excluded); > 0 favours longer ones.
        early_stopping: beam search stops an input once it has `num_beams` finished hypotheses (True),
            once its best running beam cannot beat them at its current length (False), or at the
            longest length it could reach when `length_penalty` > 0 ("never").
        num_return_sequences: the best beams returned per prompt, in [1, num_beams].
        eos_token_id: stop a row when it produces this id. Defaults to the model's; -1 disables.
        pad_token_id: written after a row stopped. Defaults to the model's, else the eos id, else 0.
            Beam search, like transformers', writes the eos id instead when this is 0.
        seed: an int making sampling repeat exactly; None draws a fresh seed.
        jit_compile: None (the default) runs the loop as TensorFlow ops that call XLA programs:
            the prompt pass (decoders' prompts left-padded to a power of two) and the decode steps
            (greedy: chunks of 16 steps), the fastest form on CPU (for a model given to
            `tfllm.quantize`, no XLA: its int8 products are faster without); True compiles the
            whole loop with XLA; False uses no XLA at all (for models with ops XLA cannot compile).

    Returns:
        `(batch_size * num_return_sequences, prompt_length + steps)` int32 tensor: the (left-aligned)
        prompts followed by the new tokens; steps is `max_new_tokens` unless every row stopped
        earlier. Beam search returns each prompt's best hypotheses in consecutive rows, best first.

    Example:

    >>> ids = generate(model, [[464, 3290]], max_new_tokens=8, num_beams=4, num_return_sequences=2)
    >>> ids.shape  # 2 hypotheses, prompt + up to 8 tokens
    TensorShape([2, 10])
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
    num_beams, length_penalty, early_stopping, num_return_sequences = _check_beam_arguments(
        num_beams, length_penalty, early_stopping, num_return_sequences, do_sample)
    penalties = _check_penalties(repetition_penalty, no_repeat_ngram_size)
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
    if not model.built:  # variables must exist before the compiled loop traces (it cannot create them)
        model.build()
    if jit_compile is None and model.runtime.quantization is not None:
        jit_compile = False  # XLA's CPU fusion recomputes each int8 product's inputs per output unit: slower
    jit_compile = None if jit_compile is None else bool(jit_compile)
    if num_beams > 1:
        fn = compiled_beam_search(model, num_beams, num_return_sequences, jit_compile, penalties is not None)
        return fn(tf.constant(ids), tf.constant(mask), tf.constant(max_new_tokens, tf.int32),
                  tf.constant(length_penalty, tf.float32), tf.constant(EARLY_STOPPING_CODES[early_stopping], tf.int32),
                  tf.constant(eos, tf.int32), tf.constant(pad, tf.int32), *(penalties or ()))
    added = 0
    if jit_compile is None and pads_prompts(model):  # the XLA prompt pass compiles once per padded length
        ids, mask, added = pad_prompts(ids, mask)
    fn = _compiled(model, bool(do_sample), jit_compile, penalized=penalties is not None)
    output = fn(
        tf.constant(ids),
        tf.constant(mask),
        tf.constant(max_new_tokens, tf.int32),
        tf.constant(temperature, tf.float32),
        tf.constant(top_k, tf.int32),
        tf.constant(top_p, tf.float32),
        tf.constant([seed % 2**31, 0], tf.int32),
        tf.constant(eos, tf.int32),
        tf.constant(pad, tf.int32),
        *(penalties or ()),
    )
    return output[:, added:]

