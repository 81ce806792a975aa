"""The decoding loop: a prefill pass, then one `tf.while_loop` over a preallocated KV cache.

The loop uses only ops that every runtime has (no XLA-only ops), so the same function serves eager
calls, `tf.function(jit_compile=True)` and, later, exported signatures.

Speed (see `benchmarks/suite.py`): by default (`jit_compile=None`) the loop is a plain `tf.function`
that calls XLA programs. The prompt pass is one (`xla_prefill`), on prompts left-padded to a power of
two (`pad_prompts`); greedy decode steps run in chunks of `CHUNK` steps (`xla_greedy_steps`), and
sampling calls one XLA-compiled step at a time. On CPU an XLA-compiled step runs about three times
as fast as the same step as TensorFlow ops, and inside one XLA program the KV cache is updated in
place (`update_cache` is a scatter) instead of being copied at every step. The cache is sized to a
multiple of `CACHE_BUCKET` positions (`cache_room`), so prompts of different lengths reuse one traced
loop and a few compiled programs; compiling the whole loop (`jit_compile=True`) compiles it again
for every prompt length.
"""

import numpy as np
import tensorflow as tf

from tfllm.generation.processors import Penalties, append, prompt_history
from tfllm.generation.sampling import next_token

# The KV cache holds prompt + new tokens rounded up to a multiple of this many positions: the
# compiled decode chunk or step (whose shapes include the cache length) is reused across nearby lengths.
CACHE_BUCKET = 64

# The default loop runs the decode steps in XLA programs of up to this many steps (`xla_greedy_steps`).
CHUNK = 16

# The default loop's XLA prompt pass sees prompts left-padded to a power of two of at least this many
# positions (`pad_prompts`), so a handful of compiled prompt passes serve every prompt length.
MIN_PROMPT_BUCKET = 8


def cache_room(prompt_length, max_new_tokens):
    """Cache positions after the prompt: `max_new_tokens` or more, so prompt + room is a multiple of `CACHE_BUCKET`.

    The extra positions are never attended to: a query sees only keys at or before its position.
    """
    total = prompt_length + max_new_tokens
    return (total + CACHE_BUCKET - 1) // CACHE_BUCKET * CACHE_BUCKET - prompt_length


def pad_prompts(token_ids, padding_mask):
    """Left-pads numpy prompts with masked positions to the next power of two of at least `MIN_PROMPT_BUCKET`.

    Positions count only real tokens and padded keys are masked, so the padding changes no logit.

    Returns:
        `(token_ids, padding_mask, added)`: the padded arrays and the number of columns added.
    """
    length = token_ids.shape[1]
    added = max(MIN_PROMPT_BUCKET, 1 << (length - 1).bit_length()) - length
    widths = ((0, 0), (added, 0))
    return np.pad(token_ids, widths), np.pad(padding_mask, widths), added


def _xla_method(model, name):
    """`model.<name>` as a `tf.function(jit_compile=True)`, made once per model and method."""

    def make(model_ref):
        def method(*args):
            return getattr(model_ref(), name)(*args)

        return tf.function(method, jit_compile=True, autograph=False)

    return compiled_for(model, ("xla", name), make)


def xla_prefill(model):
    """`model.prefill` compiled with XLA, once per batch size, prompt length and cache room: the
    default loop pads prompts (`pad_prompts`) and rounds the cache (`cache_room`) so that few occur."""
    return _xla_method(model, "prefill")


def xla_decode_step(model):
    """`model.decode_step` compiled with XLA (sampling's and beam search's step), once per batch
    size and cache length."""
    return _xla_method(model, "decode_step")


def xla_greedy_steps(model):
    """Greedy `decode_steps` for up to `CHUNK` steps as a `tf.function(jit_compile=True)`, made once per model.

    Inside one XLA program the KV cache is a loop variable, so each step's update is written in place;
    the cache is copied only when the chunk hands it back. It traces (and XLA compiles) once per
    batch size and cache length. Greedy only: XLA's stateless random numbers differ from
    TensorFlow's, and a seed must draw the same tokens here as in the exported loop.
    """

    def make(model_ref):
        def steps(token, step, state, done, max_new_tokens, eos_token_id, pad_token_id, history):
            return decode_steps(model_ref(), CHUNK, token, step, state, done, max_new_tokens, False, None, None,
                                None, None, eos_token_id, pad_token_id, history=history)

        return tf.function(steps, jit_compile=True, autograph=False)

    return compiled_for(model, ("xla_greedy_steps",), make)


