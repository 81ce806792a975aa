"""tf.data pipelines: token streams packed into fixed-length blocks for causal LM training."""

import numpy as np
import tensorflow as tf

from tfllm.errors import check_int, invalid_argument


def causal_lm_dataset(token_ids, sequence_length, batch_size, *, shuffle=True, seed=0, drop_remainder=True):
    """Packs one long token stream into `(inputs, labels)` batches for next-token prediction.

    The stream is cut into blocks of `sequence_length + 1` tokens; each block gives
    `input_ids = block[:-1]` and labels `block[1:]`, so `model.fit` with
    `SparseCategoricalCrossentropy(from_logits=True)` trains the model to predict the next token.

    Args:
        token_ids: 1-D sequence of ints (documents already joined with an end-of-text token).
        sequence_length: tokens per training example.
        batch_size: examples per batch.
        shuffle: shuffle blocks each epoch.
        seed: shuffle seed.
        drop_remainder: drop a last, smaller batch (keeps shapes static for compiled training).

    Returns:
        A `tf.data.Dataset` of `({"input_ids", "attention_mask"}, labels)`, int32
        `(batch_size, sequence_length)` each.
    """
    sequence_length = check_int("sequence_length", sequence_length, minimum=1)
    batch_size = check_int("batch_size", batch_size, minimum=1)
    ids = np.asarray(token_ids, dtype=np.int32).reshape(-1)
    block = sequence_length + 1
    num_blocks = len(ids) // block
    if num_blocks < (batch_size if drop_remainder else 1):
        raise invalid_argument(
            "token_ids",
            f"at least {block * batch_size} tokens for one batch of {batch_size} x {sequence_length}",
            f"{len(ids)} tokens",
        )
    blocks = ids[: num_blocks * block].reshape(num_blocks, block)
    dataset = tf.data.Dataset.from_tensor_slices(blocks)
    if shuffle:
        dataset = dataset.shuffle(num_blocks, seed=seed, reshuffle_each_iteration=True)

    def split(block_ids):
        inputs = {"input_ids": block_ids[:-1], "attention_mask": tf.ones([sequence_length], tf.int32)}
        return inputs, block_ids[1:]

    dataset = dataset.map(split, num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.batch(batch_size, drop_remainder=drop_remainder).prefetch(tf.data.AUTOTUNE)
