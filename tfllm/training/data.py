"""Training data: text files, JSON Lines and the built-in corpus turned into `tf.data` pipelines.

Files are read and tokenized in Python up front, so every bad record is reported as `path:line`
before any training starts. Tokenizing goes a bounded group of characters at a time into int32
arrays (`tfllm.training.token_arrays`), and the pipelines shuffle and batch indices and gather
rows from one copy of the arrays, so memory stays a small multiple of the files (a 50 MB
single-line file: +0.64 GB, not +8.8 GB). The `tf.data` pipelines shuffle, batch, mask (masked
LM) and prefetch. Every element is `(inputs, labels, sample_weight)`, ready for `model.fit` with
`keras.losses.SparseCategoricalCrossentropy(from_logits=True)`.
"""

import collections
import dataclasses
import json
import logging
import os

import numpy as np
import tensorflow as tf

from pydoc_data.topics import topics as pydoc_topics

from tfllm.errors import check_float, check_int, invalid_argument
from tfllm.models import tasks as model_tasks
from tfllm.training.token_arrays import shorten, token_arrays

logger = logging.getLogger(__name__)

# The training tasks (`tfllm train --task`) → the model task (`tfllm.models.tasks`) each one trains.
MODEL_TASKS = {"causal_lm": model_tasks.CAUSAL_LM, "masked_lm": model_tasks.MASKED_LM,
               "classification": model_tasks.SEQUENCE_CLASSIFICATION, "seq2seq": model_tasks.SEQ2SEQ_LM}
TASKS = tuple(MODEL_TASKS)
LM_TASKS = ("causal_lm", "masked_lm", "seq2seq")  # the tasks with a perplexity
BUILTIN_CORPORA = ("pydoc",)
FORMATS = (".txt", ".jsonl")

Record = collections.namedtuple("Record", "values source")
Record.__doc__ = """One record read from a data file.

Fields:
    values: a dict of the record's fields (`{"text": document}` for a `.txt` file, the JSON object
        for a `.jsonl` line).
    source: where it came from, as `"path:line"` (the first line of a `.txt` document).
"""


class DataError(ValueError):
    """Bad training data or data arguments; the message starts with `path:line: ` when a record is at fault."""


@dataclasses.dataclass
class TrainingData:
    """The datasets `build_datasets` returns, and their sizes.

    Attributes:
        train: batches of `(inputs, labels, sample_weight)`, shuffled, `drop_remainder=True`.
        validation: the held-out batches (in order, last batch may be smaller), or `None`.
        train_examples: training examples (packed blocks for causal LM, chunks for masked LM).
        validation_examples: held-out examples (0 without validation data).
        steps_per_epoch: full training batches per epoch (`train_examples // batch_size`).
        tokens_per_example: token positions one example feeds the model (`sequence_length`;
            twice that for seq2seq: source and target).
        label2id: classification only, the `{label: id}` map used (given, or built sorted from the
            string labels of the training data); `None` otherwise.
    """

    train: tf.data.Dataset
    validation: tf.data.Dataset | None
    train_examples: int
    validation_examples: int
    steps_per_epoch: int
    tokens_per_example: int
    label2id: dict | None = None
    make_epoch: object = dataclasses.field(default=None, repr=False, compare=False)

    def epoch(self, epoch, skip=0):
        """The training batches of epoch `epoch` (from 0), for one `fit` per epoch.

        Their order (when `build_datasets` shuffles) and their masks (masked LM) are functions of
        `seed` and `epoch` alone, whichever process or iterator asks, unlike `train`, whose reshuffles
        and masks follow how often it was iterated. A run restarted after a crash therefore sees the
        batches it would have seen; `skip` drops the batches it had trained on.
        """
        epoch = check_int("epoch", epoch, minimum=0)
        return self.make_epoch(epoch, check_int("skip", skip, minimum=0))


# === Reading records ===


