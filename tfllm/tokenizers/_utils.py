"""Argument checks, padding and tensor conversion shared by the tokenizers.

Nothing here imports TensorFlow at module level: `to_tensors` imports it only
when `return_tensors="tf"` is asked for, so `import tfllm.tokenizers` stays cheap.
"""

import os
import tempfile

import numpy as np

PADDING_SIDES = ("left", "right")
RETURN_TENSORS = (None, "np", "tf")


def invalid(name, expected, value):
    """Builds the standard argument error.

    Args:
        name: The argument's name.
        expected: What was expected, e.g. "one of 'left', 'right'".
        value: The value received.

    Returns:
        A `ValueError` with the message
        "Invalid value for argument `name`. Expected .... Received: name=value".
    """
    return ValueError(
        f"Invalid value for argument `{name}`. Expected {expected}. Received: {name}={value!r}"
    )


def check_one_of(name, value, choices):
    """Raises the standard error unless `value` is one of `choices`.

    Booleans are compared by identity so that `1` does not pass for `True`.
    """
    for choice in choices:
        if value is choice or (
            isinstance(value, str) and isinstance(choice, str) and value == choice
        ):
            return value
    expected = "one of " + ", ".join(repr(c) for c in choices)
    raise invalid(name, expected, value)


def check_padding(padding):
    """Normalises `padding` to `None`, `"longest"` or `"max_length"`."""
    check_one_of("padding", padding, (True, False, "longest", "max_length"))
    if padding is False:
        return None
    return "longest" if padding is True else padding


def check_truncation(truncation):
    """Normalises `truncation` to a bool (`"longest_first"` means `True`, as in HF)."""
    check_one_of("truncation", truncation, (True, False, "longest_first", "do_not_truncate"))
    return truncation is True or truncation == "longest_first"


def check_max_length(max_length, name="max_length"):
    """Accepts `None` or a positive int (not a bool)."""
    if max_length is None:
        return None
    if isinstance(max_length, bool) or not isinstance(max_length, (int, np.integer)):
        raise invalid(name, "a positive integer or None", max_length)
    if max_length < 1:
        raise invalid(name, "a positive integer or None", max_length)
    return int(max_length)


def as_text_batch(text):
    """Returns `(list_of_strings, is_single)` for a `str` or a list/tuple of `str`."""
    if isinstance(text, str):
        return [text], True
    if isinstance(text, (list, tuple)) and all(isinstance(t, str) for t in text):
        return list(text), False
    raise invalid("text", "a string or a list of strings", text)


def pad_batch(rows, length, pad_id, side):
    """Pads every row of `rows` to `length` on `side`; longer rows are left as they are.

    Args:
        rows: A list of lists of token ids.
        length: The target length.
        pad_id: The id written into padded positions.
        side: `"left"` or `"right"`.

    Returns:
        `(input_ids, attention_mask)`, two lists of lists; the mask is 0 on padding.
    """
    ids, mask = [], []
    for row in rows:
        pad = max(0, length - len(row))
        if side == "left":
            ids.append([pad_id] * pad + row)
            mask.append([0] * pad + [1] * len(row))
        else:
            ids.append(row + [pad_id] * pad)
            mask.append([1] * len(row) + [0] * pad)
    return ids, mask


def to_tensors(batch, return_tensors):
    """Converts equal-length lists of lists into int32 numpy arrays or TF tensors.

    Args:
        batch: A dict of lists of equal-length lists.
        return_tensors: `"np"` or `"tf"`.

    Returns:
        A dict with the same keys, each value of shape `(batch_size, sequence_length)`.
    """
    out = {}
    for key, rows in batch.items():
        width = len(rows[0]) if rows else 0
        array = np.array(rows, dtype=np.int32).reshape(len(rows), width)
        out[key] = array
    if return_tensors == "tf":
        import tensorflow as tf  # pylint: disable=import-outside-toplevel

        out = {key: tf.constant(value, dtype=tf.int32) for key, value in out.items()}
    return out


def _to_numpy(ids):
    """Returns a numpy view of a TF tensor or array-like, or `None` for Python sequences."""
    if hasattr(ids, "numpy") and callable(ids.numpy):  # tf.Tensor (and torch tensors)
        return np.asarray(ids.numpy())
    if isinstance(ids, np.ndarray):
        return ids
    return None


def as_id_list(ids, name="ids"):
    """Turns a 1-D list, numpy array or TF tensor of token ids (or one id) into a list of ints."""
    if isinstance(ids, (int, np.integer)) and not isinstance(ids, bool):
        return [int(ids)]
    array = _to_numpy(ids)
    if array is None:
        try:
            array = np.asarray(ids)
        except ValueError as e:
            raise invalid(name, "a 1-D sequence of token ids", ids) from e
    if array.ndim == 0:
        array = array.reshape(1)
    if array.ndim != 1 or not (array.size == 0 or np.issubdtype(array.dtype, np.integer)):
        raise invalid(name, "a 1-D sequence of integer token ids", ids)
    return array.astype(np.int64).tolist()


def as_id_rows(ids, name="ids"):
    """Turns a 2-D list (rows may differ in length), array or TF tensor into lists of ints."""
    array = _to_numpy(ids)
    if array is not None:
        if array.ndim != 2:
            raise invalid(name, f"a 2-D batch of token ids, got {array.ndim} dimension(s)", ids)
        return [as_id_list(row, name) for row in array]
    if not isinstance(ids, (list, tuple)) or any(
        isinstance(row, (int, np.integer)) for row in ids
    ):
        raise invalid(name, "a 2-D batch of token ids (a list of lists)", ids)
    return [as_id_list(row, name) for row in ids]


def check_rectangular(rows, padding):
    """Raises unless all rows have one length (tensors need rectangular batches)."""
    lengths = sorted({len(row) for row in rows})
    if len(lengths) <= 1:
        return
    if padding is None:
        raise invalid(
            "padding",
            f"padding=True to return a batch of sequences of different lengths "
            f"({lengths[0]} to {lengths[-1]} tokens) as tensors",
            False,
        )
    raise ValueError(
        f"Cannot return a batch of sequences of different lengths ({lengths[0]} to "
        f"{lengths[-1]} tokens) as tensors: some are longer than `max_length`. "
        "Pass truncation=True to cut them."
    )


def write_atomic(path, content):
    """Writes `content` to `path` through a temporary file and `os.replace`."""
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".tmp-", suffix=".json")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(content)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def clean_up(text):
    """Removes spaces before punctuation and contractions, like `transformers`."""
    for before, after in (
        (" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"),
        (" n't", "n't"), (" 'm", "'m"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re"),
    ):
        text = text.replace(before, after)
    return text
