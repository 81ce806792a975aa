"""Beam search over the generation contract (`prefill` / `decode_step`), step for step like transformers.

Each step follows transformers' `GenerationMixin._beam_search` (4.57): the `num_beams` running
beams of an input propose their `2 * num_beams` best continuations by accumulated log-probability;
those that end (the eos id, or the last allowed token) and rank among the first `num_beams` become
finished hypotheses scored `sum_logprobs / length ** length_penalty`, the best unfinished ones run on.
`length` counts the generated tokens, eos included, for decoder-only and encoder-decoder models
alike: transformers divides by `cur_len + 1 - decoder_prompt_len`, where the decoder prompt is the
(padded) prompt of a decoder-only model and the decoder start token of an encoder-decoder.

Everything is a tensor op inside one `tf.while_loop` (no XLA-only ops, no Python side effects), so
the same function runs eagerly, under `tf.function(jit_compile=True)` and in exported graphs.
"""

import collections

import tensorflow as tf

from tfllm.generation.loop import compiled_for, cache_room, xla_decode_step
from tfllm.generation.processors import Penalties, process_logits, prompt_history

# transformers' score for candidates that must not be chosen (not a mask value: it is added to
# real log-probabilities, and matching its float32 rounding keeps the rankings identical).
_EXCLUDED = -1.0e9

# `early_stopping` travels as an int32 tensor, so one compiled function serves all three modes.
EARLY_STOPPING_CODES = {False: 0, True: 1, "never": 2}

_Settings = collections.namedtuple(
    "_Settings", "num_beams max_new_tokens length_penalty early_stopping eos_token_id prompt"
)


def beam_search(model, token_ids, padding_mask, max_new_tokens, num_beams, length_penalty, early_stopping,
                num_return_sequences, eos_token_id, pad_token_id, decode_step=None, penalties=None):
    """Generates the `num_return_sequences` best beams of up to `max_new_tokens` tokens per prompt.

    Args:
        model: a model implementing `prefill` and `decode_step` (see `tfllm.generation.loop.decode`).
        token_ids: `(batch_size, prompt_length)` int32, left-padded.
        padding_mask: `(batch_size, prompt_length)` int32.
        max_new_tokens: scalar int32.
        num_beams: Python int >= 2.
        length_penalty: scalar float32; finished scores are divided by `length ** length_penalty`.
        early_stopping: scalar int32 `EARLY_STOPPING_CODES` value: for `True`, stop an input once it
            has `num_beams` finished hypotheses; for `False`, once the best running beam, at its
            current length, cannot beat them; for `"never"`, the same test at the best length the
            beam could still reach when `length_penalty` > 0.
        num_return_sequences: Python int in [1, num_beams].
        eos_token_id: scalar int32, -1 for none.
        pad_token_id: scalar int32 written after a hypothesis that ended early.
        decode_step: the step function to call, `model.decode_step` by default.
        penalties: a `processors.Penalties` (repetition penalty, no-repeat n-gram size) applied to
            each beam's log-probabilities, as transformers does; None for neither.

    Returns:
        `(batch_size * num_return_sequences, prefix_length + steps)` int32, best first within each
        input, where steps is the longest returned hypothesis.
    """
    decode_step = decode_step or model.decode_step
    logits, state, prefix = model.prefill(token_ids, padding_mask, cache_room(tf.shape(token_ids)[1], max_new_tokens))
    batch_size = tf.shape(logits)[0]
    expand = lambda tensor: tf.repeat(tensor, num_beams, axis=0)  # noqa: E731  (batch * num_beams, ...)
    logits, state = expand(logits), tf.nest.map_structure(expand, state)
    prompt = None  # each beam's prompt history: its new tokens are added at every step
    if penalties is not None:
        prompt = prompt_history(model, expand(prefix), expand(padding_mask), 0, penalties)
    settings = _Settings(num_beams, max_new_tokens, tf.cast(length_penalty, tf.float32),
                         tf.cast(early_stopping, tf.int32), eos_token_id, prompt)
    beams = _initial_beams(batch_size, settings, _fill_value(eos_token_id, pad_token_id))
    beams, keep_going = _step(beams, logits, tf.constant(0), settings)

    def condition(step, keep_going, beams, state):
        return tf.logical_and(step < max_new_tokens, keep_going)

    def body(step, keep_going, beams, state):
        state = tf.nest.map_structure(lambda tensor: tf.gather(tensor, beams["source"], axis=0), state)
        token = tf.reshape(beams["running_tokens"][:, :, step - 1], [-1])  # (batch * num_beams,)
        logits, state = decode_step(token, step - 1, state)
        beams, keep_going = _step(beams, logits, step, settings)
        return step + 1, keep_going, beams, state

    _, _, beams, _ = tf.while_loop(condition, body, (tf.constant(1), keep_going, beams, state))
    return _best_sequences(beams, prefix, num_return_sequences)