def decode_steps(model, count, token, step, state, done, max_new_tokens, do_sample, temperature, top_k, top_p, seed,
                 eos_token_id, pad_token_id, decode_step=None, history=None):
    """Runs up to `count` decode steps from new token number `step`; stops at `max_new_tokens` or when every row ended.

    Args:
        model: a model implementing `decode_step`.
        count: the most steps to run (a Python int or a scalar tensor).
        token: `(batch_size,)` the last token chosen, number `step - 1`.
        step: scalar int32, the number of the token this call chooses first.
        state: the model's decoding state after token `step - 1` was chosen.
        done: `(batch_size,)` bool, rows that already produced `eos_token_id`.
        max_new_tokens, do_sample, temperature, top_k, top_p, seed, eos_token_id, pad_token_id: as in `decode`.
        decode_step: the step function, `model.decode_step` by default (`xla_decode_step`'s compiled one).
        history: the tokens so far and the penalties (`processors.History`), or None for no penalties.

    Returns:
        `(tokens, step, token, state, done, history)`: tokens `(batch_size, count)` int32 (number `step`
        onwards, padded), then the loop's variables after the last step run.
    """
    batch_size = tf.shape(token)[0]
    decode_step = decode_step or model.decode_step
    first = step
    end = tf.minimum(step + count, max_new_tokens)
    columns = tf.range(count)[None, :]
    tokens = tf.fill([batch_size, count], pad_token_id)

    def condition(step, token, state, tokens, done, history):
        return tf.logical_and(step < end, tf.logical_not(tf.reduce_all(done)))

    def body(step, token, state, tokens, done, history):
        logits, state = decode_step(token, step - 1, state)
        token = next_token(logits, do_sample, temperature, top_k, top_p, seed, step, history or None)
        token = tf.where(done, pad_token_id, token)
        tokens = tf.where(columns == step - first, token[:, None], tokens)
        done = tf.logical_or(done, tf.equal(token, eos_token_id))
        return step + 1, token, state, tokens, done, append(history, token) if history else ()

    # `()` stands for no history: a loop variable cannot be None.
    loop_vars = (step, token, state, tokens, done, history or ())
    step, token, state, tokens, done, history = tf.while_loop(condition, body, loop_vars)
    return tokens, step, token, state, done, history or None


def decode(model, token_ids, padding_mask, max_new_tokens, do_sample, temperature, top_k, top_p, seed, eos_token_id,
           pad_token_id, xla_steps=False, xla_prompt=False, penalties=None):
    """Generates up to `max_new_tokens` tokens after left-padded prompts.

    The model supplies two steps (the generation contract every family implements):
    `prefill(token_ids, padding_mask, max_new_tokens) -> (logits, state, prefix)` runs the prompt and
    returns the next-token logits `(batch_size, vocabulary_size)`, a state (a nest of tensors whose
    first axis is the batch, such as the KV cache) and the ids the output starts with (the prompt
    for a decoder, the decoder start token for an encoder-decoder);
    `decode_step(token, step, state) -> (logits, state)` feeds the `step`-th new token `(batch_size,)`.

    Args:
        model: a model implementing `prefill` and `decode_step`.
        token_ids: `(batch_size, prompt_length)` int32, left-padded.
        padding_mask: `(batch_size, prompt_length)` int32.
        max_new_tokens: scalar int32.
        do_sample: Python bool.
        temperature, top_k, top_p, seed: sampling parameters (scalar tensors; seed `(2,)`).
        eos_token_id: scalar int32, -1 for none.
        pad_token_id: scalar int32 written after a row has produced `eos_token_id`.
        xla_steps: use XLA for the decode steps: greedy decoding runs them in XLA-compiled chunks of
            `CHUNK` steps (`xla_greedy_steps`), sampling calls `xla_decode_step` from a loop of
            TensorFlow ops (so a seed draws the tokens it draws without XLA). False: no XLA.
        xla_prompt: run the prompt pass as an XLA program (`xla_prefill`); for prompts padded with
            `pad_prompts`, so that its compilations are reused.
        penalties: a `processors.Penalties` of scalar tensors (repetition penalty, no-repeat n-gram
            size), or None for neither (the loop then carries no history of the tokens).

    Returns:
        `(batch_size, prefix_length + steps)` int32, where steps stops early once every row ended.
    """
    batch_size = tf.shape(token_ids)[0]
    prefill = xla_prefill(model) if xla_prompt else model.prefill
    room = cache_room(tf.shape(token_ids)[1], max_new_tokens)
    logits, state, prefix = prefill(token_ids, padding_mask, room)
    history = None if penalties is None else prompt_history(model, prefix, padding_mask, room, penalties)
    token = next_token(logits, do_sample, temperature, top_k, top_p, seed, 0, history)
    history = append(history, token) if history else None
    done = tf.equal(token, eos_token_id)
    if do_sample or not xla_steps:  # one loop over every step (without XLA: what exports contain)
        step_fn = xla_decode_step(model) if xla_steps else None
        tokens, steps, *_ = decode_steps(model, max_new_tokens - 1, token, tf.constant(1), state, done,
                                         max_new_tokens, do_sample, temperature, top_k, top_p, seed,
                                         eos_token_id, pad_token_id, step_fn, history)
        output = tf.concat([token[:, None], tokens], axis=1)
        return tf.concat([prefix, output[:, :steps]], axis=1)
    run_steps = xla_greedy_steps(model)
    columns = tf.range(max_new_tokens)[None, :]
    output = tf.where(columns == 0, token[:, None], tf.fill([batch_size, max_new_tokens], pad_token_id))

    def condition(step, token, state, output, done, history):
        return tf.logical_and(step < max_new_tokens, tf.logical_not(tf.reduce_all(done)))

    def body(step, token, state, output, done, history):
        tokens, next_step, token, state, done, history = run_steps(token, step, state, done, max_new_tokens,
                                                                   eos_token_id, pad_token_id, history or None)
        offset = columns - step  # output column -> column of this chunk's `tokens`
        written = tf.logical_and(offset >= 0, columns < next_step)
        output = tf.where(written, tf.gather(tokens, tf.clip_by_value(offset, 0, CHUNK - 1)[0], axis=1), output)
        return next_step, token, state, output, done, history or ()

    loop_vars = (tf.constant(1), token, state, output, done, history or ())
    steps, _, _, output, _, _ = tf.while_loop(condition, body, loop_vars)
    return tf.concat([prefix, output[:, :steps]], axis=1)


