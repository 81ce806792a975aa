"""Logits processors that look back at the tokens so far: a repetition penalty and no-repeat n-grams.

Both follow transformers (4.57) exactly: `RepetitionPenaltyLogitsProcessor` divides the logit of every
token already in the sequence by the penalty (multiplies it when negative), and
`NoRepeatNGramLogitsProcessor` sets to -inf every token that would complete an n-gram already in the
sequence. The sequence is the prompt plus the new tokens for a decoder, the decoder start token plus
the new tokens for an encoder-decoder, as in transformers.

One divergence, on purpose: only real tokens count. transformers looks at every id of `input_ids`,
padding included, so in a left-padded batch it penalizes the pad id (often the eos id) in the padded
rows only, and a row's continuation depends on the other prompts it is batched with. Here padded
positions are ignored, so each row continues as transformers continues it unpadded, alone.

The settings are scalar tensors and the tokens so far a `History` carried through the decoding loop,
so one traced loop serves every penalty and n-gram size, eagerly and inside XLA programs.
"""

import collections

import tensorflow as tf

_Penalties = collections.namedtuple("Penalties", "repetition_penalty no_repeat_ngram_size")


class Penalties(_Penalties):
    """The processors' settings: `repetition_penalty` (float32 scalar, 1 = off) and
    `no_repeat_ngram_size` (int32 scalar, 0 = off)."""

    __slots__ = ()


_History = collections.namedtuple("History", "tokens start length penalties")


class History(_History):
    """The tokens so far, carried through the decoding loop.

    Fields:
        tokens: `(batch_size, width)` int32; row `b` holds its real tokens at positions
            `[start[b], length)` (left-padded prompts: padding sits before `start`).
        start: `(batch_size,)` int32, the first real position of each row.
        length: scalar int32, the positions written so far (the same for every row).
        penalties: the `Penalties`.
    """

    __slots__ = ()


def prompt_history(model, prefix, padding_mask, room, penalties):
    """The history after `model.prefill` returned `prefix`: the left-padded prompt of a decoder (its
    `padding_mask` says which tokens are real), the decoder start tokens of an encoder-decoder."""
    real = tf.ones_like(prefix) if getattr(model, "is_encoder_decoder", False) else padding_mask
    return start_history(prefix, real, room, penalties)


def start_history(prefix, real, room, penalties):
    """The history after the prompt: `prefix` `(batch_size, prefix_length)` ids with `real` 1 for real
    tokens (left-padded), and `room` more positions for the new tokens."""
    prefix = tf.cast(prefix, tf.int32)
    batch_size, length = tf.shape(prefix)[0], tf.shape(prefix)[1]
    tokens = tf.concat([prefix, tf.zeros([batch_size, room], tf.int32)], axis=1)
    start = length - tf.reduce_sum(tf.cast(real, tf.int32), axis=1)
    return History(tokens, start, length, penalties)


def append(history, token):
    """`history` with the `(batch_size,)` tokens written at position `history.length`."""
    columns = tf.range(tf.shape(history.tokens)[1])[None, :]
    tokens = tf.where(columns == history.length, token[:, None], history.tokens)
    return history._replace(tokens=tokens, length=history.length + 1)


def process_logits(logits, history):
    """Applies the repetition penalty, then the n-gram ban, to `(batch_size, vocabulary_size)` float32 logits."""
    return ban_repeated_ngrams(apply_repetition_penalty(logits, history), history)


def apply_repetition_penalty(logits, history):
    """transformers' `RepetitionPenaltyLogitsProcessor` over the real tokens of `history`."""
    penalty = history.penalties.repetition_penalty

    def penalize():
        penalized = tf.where(logits < 0, logits * penalty, logits / penalty)
        return tf.where(_present(history.tokens, _real(history), tf.shape(logits)[-1]), penalized, logits)

    return tf.cond(tf.not_equal(penalty, 1.0), penalize, lambda: logits)


def ban_repeated_ngrams(logits, history):
    """transformers' `NoRepeatNGramLogitsProcessor`: -inf for each token that would complete an n-gram
    (of `no_repeat_ngram_size` real tokens) already in `history`."""
    size = history.penalties.no_repeat_ngram_size

    def ban():
        tokens, length = history.tokens, history.length
        width = tf.shape(tokens)[1]
        starts = tf.range(width)  # where each candidate n-gram begins

        # A loop over the n-1 tokens before the one to ban keeps every shape static, for XLA.
        def match_offset(offset, matches):
            window = tf.gather(tokens, tf.minimum(starts + offset, width - 1), axis=1)  # (B, W)
            tail = tf.gather(tokens, tf.maximum(length - (size - 1) + offset, 0), axis=1)  # (B,)
            return offset + 1, matches & tf.equal(window, tail[:, None])

        matches = tf.ones_like(tokens, tf.bool)  # (B, W): the n-gram at each start matches the last n-1 tokens
        _, matches = tf.while_loop(lambda offset, _: offset < size - 1, match_offset, (tf.constant(0), matches))
        ends = starts + size - 1  # the token each n-gram would ban
        whole = (starts[None, :] >= history.start[:, None]) & (ends[None, :] < length)  # the n-gram is real
        tail_real = (length - (size - 1) >= history.start)[:, None]  # n-1 real tokens precede the next one
        banned = _present(tf.gather(tokens, tf.minimum(ends, width - 1), axis=1), matches & whole & tail_real,
                          tf.shape(logits)[-1])
        return tf.where(banned, tf.constant(-float("inf"), logits.dtype), logits)

    return tf.cond(size > 0, ban, lambda: logits)


def _real(history):
    """`(batch_size, width)` bool: the positions that hold real tokens."""
    columns = tf.range(tf.shape(history.tokens)[1])[None, :]
    return (columns >= history.start[:, None]) & (columns < history.length)


def _present(ids, where, vocabulary_size):
    """`(batch_size, vocabulary_size)` bool: which ids occur in each row of `ids` at a position where `where` holds."""
    batch_size = tf.shape(ids)[0]
    segments = ids + tf.range(batch_size)[:, None] * vocabulary_size  # one segment per (row, id)
    counts = tf.math.unsorted_segment_max(tf.cast(where, tf.int32), segments, batch_size * vocabulary_size)
    return tf.reshape(counts > 0, [batch_size, vocabulary_size])
