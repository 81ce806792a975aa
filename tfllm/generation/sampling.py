"""Choosing the next token from logits: greedy, or sampling with temperature, top-k and top-p, after
the optional repetition penalty and n-gram ban (`tfllm.generation.processors`), as transformers
runs its logits processors before its warpers.

Sampling uses stateless random ops keyed by `(seed, step)`, so a given seed repeats exactly, in
eager mode, under `tf.function` and in exported graphs alike.
"""

import tensorflow as tf

from tfllm.generation.processors import process_logits

_NEG = tf.float32.min


def filter_top_k(logits, top_k):
    """Keeps the `top_k` largest logits per row (all of them when `top_k` is 0)."""
    vocabulary = tf.shape(logits)[-1]

    def keep_top_k():
        k = tf.minimum(top_k, vocabulary)
        kth = tf.math.top_k(logits, k=k).values[:, -1:]
        return tf.where(logits < kth, _NEG, logits)

    return tf.cond(top_k > 0, keep_top_k, lambda: logits)


def filter_top_p(logits, top_p):
    """Keeps the smallest set of most likely tokens whose probability reaches `top_p` (nucleus)."""

    def keep_nucleus():
        sorted_logits = tf.sort(logits, axis=-1, direction="DESCENDING")
        probs = tf.nn.softmax(sorted_logits, axis=-1)
        mass_before = tf.cumsum(probs, axis=-1, exclusive=True)
        kept = tf.where(mass_before < top_p, sorted_logits, tf.float32.max)
        threshold = tf.reduce_min(kept, axis=-1, keepdims=True)
        return tf.where(logits < threshold, _NEG, logits)

    return tf.cond(top_p < 1.0, keep_nucleus, lambda: logits)


def next_token(logits, do_sample, temperature, top_k, top_p, seed, step, history=None):
    """Picks one token per row.

    Args:
        logits: `(batch_size, vocabulary_size)` float.
        do_sample: Python bool; greedy argmax when False.
        temperature, top_k, top_p: scalar tensors (float32, int32, float32).
        seed: `(2,)` int32 seed tensor.
        step: scalar int32, mixed into the seed so each step draws fresh noise.
        history: the tokens so far and the penalties (`processors.History`), or None for no penalties.

    Returns:
        `(batch_size,)` int32 token ids.
    """
    logits = tf.cast(logits, tf.float32)
    if history is not None:
        logits = process_logits(logits, history)
    if not do_sample:
        return tf.argmax(logits, axis=-1, output_type=tf.int32)
    logits = logits / temperature
    logits = filter_top_p(filter_top_k(logits, top_k), top_p)
    # Gumbel-max: argmax(logits + Gumbel noise) is a draw from softmax(logits).
    uniform = tf.random.stateless_uniform(tf.shape(logits), seed=seed + tf.stack([0, step]), minval=1e-20, maxval=1.0)
    gumbel = -tf.math.log(-tf.math.log(uniform))
    return tf.argmax(logits + gumbel, axis=-1, output_type=tf.int32)
