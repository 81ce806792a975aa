"""Unpacking of model inputs given the Hugging Face way (a tokenizer's dict) or as bare token ids."""

import tensorflow as tf


def unpack_inputs(inputs):
    """Returns `(token_ids, padding_mask)` from a dict or a tensor of token ids.

    Args:
        inputs: a dict with "input_ids" and optionally "attention_mask" (other keys, such as a
            tokenizer's extras, are ignored), or a `(batch_size, sequence_length)` tensor of ids.

    Returns:
        int32 token ids and an int32 padding mask (all ones when none was given).
    """
    if isinstance(inputs, dict):
        if "input_ids" not in inputs:
            raise ValueError(
                "Invalid value for argument `inputs`. Expected a dict with an 'input_ids' entry (as a "
                f"tokenizer returns) or a tensor of token ids. Received: inputs with keys {sorted(inputs)}"
            )
        token_ids = inputs["input_ids"]
        padding_mask = inputs.get("attention_mask")
    else:
        token_ids, padding_mask = inputs, None
    token_ids = tf.cast(token_ids, tf.int32)
    if token_ids.shape.rank != 2:
        raise ValueError(
            "Invalid value for argument `input_ids`. Expected a 2-D (batch_size, sequence_length) "
            f"tensor. Received: input_ids with shape {token_ids.shape}"
        )
    if padding_mask is None:
        padding_mask = tf.ones_like(token_ids)
    return token_ids, tf.cast(padding_mask, tf.int32)