def read_records(path, *, fields=None):
    """Reads the records of a `.txt` or `.jsonl` file.

    A `.txt` file holds documents separated by blank lines, one record (field `"text"`) per
    document. A `.jsonl` file holds one JSON object per line; blank lines are skipped.

    Args:
        path: the file.
        fields: field names every record must have; a dict `{field: argument}` also names the
            argument that chose each field, for error messages.

    Returns:
        A list of `Record`s.

    Raises:
        DataError: a missing file, an unknown format, an empty file, a line that is not UTF-8 or
            not a JSON object, or a record without a required field, with its `path:line`.

    Example:
    >>> records = read_records("train.jsonl", fields=["text", "label"])
    >>> records[0].source
    'train.jsonl:1'
    """
    return _read_file(os.fspath(path), _field_arguments(fields), "path")


def _field_arguments(fields):
    if fields is None:
        return {}
    if isinstance(fields, dict):
        return dict(fields)
    return {name: "fields" for name in fields}


def _read_file(path, fields, argument):
    extension = os.path.splitext(path)[1].lower()
    if not os.path.isfile(path):
        raise invalid_argument(argument, f"an existing {' or '.join(FORMATS)} file, or one of {BUILTIN_CORPORA} "
                               "(no such file)", path, error=DataError)
    if extension not in FORMATS:
        raise invalid_argument(argument, f"a file ending in one of {FORMATS}", path, error=DataError)
    lines = list(_lines(path))
    records = _txt_records(path, lines, fields) if extension == ".txt" else _jsonl_records(path, lines, fields)
    if not records:
        raise DataError(f"{path}:{max(1, len(lines))}: no records: the file holds no "
                        f"{'text' if extension == '.txt' else 'JSON lines'} (argument `{argument}`)")
    return records


def _lines(path):
    """Yields `(line_number, text)`, naming the line that is not UTF-8."""
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise DataError(f"{path}:{number}: not UTF-8 text ({e.reason} at byte {e.start})") from e
            yield number, text.lstrip("\ufeff") if number == 1 else text


def _txt_records(path, lines, fields):
    extra = sorted(set(fields) - {"text"})
    if extra:
        raise DataError(f"{path}:1: missing field {extra[0]!r} (argument `{fields[extra[0]]}`); a .txt file "
                        "has only the field 'text', use .jsonl for named fields")
    records, document, start = [], [], None
    for number, text in lines + [(len(lines) + 1, "")]:
        if text.strip():
            start = start or number
            document.append(text.rstrip("\r\n"))
        elif document:
            records.append(Record({"text": "\n".join(document)}, f"{path}:{start}"))
            document, start = [], None
    return records


def _jsonl_records(path, lines, fields):
    records = []
    for number, text in lines:
        if not text.strip():
            continue
        source = f"{path}:{number}"
        try:
            values = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataError(f"{source}: invalid JSON: {e.msg} (column {e.colno})") from e
        except RecursionError as e:
            raise DataError(f"{source}: invalid JSON: nested too deeply for Python's parser") from e
        if not isinstance(values, dict):
            raise DataError(f"{source}: expected a JSON object with named fields, got {type(values).__name__}")
        for name, argument in fields.items():
            if name not in values:
                raise DataError(f"{source}: missing field {name!r} (argument `{argument}`); "
                                f"fields present: {sorted(values)}")
        records.append(Record(values, source))
    return records


def _read_data(data, fields, argument):
    """Records of `data`: a path, a list of paths, or a name in `BUILTIN_CORPORA`."""
    if isinstance(data, str) and data in BUILTIN_CORPORA:
        return _pydoc_records(fields, argument)
    paths = [data] if isinstance(data, (str, os.PathLike)) else data
    if not isinstance(paths, (list, tuple)) or not paths or not all(isinstance(p, (str, os.PathLike)) for p in paths):
        raise invalid_argument(argument, f"a file path, a list of file paths, or one of {BUILTIN_CORPORA}", data,
                               error=DataError)
    return [record for path in paths for record in _read_file(os.fspath(path), fields, argument)]


def pydoc_texts(max_documents=0):
    """The Python documentation topics (`pydoc_data.topics`, part of CPython), one string per topic,
    sorted by name; the first `max_documents` of them when it is not 0."""
    names = sorted(pydoc_topics)
    return [pydoc_topics[name] for name in (names[:max_documents] if max_documents else names)]


