"""Argument checks, truncation, padding, tensor conversion and config reading shared by the tokenizers.

Nothing here imports TensorFlow at module level: `to_tensors` imports it only
when `return_tensors="tf"` is asked for, so `import tfllm.tokenizers` stays cheap.
"""

import numpy as np
from tokenizers import models

from tfllm.errors import invalid_argument
from tfllm.files import atomic_file
from tfllm.tokenizers import wordpiece

PADDING_SIDES = ("left", "right")
RETURN_TENSORS = (None, "np", "tf")
WITH_TOKEN_TYPES = ("input_ids", "token_type_ids", "attention_mask")
WITHOUT_TOKEN_TYPES = ("input_ids", "attention_mask")
# transformers' tokenizer classes whose `model_input_names` include token_type_ids (the base
# PreTrainedTokenizerFast's default does too); GPT-2, Llama, T5, RoBERTa... leave them out.
_TOKEN_TYPE_CLASSES = ("BertTokenizer", "BertTokenizerFast", "PreTrainedTokenizerFast")
WORDPIECE_CLASSES = ("BertTokenizer", "BertTokenizerFast")


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
    raise invalid_argument(name, expected, value)


def check_padding(padding):
    """Normalises `padding` to `None`, `"longest"` or `"max_length"`."""
    check_one_of("padding", padding, (True, False, "longest", "max_length"))
    if padding is False:
        return None
    return "longest" if padding is True else padding


TRUNCATION_STRATEGIES = ("longest_first", "only_first", "only_second")


def check_truncation(truncation):
    """Normalises `truncation` to `None` or a strategy (`True` means `"longest_first"`, as in HF)."""
    check_one_of("truncation", truncation, (True, False, *TRUNCATION_STRATEGIES, "do_not_truncate"))
    if truncation is True:
        return "longest_first"
    return None if truncation in (False, "do_not_truncate") else truncation


def check_return_token_type_ids(value):
    """Accepts `None` (the tokenizer's default), `True` or `False`."""
    return check_one_of("return_token_type_ids", value, (None, True, False))


def check_model_input_names(names):
    """Returns `names` as a tuple of strings; it must name "input_ids"."""
    if (
        not isinstance(names, (list, tuple))
        or not all(isinstance(name, str) for name in names)
        or "input_ids" not in names
    ):
        raise invalid_argument("model_input_names", "a list of input names that includes 'input_ids'", names)
    return tuple(names)


def check_max_length(max_length, name="max_length"):
    """Accepts `None` or a positive int (not a bool)."""
    if max_length is None:
        return None
    if isinstance(max_length, bool) or not isinstance(max_length, (int, np.integer)):
        raise invalid_argument(name, "a positive integer or None", max_length)
    if max_length < 1:
        raise invalid_argument(name, "a positive integer or None", max_length)
    return int(max_length)


def as_text_batch(text):
    """Returns `(list_of_strings, is_single)` for a `str` or a list/tuple of `str`."""
    if isinstance(text, str):
        return [text], True
    if isinstance(text, (list, tuple)) and all(isinstance(t, str) for t in text):
        return list(text), False
    raise invalid_argument("text", "a string, a list of strings or a list of (text, text_pair) pairs", text)


def _is_pair(item):
    return isinstance(item, (list, tuple)) and len(item) == 2 and all(isinstance(t, str) for t in item)


def as_text_inputs(text, text_pair=None):
    """Normalises the `text` / `text_pair` arguments of a tokenizer call, as `transformers` accepts them.

    Args:
        text: A string, a list of strings, or a list of `(text, text_pair)` pairs.
        text_pair: `None`; a string when `text` is a string; a list of strings, one per text, when
            `text` is a list.

    Returns:
        `(inputs, is_single, is_pair)`: `inputs` is a list of strings, or of `(str, str)` tuples.
    """
    if text_pair is None:
        if isinstance(text, (list, tuple)) and text and all(_is_pair(t) for t in text):
            return [tuple(t) for t in text], False, True
        texts, is_single = as_text_batch(text)
        return texts, is_single, False
    texts, is_single = as_text_batch(text)
    if is_single:
        if not isinstance(text_pair, str):
            raise invalid_argument("text_pair", "a string (or None) when `text` is a string", text_pair)
        # transformers encodes a single text with an empty text_pair as a single sequence.
        return ([(text, text_pair)], True, True) if text_pair else ([text], True, False)
    if (
        not isinstance(text_pair, (list, tuple))
        or not all(isinstance(t, str) for t in text_pair)
        or len(text_pair) != len(texts)
    ):
        raise invalid_argument("text_pair", f"a list of {len(texts)} strings, one per text (or None)", text_pair)
    return list(zip(texts, text_pair)), False, True


def truncated_lengths(first, second, budget, strategy, max_length):
    """The lengths two token sequences are cut to so that together they fit in `budget` tokens.

    The rules of the `tokenizers` library (which `transformers`' fast tokenizers use):
    "longest_first" shortens the longer sequence first, then both in turn; "only_first" and
    "only_second" shorten one sequence only.

    Args:
        first: Length of the first sequence.
        second: Length of the second sequence, or `None` for a single sequence.
        budget: Tokens available for the sequences (`max_length` less the special tokens).
        strategy: "longest_first", "only_first" or "only_second".
        max_length: The caller's `max_length` (named in errors).

    Returns:
        `(first_length, second_length)`; `second_length` is `None` for a single sequence.
    """
    total = first + (second or 0)
    if total <= budget:
        return first, second
    if budget == 0:  # Every strategy empties both sequences.
        return 0, None if second is None else 0
    if strategy == "only_second" and second is None:
        raise invalid_argument(
            "truncation", "'longest_first' or 'only_first' for single sequences (no text_pair)", strategy
        )
    if strategy != "longest_first":
        target = first if strategy == "only_first" else second
        if target <= total - budget:
            raise invalid_argument(
                "max_length",
                f"a length that truncation={strategy!r} can reach: the sequence it may cut has "
                f"{target} tokens and {total - budget} must go",
                max_length,
            )
        cut = target - (total - budget)
        return (cut, second) if strategy == "only_first" else (first, cut)
    if second is None:
        return budget, None
    short, long_ = sorted((first, second))
    long_ = short if short > budget else max(short, budget - short)
    if short + long_ > budget:
        short, long_ = budget // 2, budget // 2 + budget % 2
    return (long_, short) if first > second else (short, long_)