def _fill_value(eos_token_id, pad_token_id):
    # transformers fills its beam buffers with `pad_token_id or eos_token_id`: a pad id of 0 counts
    # as unset there, so eos is written after short hypotheses instead. Matched for equal outputs.
    return tf.where(tf.logical_and(tf.equal(pad_token_id, 0), eos_token_id >= 0), eos_token_id, pad_token_id)


def _initial_beams(batch_size, settings, fill):
    n, width = settings.num_beams, settings.max_new_tokens
    # Only the first beam is live at the start: the others would repeat its continuations.
    first = tf.concat([tf.zeros([batch_size, 1]), tf.fill([batch_size, n - 1], _EXCLUDED)], axis=1)
    return {
        "running_tokens": tf.fill([batch_size, n, width], fill),  # (B, n, max_new_tokens) generated ids
        "running_scores": first,  # (B, n) accumulated log-probabilities
        "source": tf.range(batch_size * n),  # (B * n,) state row each running beam continues
        "tokens": tf.fill([batch_size, n, width], fill),  # the finished hypotheses, best first
        "scores": tf.fill([batch_size, n], _EXCLUDED),
        "lengths": tf.zeros([batch_size, n], tf.int32),
        "finished": tf.zeros([batch_size, n], tf.bool),
        "improvable": tf.ones([batch_size, 1], tf.bool),  # may a running beam still beat the finished?
    }


def _gather_beams(tensor, indices):
    """`tensor[b, indices[b, k], ...]` for `(batch_size, beams, ...)` tensors and `(batch_size, k)` indices."""
    return tf.gather(tensor, indices, axis=1, batch_dims=1)


def _step(beams, logits, step, settings):
    """Chooses the next beams from `(batch * num_beams, vocabulary_size)` logits; `step` tokens exist so far.

    Returns:
        `(beams, keep_going)`: the updated beams and whether any input still needs another step.
    """
    n = settings.num_beams
    batch_size, vocabulary = tf.shape(beams["running_scores"])[0], tf.shape(logits)[-1]
    log_probs = tf.nn.log_softmax(tf.cast(logits, tf.float32), axis=-1)
    if settings.prompt is not None:  # transformers processes the log-probabilities of each beam's sequence
        new_tokens = tf.reshape(beams["running_tokens"], [batch_size * n, -1])
        log_probs = process_logits(log_probs, settings.prompt._replace(
            tokens=tf.concat([settings.prompt.tokens, new_tokens], axis=1), length=settings.prompt.length + step))
    log_probs = tf.reshape(log_probs, [batch_size, n, vocabulary]) + beams["running_scores"][:, :, None]
    # 2 * num_beams candidates, so that num_beams remain to run on even if half of them end here.
    scores, flat = tf.math.top_k(tf.reshape(log_probs, [batch_size, n * vocabulary]), k=2 * n)
    parent, token = flat // vocabulary, flat % vocabulary  # (B, 2n)
    columns = tf.range(settings.max_new_tokens)[None, None, :]
    tokens = tf.where(columns == step, token[:, :, None], _gather_beams(beams["running_tokens"], parent))
    ended = tf.logical_or(tf.equal(token, settings.eos_token_id), step + 1 >= settings.max_new_tokens)
    running = _next_running(scores, tokens, parent, ended, n)
    finished = _update_finished(beams, scores, tokens, ended, step, settings)
    improvable = _still_improvable(beams["improvable"], running["running_scores"], finished, step, settings)
    all_full = tf.reduce_all(finished["finished"]) & tf.equal(settings.early_stopping, EARLY_STOPPING_CODES[True])
    keep_going = tf.reduce_any(improvable) & tf.logical_not(all_full) & tf.logical_not(tf.reduce_all(ended))
    return {**running, **finished, "improvable": improvable}, keep_going


def _next_running(scores, tokens, parent, ended, num_beams):
    """The best `num_beams` candidates that did not end run on (transformers' `_get_running_beams_...`)."""
    running_scores = scores + tf.cast(ended, tf.float32) * _EXCLUDED
    keep = tf.math.top_k(running_scores, k=num_beams).indices  # (B, n)
    batch_offset = tf.range(tf.shape(scores)[0])[:, None] * num_beams
    return {
        "running_tokens": _gather_beams(tokens, keep),
        "running_scores": _gather_beams(running_scores, keep),
        "source": tf.reshape(_gather_beams(parent, keep) + batch_offset, [-1]),
    }