def _pydoc_records(fields, argument):
    """The Python documentation topics as records (see `pydoc_texts`)."""
    extra = sorted(set(fields) - {"text"})
    if extra:
        raise DataError(f"pydoc: missing field {extra[0]!r} (argument `{fields[extra[0]]}`); the built-in "
                        f"corpus (argument `{argument}`) has only the field 'text'")
    return [Record({"text": pydoc_topics[name]}, f"pydoc:{name}") for name in sorted(pydoc_topics)]


# === Building datasets ===


def build_datasets(task, tokenizer, data, *, sequence_length, batch_size, validation_data=None,
                   validation_split=0.1, text_field="text", text_pair_field=None, label_field="label",
                   source_field="source", target_field="target", num_labels=None, label2id=None,
                   mlm_probability=0.15, max_positions=None, num_replicas=1, shuffle=True, seed=0,
                   decoder_start_token_id=None):
    """Reads, checks and tokenizes training data and returns train/validation `tf.data` pipelines.

    Elements are `(inputs, labels, sample_weight)` with int32 inputs and labels and float32 weights;
    `B` is `batch_size` (global, over all replicas) and `L` is `sequence_length`:

    - "causal_lm": documents joined with the eos token, cut into blocks of `L + 1` tokens;
      inputs `{"input_ids", "attention_mask"}` `(B, L)`, labels the next tokens `(B, L)`, weight 1.
    - "masked_lm": each document cut into chunks of `[CLS] ... [SEP]` padded to `L`; inputs
      `{"input_ids", "attention_mask", "token_type_ids"}`, labels the original ids `(B, L)`,
      weight 1 on masked positions only. `mlm_probability` of the maskable tokens (never special
      tokens or padding) are chosen anew each epoch: 80% become the mask token, 10% a random token,
      10% stay. Validation masks are the same every pass.
    - "classification": `(text[, text_pair], label)` JSON lines; inputs `{"input_ids",
      "attention_mask", "token_type_ids"}` truncated and padded to `L`, labels `(B,)`, weight 1.
    - "seq2seq": `(source, target)` JSON lines; inputs `{"input_ids", "attention_mask",
      "decoder_input_ids", "decoder_attention_mask"}` `(B, L)`, labels the target ids `(B, L)`,
      weight 0 on padding. `decoder_input_ids` are the labels shifted right after
      `decoder_start_token_id`, as `tfllm.models.t5.seq2seq_lm.shift_right` does.

    With `sample_weight` 0 on some positions, Keras' default loss reduction divides by all
    positions; `reduction="mean_with_sample_weight"` gives the mean over weighted tokens.

    Shuffles and masks depend only on `seed` and on how often the dataset was iterated, in any
    process: `train.repeat().skip(steps_done)` of a fresh build replays an interrupted run exactly.

    Args:
        task: one of `TASKS`.
        tokenizer: a `tfllm.tokenizers.Tokenizer`.
        data: a `.txt` / `.jsonl` path, a list of them, or `"pydoc"` (the Python documentation).
        sequence_length: tokens per example (per side for seq2seq).
        batch_size: global batch size.
        validation_data: held-out data (same forms as `data`); when given, `validation_split` is
            not used.
        validation_split: fraction of the examples held out for validation (at least one when
            positive), chosen with `seed`; 0 for none.
        text_field, text_pair_field, label_field: JSON fields for the text (causal/masked LM and
            classification), the optional second text and the label (classification).
        source_field, target_field: JSON fields of seq2seq pairs.
        num_labels: classification: labels must be ids in `[0, num_labels)`.
        label2id: classification: `{label: id}` for string labels; built sorted from `data` when
            `None` and the labels are strings.
        mlm_probability: masked LM: fraction of tokens masked.
        max_positions: the model's longest sequence; a larger `sequence_length` is an error.
        num_replicas: replicas in sync; `batch_size` must be a multiple.
        shuffle: shuffle the training examples each epoch.
        seed: seeds the shuffle, the validation split and masking.
        decoder_start_token_id: seq2seq: the first decoder input; default the pad token id (T5).

    Returns:
        A `TrainingData`.

    Raises:
        DataError: bad arguments, or bad data, naming the `path:line` at fault.

    Example:
    >>> data = build_datasets("causal_lm", tokenizer, "pydoc", sequence_length=64, batch_size=8)
    >>> model.fit(data.train, validation_data=data.validation, epochs=1)
    """
    spec = _check_arguments(task, tokenizer, sequence_length, batch_size, num_replicas, max_positions,
                            validation_split, mlm_probability, seed, num_labels)
    fields = _task_fields(task, text_field, text_pair_field, label_field, source_field, target_field)
    records = _read_data(data, fields, "data")
    held_out = None if validation_data is None else _read_data(validation_data, fields, "validation_data")
    encode = _ENCODERS[task]
    options = dict(text_field=text_field, text_pair_field=text_pair_field, label_field=label_field,
                   source_field=source_field, target_field=target_field, num_labels=num_labels,
                   decoder_start_token_id=decoder_start_token_id)
    if task == "classification":
        options["label2id"] = _label2id(records, label_field, label2id)
    train = encode(tokenizer, records, sequence_length, options)
    if held_out is not None:
        validation = encode(tokenizer, held_out, sequence_length, options)
        _check_count(validation, 1, held_out, "validation_data", "one")
    else:
        train, validation = _split(train, validation_split, seed)
    _check_count(train, batch_size, records, "data", f"one batch of batch_size={batch_size}",
                 f" ({_count(validation)} held out for validation)" if held_out is None and validation else "")
    train_dataset = _pipeline(train, batch_size, training=True, shuffle=shuffle, seed=seed, spec=spec)

    def make_epoch(epoch, skip):
        return _pipeline(train, batch_size, training=True, shuffle=shuffle, seed=seed, spec=spec, epoch=epoch,
                         skip=skip)

    validation_dataset = None
    if validation is not None:
        validation_dataset = _pipeline(validation, batch_size, training=False, shuffle=False, seed=seed, spec=spec)
    return TrainingData(
        train=train_dataset, validation=validation_dataset, train_examples=_count(train),
        validation_examples=_count(validation), steps_per_epoch=_count(train) // batch_size,
        tokens_per_example=sequence_length * (2 if task == "seq2seq" else 1),
        label2id=options.get("label2id"), make_epoch=make_epoch,
    )