def _compiled(model, do_sample, jit_compile, penalized=False):
    """The generation `tf.function` for `model`: `jit_compile` True (all XLA), False (no XLA) or
    None (a plain loop around `xla_greedy_steps` or `xla_decode_step`). With `penalized`, it takes
    two more inputs, the repetition penalty and the no-repeat n-gram size (see `decode`)."""
    key = (do_sample, jit_compile) + (("penalized",) if penalized else ())

    def make(model_ref):
        scalar = lambda dtype: tf.TensorSpec([], dtype)  # noqa: E731
        signature = [
            tf.TensorSpec([None, None], tf.int32),
            tf.TensorSpec([None, None], tf.int32),
            scalar(tf.int32),
            scalar(tf.float32),
            scalar(tf.int32),
            scalar(tf.float32),
            tf.TensorSpec([2], tf.int32),
            scalar(tf.int32),
            scalar(tf.int32),
        ] + ([scalar(tf.float32), scalar(tf.int32)] if penalized else [])

        def run(ids, mask, max_new, temperature, top_k, top_p, seed, eos, pad, *penalties):
            model = model_ref()
            return decode(model, ids, mask, max_new, do_sample, temperature, top_k, top_p, seed, eos, pad,
                          xla_steps=jit_compile is None, xla_prompt=jit_compile is None and pads_prompts(model),
                          penalties=Penalties(*penalties) if penalties else None)

        return tf.function(run, input_signature=signature, jit_compile=bool(jit_compile), reduce_retracing=True)

    return compiled_for(model, key, make)


def pads_prompts(model):
    """Whether the default loop pads `model`'s prompts (`pad_prompts`) and runs its prompt pass with XLA:
    decoders, whose output starts with the prompt (the padding is cut off again)."""
    return not getattr(model, "is_encoder_decoder", False)


def compiled_for(model, key, make):
    """The function kept for `model` under `key` in `model.runtime` (see `tfllm.models.runtime`),
    made once by `make(model_ref)`; `model_ref` is a weak reference, so the function does not keep its
    model alive. `decode`'s keys are `(do_sample, jit_compile, ...)`; other modes' keys are tuples that
    start with the mode's name."""
    return model.runtime.function(key, make)


def left_align(token_ids, padding_mask):
    """Moves each row's padding to the left so the last column holds every row's last real token."""
    ids, mask = np.array(token_ids), np.array(padding_mask)
    if not (np.diff(mask, axis=1) < 0).any():
        return ids, mask
    order = np.argsort(mask, axis=1, kind="stable")  # zeros first, real tokens keep their order
    return np.take_along_axis(ids, order, axis=1), np.take_along_axis(mask, order, axis=1)