def _update_finished(beams, scores, tokens, ended, step, settings):
    """Merges the candidates that ended among the first `num_beams` into the finished hypotheses."""
    n = settings.num_beams
    just_finished = tf.logical_and(ended, tf.range(2 * n)[None, :] < n)
    length = tf.cast(step + 1, tf.float32)
    finished_scores = scores / length**settings.length_penalty
    # The same three additions as transformers, in its order, so the float32 sums round alike.
    full = tf.reduce_all(beams["finished"], axis=-1, keepdims=True)
    full &= tf.equal(settings.early_stopping, EARLY_STOPPING_CODES[True])
    finished_scores += tf.cast(full, tf.float32) * _EXCLUDED
    finished_scores += tf.cast(tf.logical_not(beams["improvable"]), tf.float32) * _EXCLUDED
    finished_scores += tf.cast(tf.logical_not(just_finished), tf.float32) * _EXCLUDED
    merged_scores = tf.concat([beams["scores"], finished_scores], axis=1)  # (B, 3n)
    best = tf.math.top_k(merged_scores, k=n).indices
    lengths = tf.fill(tf.shape(scores), step + 1)
    return {
        "tokens": _gather_beams(tf.concat([beams["tokens"], tokens], axis=1), best),
        "scores": _gather_beams(merged_scores, best),
        "lengths": _gather_beams(tf.concat([beams["lengths"], lengths], axis=1), best),
        "finished": _gather_beams(tf.concat([beams["finished"], just_finished], axis=1), best),
    }


def _still_improvable(improvable, running_scores, finished, step, settings):
    """transformers' `_check_early_stop_heuristic`: can the best running beam beat the worst finished one?"""
    # With "never", a positive length penalty favours longer hypotheses: judge the beam at its longest.
    at_longest = tf.equal(settings.early_stopping, EARLY_STOPPING_CODES["never"]) & (settings.length_penalty > 0.0)
    generated = tf.cast(tf.where(at_longest, settings.max_new_tokens, step + 1), tf.float32)
    best_running = running_scores[:, :1] / generated**settings.length_penalty
    worst_finished = tf.reduce_min(finished["scores"], axis=1, keepdims=True)
    worst_finished = tf.where(finished["finished"], worst_finished, _EXCLUDED)  # (B, n)
    return improvable & tf.reduce_any(best_running > worst_finished, axis=-1, keepdims=True)


def _best_sequences(beams, prefix, num_return_sequences):
    """`prefix + tokens` of the best hypotheses, `num_return_sequences` rows per input, cropped."""
    tokens = beams["tokens"][:, :num_return_sequences]  # (B, r, max_new_tokens)
    steps = tf.reduce_max(beams["lengths"][:, :num_return_sequences])
    tokens = tf.reshape(tokens, [-1, tf.shape(tokens)[-1]])[:, :steps]  # (B * r, steps)
    prefix = tf.repeat(tf.cast(prefix, tf.int32), num_return_sequences, axis=0)
    return tf.concat([prefix, tokens], axis=1)


def compiled_beam_search(model, num_beams, num_return_sequences, jit_compile, penalized=False):
    """The `tf.function` running `beam_search` for `model`, made once per set of static settings.

    The returned function takes `(token_ids, padding_mask, max_new_tokens, length_penalty,
    early_stopping, eos_token_id, pad_token_id)` tensors (`early_stopping` as its
    `EARLY_STOPPING_CODES` value), then, if `penalized`, `(repetition_penalty, no_repeat_ngram_size)`.
    The beam counts are static: they size `top_k` and the outputs.
    """

    def make(model_ref):
        def run(ids, mask, max_new, length_penalty, early_stopping, eos, pad, *penalties):
            model = model_ref()
            step = xla_decode_step(model) if jit_compile is None else None
            return beam_search(model, ids, mask, max_new, num_beams, length_penalty, early_stopping,
                               num_return_sequences, eos, pad, step, Penalties(*penalties) if penalties else None)

        scalar = lambda dtype: tf.TensorSpec([], dtype)  # noqa: E731
        signature = [tf.TensorSpec([None, None], tf.int32), tf.TensorSpec([None, None], tf.int32), scalar(tf.int32),
                     scalar(tf.float32), scalar(tf.int32), scalar(tf.int32), scalar(tf.int32)]
        signature += [scalar(tf.float32), scalar(tf.int32)] if penalized else []
        return tf.function(run, input_signature=signature, jit_compile=bool(jit_compile), reduce_retracing=True)

    key = ("beam_search", num_beams, num_return_sequences, jit_compile) + (("penalized",) if penalized else ())
    return compiled_for(model, key, make)