def _as_data_error(check, *args, **kwargs):
    try:
        return check(*args, **kwargs)
    except DataError:
        raise
    except ValueError as e:
        raise DataError(str(e)) from e


def _check_arguments(task, tokenizer, sequence_length, batch_size, num_replicas, max_positions,
                     validation_split, mlm_probability, seed, num_labels):
    """Checks the arguments; returns the masking spec (masked LM) or `None`."""
    if task not in TASKS:
        raise invalid_argument("task", "one of " + ", ".join(map(repr, TASKS)), task, error=DataError)
    sequence_length = _as_data_error(check_int, "sequence_length", sequence_length, minimum=1)
    batch_size = _as_data_error(check_int, "batch_size", batch_size, minimum=1)
    num_replicas = _as_data_error(check_int, "num_replicas", num_replicas, minimum=1)
    _as_data_error(check_int, "seed", seed)
    _as_data_error(check_float, "validation_split", validation_split, 0.0, 1.0, high_inclusive=False)
    if num_labels is not None:
        _as_data_error(check_int, "num_labels", num_labels, minimum=1)
    if max_positions is not None and sequence_length > _as_data_error(check_int, "max_positions", max_positions, 1):
        raise invalid_argument("sequence_length", f"an integer <= {max_positions}, the model's maximum "
                               f"number of positions (max_positions)", sequence_length, error=DataError)
    if batch_size % num_replicas:
        raise invalid_argument("batch_size", f"a multiple of the number of replicas ({num_replicas})",
                               batch_size, error=DataError)
    if task == "causal_lm" and tokenizer.eos_token_id is None:
        raise invalid_argument("tokenizer", "a tokenizer with an eos_token (it joins documents) for "
                               "task='causal_lm'", tokenizer, error=DataError)
    if task != "masked_lm":
        return None
    _as_data_error(check_float, "mlm_probability", mlm_probability, 0.0, 1.0, low_inclusive=False)
    if tokenizer.mask_token_id is None:
        raise invalid_argument("tokenizer", "a tokenizer with a mask_token for task='masked_lm'", tokenizer,
                               error=DataError)
    return {"probability": mlm_probability, "mask_id": tokenizer.mask_token_id, "vocab_size": tokenizer.vocab_size}


