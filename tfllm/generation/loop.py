"""The decoding loop: a prefill pass, then one `tf.while_loop` over a preallocated KV cache.

The loop uses only ops that every runtime has (no XLA-only ops), so the same function serves eager
calls, `tf.function(jit_compile=True)` and, later, exported signatures.

Speed (see `benchmarks/decode_speed.py`): by default (`jit_compile=None`) the loop is a plain
`tf.function` whose body calls the model's `decode_step` compiled with XLA (`xla_decode_step`): on
CPU one XLA-compiled step runs about twice as fast as the same step as TensorFlow ops, while a
whole loop under XLA runs slower. The cache is sized to a multiple of `CACHE_BUCKET` positions
(`cache_room`), so prompts of different lengths reuse one traced loop and one compiled step.
"""

import weakref

import numpy as np
import tensorflow as tf

from tfllm.generation.sampling import next_token

# model -> {key: tf.function}; `decode`'s keys are (do_sample, jit_compile), other modes' keys are
# tuples that start with the mode's name (see `_compiled_for`).
_COMPILED = weakref.WeakKeyDictionary()

# The KV cache holds prompt + new tokens rounded up to a multiple of this many positions: the
# compiled decode step (whose shapes include the cache length) is reused across nearby lengths.
CACHE_BUCKET = 64


def forget_compiled(model):
    """Drops every traced function that captured `model`'s layers: generation's and Keras'
    `train_function` / `test_function` / `predict_function` (after layers were replaced: LoRA, quantization)."""
    _COMPILED.pop(model, None)
    for name in ("train_function", "test_function", "predict_function"):
        if hasattr(model, name):
            setattr(model, name, None)


def cache_room(prompt_length, max_new_tokens):
    """Cache positions after the prompt: `max_new_tokens` or more, so prompt + room is a multiple of `CACHE_BUCKET`.

    The extra positions are never attended to: a query sees only keys at or before its position.
    """
    total = prompt_length + max_new_tokens
    return (total + CACHE_BUCKET - 1) // CACHE_BUCKET * CACHE_BUCKET - prompt_length


def xla_decode_step(model):
    """`model.decode_step` as a `tf.function(jit_compile=True)`, made once per model.

    It traces (and XLA compiles) once per distinct shape of its inputs: batch size and cache length.
    """

    def make(model_ref):
        def step(token, index, state):
            return model_ref().decode_step(token, index, state)

        return tf.function(step, jit_compile=True, autograph=False)

    return _compiled_for(model, ("xla_decode_step",), make)


def decode(model, token_ids, padding_mask, max_new_tokens, do_sample, temperature, top_k, top_p, seed, eos_token_id,
           pad_token_id, decode_step=None):
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
        decode_step: the step function to call, `model.decode_step` by default (`xla_decode_step`'s
            compiled one for speed).

    Returns:
        `(batch_size, prefix_length + steps)` int32, where steps stops early once every row ended.
    """
    batch_size = tf.shape(token_ids)[0]
    decode_step = decode_step or model.decode_step
    logits, state, prefix = model.prefill(token_ids, padding_mask, cache_room(tf.shape(token_ids)[1], max_new_tokens))
    token = next_token(logits, do_sample, temperature, top_k, top_p, seed, 0)
    columns = tf.range(max_new_tokens)[None, :]
    output = tf.where(columns == 0, token[:, None], tf.fill([batch_size, max_new_tokens], pad_token_id))
    done = tf.equal(token, eos_token_id)

    def condition(step, token, state, output, done):
        return tf.logical_and(step < max_new_tokens, tf.logical_not(tf.reduce_all(done)))

    def body(step, token, state, output, done):
        logits, state = decode_step(token, step - 1, state)
        token = next_token(logits, do_sample, temperature, top_k, top_p, seed, step)
        token = tf.where(done, pad_token_id, token)
        output = tf.where(columns == step, token[:, None], output)
        done = tf.logical_or(done, tf.equal(token, eos_token_id))
        return step + 1, token, state, output, done

    steps, _, _, output, _ = tf.while_loop(condition, body, (tf.constant(1), token, state, output, done))
    return tf.concat([prefix, output[:, :steps]], axis=1)


def _compiled(model, do_sample, jit_compile):
    """The generation `tf.function` for `model`: `jit_compile` True (all XLA), False (no XLA) or
    None (a plain loop around `xla_decode_step`)."""
    functions = _COMPILED.setdefault(model, {})
    key = (do_sample, jit_compile)
    if key not in functions:
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
        ]

        # A weak reference: the registry's value must not keep its key (the model) alive.
        model_ref = weakref.ref(model)

        def run(ids, mask, max_new, temperature, top_k, top_p, seed, eos, pad):
            model = model_ref()
            step = xla_decode_step(model) if jit_compile is None else None
            return decode(model, ids, mask, max_new, do_sample, temperature, top_k, top_p, seed, eos, pad, step)

        functions[key] = tf.function(run, input_signature=signature, jit_compile=bool(jit_compile),
                                     reduce_retracing=True)
    return functions[key]


def _compiled_for(model, key, make):
    """The function cached for `model` under `key`, built once by `make(model_ref)`.

    `make` receives a weak reference to the model: the registry's value must not keep its key alive.
    """
    functions = _COMPILED.setdefault(model, {})
    if key not in functions:
        functions[key] = make(weakref.ref(model))
    return functions[key]


def left_align(token_ids, padding_mask):
    """Moves each row's padding to the left so the last column holds every row's last real token."""
    ids, mask = np.array(token_ids), np.array(padding_mask)
    if not (np.diff(mask, axis=1) < 0).any():
        return ids, mask
    order = np.argsort(mask, axis=1, kind="stable")  # zeros first, real tokens keep their order
    return np.take_along_axis(ids, order, axis=1), np.take_along_axis(mask, order, axis=1)