def encode_truncated(backend, inputs, is_pair, add_special_tokens, strategy, max_length):
    """Encodes `inputs` (strings, or `(str, str)` pairs) cut to `max_length` tokens each.

    The texts' tokens are cut first (by `truncated_lengths`), then the special tokens are added, so
    the total is `max_length` and trailing special tokens survive, as the `tokenizers` library does
    for `transformers`.

    Returns:
        A list of `tokenizers.Encoding`.
    """
    num_special = backend.num_special_tokens_to_add(is_pair) if add_special_tokens else 0
    if max_length < num_special:
        raise invalid_argument(
            "max_length", f"at least {num_special} (the special tokens added to every sequence)", max_length
        )
    firsts = backend.encode_batch([x[0] if is_pair else x for x in inputs], add_special_tokens=False)
    seconds = (backend.encode_batch([x[1] for x in inputs], add_special_tokens=False)
               if is_pair else [None] * len(firsts))
    encodings = []
    for first, second in zip(firsts, seconds):
        n_first, n_second = truncated_lengths(
            len(first), None if second is None else len(second), max_length - num_special, strategy, max_length
        )
        first.truncate(n_first)
        if second is not None:
            second.truncate(n_second)
        encodings.append(backend.post_process(first, second, add_special_tokens=add_special_tokens))
    return encodings


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
    ids = pad_rows(rows, length, pad_id, side)
    mask = pad_rows([[1] * len(row) for row in rows], length, 0, side)
    return ids, mask


def pad_rows(rows, length, value, side):
    """Pads every row of `rows` with `value` to `length` on `side` ("left" or "right")."""
    padded = []
    for row in rows:
        pad = [value] * max(0, length - len(row))
        padded.append(pad + list(row) if side == "left" else list(row) + pad)
    return padded


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
            raise invalid_argument(name, "a 1-D sequence of token ids", ids) from e
    if array.ndim == 0:
        array = array.reshape(1)
    if array.ndim != 1 or not (array.size == 0 or np.issubdtype(array.dtype, np.integer)):
        raise invalid_argument(name, "a 1-D sequence of integer token ids", ids)
    return array.astype(np.int64).tolist()


def as_id_rows(ids, name="ids"):
    """Turns a 2-D list (rows may differ in length), array or TF tensor into lists of ints."""
    array = _to_numpy(ids)
    if array is not None:
        if array.ndim != 2:
            raise invalid_argument(name, f"a 2-D batch of token ids, got {array.ndim} dimension(s)", ids)
        return [as_id_list(row, name) for row in array]
    if not isinstance(ids, (list, tuple)) or any(
        isinstance(row, (int, np.integer)) for row in ids
    ):
        raise invalid_argument(name, "a 2-D batch of token ids (a list of lists)", ids)
    return [as_id_list(row, name) for row in ids]


def check_rectangular(rows, padding):
    """Raises unless all rows have one length (tensors need rectangular batches)."""
    lengths = sorted({len(row) for row in rows})
    if len(lengths) <= 1:
        return
    if padding is None:
        raise invalid_argument(
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
    """Writes `content` (str or bytes) to `path` through `tfllm.files.atomic_file`."""
    with atomic_file(path) as temporary:
        temporary.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)


def clean_up(text):
    """Removes spaces before punctuation and contractions, like `transformers`."""
    for before, after in (
        (" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"),
        (" n't", "n't"), (" 'm", "'m"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re"),
    ):
        text = text.replace(before, after)
    return text


def folder_init_kwargs(config, backend):
    """`Tokenizer` arguments read from a folder's tokenizer config as `transformers` reads them.

    Args:
        config: The merged `tokenizer_config.json` / `special_tokens_map.json` dict.
        backend: The loaded `tokenizers.Tokenizer`.

    Returns:
        A dict with `model_input_names` (the config's, else the default of its
        `tokenizer_class`: BERT and `PreTrainedTokenizerFast` include
        `token_type_ids`, GPT-2 and the others do not) and the `sep_token`,
        `cls_token` and `mask_token` the config sets (BertTokenizer's defaults
        for WordPiece tokenizers).
    """
    tokenizer_class = config.get("tokenizer_class")
    wordpiece_like = tokenizer_class in WORDPIECE_CLASSES or isinstance(backend.model, models.WordPiece)
    names = config.get("model_input_names")
    if names is None:
        with_types = tokenizer_class in _TOKEN_TYPE_CLASSES or (tokenizer_class is None and wordpiece_like)
        names = WITH_TOKEN_TYPES if with_types else WITHOUT_TOKEN_TYPES
    kwargs = {"model_input_names": list(names)}
    for name in ("sep_token", "cls_token", "mask_token"):
        value = config.get(name) or (wordpiece.DEFAULT_SPECIAL_TOKENS[name] if wordpiece_like else None)
        if value:
            kwargs[name] = value["content"] if isinstance(value, dict) else value
    return kwargs