def _task_fields(task, text_field, text_pair_field, label_field, source_field, target_field):
    """`{field: argument}` the task reads from each record."""
    if task == "seq2seq":
        return {source_field: "source_field", target_field: "target_field"}
    fields = {text_field: "text_field"}
    if task == "classification":
        if text_pair_field is not None:
            fields[text_pair_field] = "text_pair_field"
        fields[label_field] = "label_field"
    return fields


def _texts(records, field):
    texts = []
    for record in records:
        value = record.values[field]
        if not isinstance(value, str):
            raise DataError(f"{record.source}: field {field!r} must be a string, got {type(value).__name__} "
                            f"{value!r}")
        texts.append(value)
    return texts


def _pad_id(tokenizer):
    for token_id in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if token_id is not None:
            return token_id
    return 0


# === Task encoders: records -> (inputs, labels, weights) numpy arrays, one row per example ===


def _encode_causal_lm(tokenizer, records, sequence_length, options):
    eos = np.asarray([tokenizer.eos_token_id], np.int32)
    parts, pending = [], []
    for ids in token_arrays(tokenizer, _texts(records, options["text_field"]), True):
        # A tokenizer whose template already ends a text with eos (T5) gets no second one.
        pending += [ids] if ids[-1:].tolist() == eos.tolist() else [ids, eos]
        if len(pending) >= _JOIN_EVERY:
            parts.append(np.concatenate(pending))
            pending = []
    stream = np.concatenate(parts + pending) if parts or pending else eos[:0]
    block = sequence_length + 1
    count = len(stream) // block
    blocks = stream[: count * block].reshape(count, block)
    ones = np.ones((1, sequence_length), np.int32)
    inputs = {"input_ids": blocks[:, :-1], "attention_mask": np.broadcast_to(ones, (count, sequence_length))}
    return inputs, blocks[:, 1:], np.broadcast_to(ones.astype(np.float32), (count, sequence_length))


def _encode_masked_lm(tokenizer, records, sequence_length, options):
    """Chunks each document into `[CLS] piece [SEP]` rows; the third array marks maskable positions."""
    cls = tokenizer.cls_token_id if tokenizer.cls_token_id is not None else tokenizer.bos_token_id
    sep = tokenizer.sep_token_id if tokenizer.sep_token_id is not None else tokenizer.eos_token_id
    prefix, suffix = [i for i in [cls] if i is not None], [i for i in [sep] if i is not None]
    room = sequence_length - len(prefix) - len(suffix)
    if room < 1:
        raise invalid_argument("sequence_length", f"an integer >= {len(prefix) + len(suffix) + 1} for "
                               "task='masked_lm' (special tokens + 1)", sequence_length, error=DataError)
    documents = list(token_arrays(tokenizer, _texts(records, options["text_field"]), False))
    input_ids = np.full((sum(-(-len(ids) // room) for ids in documents), sequence_length), _pad_id(tokenizer),
                        np.int32)
    attention_mask = np.zeros_like(input_ids)
    row = 0
    for ids in documents:
        for start in range(0, len(ids), room):
            piece = np.concatenate([prefix, ids[start:start + room], suffix])
            input_ids[row, : len(piece)] = piece
            attention_mask[row, : len(piece)] = 1
            row += 1
    maskable = (attention_mask == 1) & ~np.isin(input_ids, sorted(_special_ids(tokenizer)))
    inputs = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": np.zeros_like(input_ids)}
    return inputs, input_ids, maskable


def _special_ids(tokenizer):
    names = ("bos", "eos", "unk", "pad", "sep", "cls", "mask")
    ids = {getattr(tokenizer, f"{name}_token_id") for name in names}
    ids |= {i for i, token in tokenizer.backend_tokenizer.get_added_tokens_decoder().items() if token.special}
    return ids - {None}


def _encode_classification(tokenizer, records, sequence_length, options):
    texts = shorten(tokenizer, _texts(records, options["text_field"]), sequence_length)
    pairs = None
    if options["text_pair_field"]:
        pairs = shorten(tokenizer, _texts(records, options["text_pair_field"]), sequence_length)
    labels = _label_ids(records, options["label_field"], options["num_labels"], options["label2id"])
    _warn_truncated(tokenizer, records, texts, pairs, sequence_length)
    batch = tokenizer(texts, pairs, padding="max_length", truncation=True, max_length=sequence_length,
                      return_tensors="np", return_token_type_ids=True)
    inputs = {name: batch[name] for name in ("input_ids", "attention_mask", "token_type_ids")}
    return inputs, labels, np.ones(len(labels), np.float32)


def _encode_seq2seq(tokenizer, records, sequence_length, options):
    start = options["decoder_start_token_id"]
    if start is None:
        start = tokenizer.pad_token_id
    if start is None:
        raise invalid_argument("decoder_start_token_id", "an integer token id (the tokenizer has no pad_token "
                               "to default to)", start, error=DataError)
    sources = shorten(tokenizer, _texts(records, options["source_field"]), sequence_length)
    targets = shorten(tokenizer, _texts(records, options["target_field"]), sequence_length)
    encoded = []
    for texts in (sources, targets):
        _warn_truncated(tokenizer, records, texts, None, sequence_length)
        encoded.append(tokenizer(texts, padding="max_length", truncation=True, max_length=sequence_length,
                                 return_tensors="np"))
    source, target = encoded
    labels, target_mask = target["input_ids"], target["attention_mask"]
    first = np.ones((len(labels), 1), np.int32)
    inputs = {
        "input_ids": source["input_ids"],
        "attention_mask": source["attention_mask"],
        "decoder_input_ids": np.concatenate([first * start, labels[:, :-1]], axis=1).astype(np.int32),
        "decoder_attention_mask": np.concatenate([first, target_mask[:, :-1]], axis=1).astype(np.int32),
    }
    return inputs, labels, target_mask.astype(np.float32)


def _warn_truncated(tokenizer, records, texts, pairs, sequence_length):
    lengths = [len(ids) for ids in tokenizer(texts, pairs)["input_ids"]] if texts else []
    cut = [record.source for record, length in zip(records, lengths) if length > sequence_length]
    if cut:
        logger.warning("%d of %d examples are longer than sequence_length=%d and are truncated (first: %s)",
                       len(cut), len(records), sequence_length, cut[0])


_JOIN_EVERY = 4096  # causal LM: documents' arrays joined in runs, not kept one array each

_ENCODERS = {"causal_lm": _encode_causal_lm, "masked_lm": _encode_masked_lm,
             "classification": _encode_classification, "seq2seq": _encode_seq2seq}


# === Labels ===


def _label2id(records, label_field, label2id):
    """The given `label2id` (checked), or one built sorted from string labels; `None` for integer labels."""
    if label2id is not None:
        return _checked_label2id(label2id)
    kinds = {}
    for record in records:
        kinds.setdefault(isinstance(record.values[label_field], str), record)
    if len(kinds) > 1:
        raise DataError(f"{kinds[True].source}: label {kinds[True].values[label_field]!r} is a string, but "
                        f"{kinds[False].source} has an integer label; use one kind (argument `label_field`)")
    if True not in kinds:
        return None
    return {label: i for i, label in enumerate(sorted({r.values[label_field] for r in records}))}


def _checked_label2id(label2id):
    ids = list(label2id.values()) if isinstance(label2id, dict) else []
    valid = (isinstance(label2id, dict) and all(isinstance(label, str) for label in label2id)
             and all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in ids)
             and len(set(ids)) == len(ids))
    if not valid:
        raise invalid_argument("label2id", "a dict of string labels to distinct integer ids >= 0", label2id,
                               error=DataError)
    return dict(label2id)


def _label_ids(records, label_field, num_labels, label2id):
    ids = []
    for record in records:
        label = record.values[label_field]
        if isinstance(label, str) and label2id is not None:
            if label not in label2id:
                raise DataError(f"{record.source}: unknown label {label!r}; the labels known (argument "
                                f"`label2id`, else the training data's) are {sorted(label2id)}")
            label_id = label2id[label]
        elif isinstance(label, int) and not isinstance(label, bool):
            label_id = label
        else:
            raise DataError(f"{record.source}: label {label!r} must be an integer id"
                            f"{' or a string label' if label2id is not None else ''} (field {label_field!r})")
        if label_id < 0 or (num_labels is not None and label_id >= num_labels):
            raise DataError(f"{record.source}: label {label!r} (id {label_id}) is outside [0, num_labels="
                            f"{num_labels}) (argument `num_labels`)" if num_labels is not None else
                            f"{record.source}: label {label!r} is negative; label ids start at 0")
        ids.append(label_id)
    return np.asarray(ids, np.int32)


# === Splitting and pipelines ===


def _count(examples):
    return 0 if examples is None else len(examples[1])


def _is_broadcast(array):
    """An array of one row repeated (zero stride): a constant the pipeline keeps once, not per example."""
    return array.ndim > 0 and array.shape[0] > 1 and array.strides[0] == 0


def _take(examples, index):
    def rows(array):
        return np.broadcast_to(array[:1], (len(index), *array.shape[1:])) if _is_broadcast(array) else array[index]

    return tf.nest.map_structure(rows, examples)


def _batch_gatherer(examples):
    """A function of a batch of example indices to the batch; each array is one tensor, held once."""
    flat = tf.nest.flatten(examples)
    broadcast = [_is_broadcast(array) for array in flat]
    tensors = [tf.constant(array[:1] if one_row else array) for array, one_row in zip(flat, broadcast)]

    def gather(index):
        rows = [tf.gather(t, tf.zeros_like(index) if one_row else index) for t, one_row in zip(tensors, broadcast)]
        return tf.nest.pack_sequence_as(examples, rows)

    return gather


def _split(examples, validation_split, seed):
    """A seeded, held-out `validation_split` of the examples (at least one when positive)."""
    count = _count(examples)
    held = 0 if validation_split == 0 else max(1, int(round(count * validation_split)))
    if held == 0 or count < 2:
        return examples, None
    order = np.random.default_rng(seed).permutation(count)
    return _take(examples, np.sort(order[held:])), _take(examples, np.sort(order[:held]))


def _check_count(examples, needed, records, argument, what, note=""):
    count = _count(examples)
    if count < needed:
        raise DataError(f"{records[-1].source}: the data ends here with {count} examples{note} from "
                        f"{len(records)} records, fewer than {what} (argument `{argument}`)")


def _pipeline(examples, batch_size, *, training, shuffle, seed, spec, epoch=None, skip=0):
    """Batches of `examples`; with `epoch`, shuffled and masked with a seed made of `(seed, epoch)` only."""
    fixed = epoch is not None
    if fixed:
        seed = seed * 1_000_003 + epoch
    # Indices are shuffled and batched, then rows gathered: a shuffle buffer of examples would copy them all.
    dataset = tf.data.Dataset.range(_count(examples))
    if training and shuffle:
        dataset = dataset.shuffle(_count(examples), seed=seed, reshuffle_each_iteration=not fixed)
    dataset = dataset.batch(batch_size, drop_remainder=training).map(_batch_gatherer(examples))
    if spec is not None:
        # One random seed per batch: new masks each training epoch, the same ones each validation pass.
        seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=training and not fixed)
        dataset = tf.data.Dataset.zip(dataset, seeds).map(
            lambda example, batch_seed: _mask(example, batch_seed, **spec), num_parallel_calls=tf.data.AUTOTUNE
        )
    options = tf.data.Options()
    options.deterministic = True
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.skip(skip).with_options(options).prefetch(tf.data.AUTOTUNE)


def _mask(example, batch_seed, probability, mask_id, vocab_size):
    """BERT's masking of a batch: chosen positions -> 80% mask token, 10% random token, 10% unchanged."""
    inputs, labels, maskable = example
    shape = tf.shape(labels)
    seeds = tf.random.experimental.stateless_split(tf.stack([batch_seed, tf.constant(0, tf.int64)]), 3)
    chosen = (tf.random.stateless_uniform(shape, seeds[0]) < probability) & maskable
    kind = tf.random.stateless_uniform(shape, seeds[1])
    random_ids = tf.random.stateless_uniform(shape, seeds[2], minval=0, maxval=vocab_size, dtype=tf.int32)
    ids = tf.where(chosen & (kind < 0.8), mask_id, labels)
    ids = tf.where(chosen & (kind >= 0.8) & (kind < 0.9), random_ids, ids)
    return {**inputs, "input_ids": ids}, labels, tf.cast(chosen, tf.float32)


# === A token stream packed for causal LM (the quickstart's pipeline) ===


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
