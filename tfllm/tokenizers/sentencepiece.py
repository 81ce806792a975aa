"""SentencePiece Unigram models (T5's `spiece.model`), built as transformers' `T5TokenizerFast` converts them.

The model file is a protobuf (`sentencepiece_model.proto`); the few fields needed are read from its
wire format here, so neither the `sentencepiece` package nor generated protobuf code is needed, and
nothing from the checkpoint folder is executed. The backend matches `T5Converter`: a Unigram model
over the pieces plus `<extra_id_N>` sentinels, the precompiled normalizer, a `Metaspace`
pre-tokenizer and decoder, and `</s>` appended to every sequence.
"""

import dataclasses
import logging
import struct

from tokenizers import AddedToken, Regex
from tokenizers import Tokenizer as BackendTokenizer
from tokenizers import decoders, models, normalizers, pre_tokenizers, processors

from tfllm.errors import invalid_argument

logger = logging.getLogger(__name__)

REPLACEMENT = "\u2581"  # "▁", SentencePiece's visible space
T5_CLASSES = ("T5Tokenizer", "T5TokenizerFast")
# T5Tokenizer's defaults for the keys a folder does not set.
T5_SPECIAL_TOKENS = {"eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>"}
DEFAULT_EXTRA_IDS = 100
# SentencePiece piece types (ModelProto.SentencePiece.Type) and model types (TrainerSpec.ModelType) used here.
NORMAL, CONTROL, USER_DEFINED = 1, 3, 4
UNIGRAM = 1


@dataclasses.dataclass
class SentencePieceModel:
    """What a tokenizer needs from a SentencePiece `ModelProto`, with the proto's defaults.

    Attributes:
        pieces: `(piece, score, type)` per id.
        model_type: 1 Unigram, 2 BPE, 3 word, 4 char (`TrainerSpec.model_type`).
        unk_id: the unknown piece's id.
        byte_fallback: unknown characters become byte pieces (not supported by T5's conversion).
        precompiled_charsmap: the normalizer's compiled rules (empty when there are none).
        add_dummy_prefix: a space is added before the text (a "▁" on the first word).
        remove_extra_whitespaces: leading, trailing and repeated spaces are dropped.
    """

    pieces: list = dataclasses.field(default_factory=list)
    model_type: int = UNIGRAM
    unk_id: int = 0
    byte_fallback: bool = False
    precompiled_charsmap: bytes = b""
    add_dummy_prefix: bool = True
    remove_extra_whitespaces: bool = True


# === Protobuf wire format ===


def _varint(data, position):
    result = shift = 0
    while True:
        if position >= len(data):
            raise ValueError("truncated varint")
        byte = data[position]
        position += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, position
        shift += 7
        if shift > 63:
            raise ValueError("varint longer than 10 bytes")


def _fields(data):
    """Yields `(field_number, wire_type, value)` of one message; value is an int or bytes."""
    position = 0
    while position < len(data):
        key, position = _varint(data, position)
        number, wire_type = key >> 3, key & 7
        if wire_type == 0:
            value, position = _varint(data, position)
        elif wire_type == 1:
            value, position = data[position:position + 8], position + 8
        elif wire_type == 2:
            size, position = _varint(data, position)
            value, position = data[position:position + size], position + size
        elif wire_type == 5:
            value, position = data[position:position + 4], position + 4
        else:
            raise ValueError(f"unsupported wire type {wire_type} (field {number})")
        if position > len(data):
            raise ValueError(f"field {number} runs past the end of the message")
        yield number, wire_type, value


def _int32(value):
    return value - (1 << 64) if value >= 1 << 63 else value  # negative int32s are 10-byte varints


def _piece(data):
    piece, score, kind = "", 0.0, NORMAL
    for number, wire_type, value in _fields(data):
        if number == 1 and wire_type == 2:
            piece = value.decode("utf-8")
        elif number == 2 and wire_type == 5:
            (score,) = struct.unpack("<f", value)
        elif number == 3 and wire_type == 0:
            kind = value
    return piece, score, kind


def parse_model_proto(data):
    """Reads a serialized SentencePiece `ModelProto` (the bytes of `spiece.model`).

    Returns:
        A `SentencePieceModel`.

    Raises:
        ValueError: the bytes are not a SentencePiece model.
    """
    model = SentencePieceModel()
    for number, wire_type, value in _fields(bytes(data)):
        if number == 1 and wire_type == 2:
            model.pieces.append(_piece(value))
        elif number == 2 and wire_type == 2:  # TrainerSpec
            for field, kind, item in _fields(value):
                if kind != 0:
                    continue
                if field == 3:
                    model.model_type = item
                elif field == 35:
                    model.byte_fallback = bool(item)
                elif field == 40:
                    model.unk_id = _int32(item)
        elif number == 3 and wire_type == 2:  # NormalizerSpec
            for field, kind, item in _fields(value):
                if field == 2 and kind == 2:
                    model.precompiled_charsmap = bytes(item)
                elif field == 3 and kind == 0:
                    model.add_dummy_prefix = bool(item)
                elif field == 4 and kind == 0:
                    model.remove_extra_whitespaces = bool(item)
    if not model.pieces:
        raise ValueError("no pieces: not a SentencePiece model")
    return model


def read_model(path):
    """Parses the SentencePiece model file at `path`."""
    with open(path, "rb") as f:
        return _parse_file(path, f.read())


def read_model_proto(path):
    """The bytes of the SentencePiece model file at `path`, checked to parse.

    In-graph tokenizers (`tfllm.tokenizers.in_graph.SentencePiece`) embed these bytes in an export.
    """
    with open(path, "rb") as f:
        data = f.read()
    _parse_file(path, data)
    return data


def _parse_file(path, data):
    try:
        return parse_model_proto(data)
    except (ValueError, UnicodeDecodeError) as error:
        raise ValueError(f"{path} is not a valid SentencePiece model: {error}") from error


# === The tokenizers backend ===


def _prepend_scheme(model, config):
    """Where `Metaspace` adds "▁": transformers' `_get_prepend_scheme` for T5 (legacy unless told otherwise)."""
    add_prefix_space = config.get("add_prefix_space")
    if not model.add_dummy_prefix or add_prefix_space is False:
        return "never"
    return "first" if config.get("legacy") is False else "always"


def _extra_ids(config):
    extra_ids = config.get("extra_ids", DEFAULT_EXTRA_IDS)
    if isinstance(extra_ids, bool) or not isinstance(extra_ids, int) or extra_ids < 0:
        raise invalid_argument("extra_ids", "an integer >= 0", extra_ids)
    return extra_ids


def _normalizer(model):
    # As transformers' SpmConverter: strip on the right, and runs of spaces become one "▁".
    steps = [normalizers.Strip(left=False, right=True), normalizers.Replace(Regex(" {2,}"), REPLACEMENT)]
    if model.precompiled_charsmap:
        steps.insert(0, normalizers.Precompiled(model.precompiled_charsmap))
    return normalizers.Sequence(steps)


def t5_backend(path, config=None):
    """Builds the backend `transformers.T5TokenizerFast` converts from a SentencePiece Unigram model.

    Args:
        path: the `spiece.model` file.
        config: the folder's merged `tokenizer_config.json` / `special_tokens_map.json`; read for
            `extra_ids` (default 100), `eos_token` (default "</s>"), `add_prefix_space` and `legacy`.

    Returns:
        A `tokenizers.Tokenizer`: pieces, then `<extra_id_{extra_ids - 1}>` ... `<extra_id_0>`, with
        control pieces and the sentinels added as special tokens and `</s>` appended to every sequence.

    Raises:
        NotImplementedError: the model is not a Unigram model (e.g. Llama's BPE `tokenizer.model`).
    """
    config = config or {}
    model = read_model(path)
    if model.model_type != UNIGRAM:
        raise NotImplementedError(
            f"SentencePiece model_type={model.model_type} in {path} is not implemented by tfllm "
            f"(only Unigram, model_type={UNIGRAM}, as T5 uses)."
        )
    if model.byte_fallback:
        logger.warning("%s uses byte fallback, which T5's conversion (and tfllm) leaves out: unknown "
                       "characters become the unknown token instead of bytes.", path)
    extra_ids = _extra_ids(config)
    vocab = [(piece, score) for piece, score, _ in model.pieces]
    vocab += [(f"<extra_id_{i}>", 0.0) for i in range(extra_ids - 1, -1, -1)]
    backend = BackendTokenizer(models.Unigram(vocab, unk_id=model.unk_id, byte_fallback=False))
    # Control pieces are special; user-defined ones are added tokens that are not.
    backend.add_tokens([AddedToken(piece, normalized=False, special=kind == CONTROL)
                        for piece, _, kind in model.pieces if kind in (CONTROL, USER_DEFINED)])
    backend.add_special_tokens([AddedToken(f"<extra_id_{i}>", normalized=False, special=True)
                                for i in range(extra_ids)])
    backend.normalizer = _normalizer(model)
    scheme = _prepend_scheme(model, config)
    backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement=REPLACEMENT, prepend_scheme=scheme)
    backend.decoder = decoders.Metaspace(replacement=REPLACEMENT, prepend_scheme=scheme)
    eos = _content(config.get("eos_token")) or T5_SPECIAL_TOKENS["eos_token"]
    eos_id = backend.token_to_id(eos)
    if eos_id is None:
        raise ValueError(f"The eos token {eos!r} is not a piece of {path}; T5's template appends it.")
    backend.post_processor = processors.TemplateProcessing(
        single=["$A", eos], pair=["$A", eos, "$B", eos], special_tokens=[(eos, eos_id)]
    )
    return backend


def _content(value):
    return value["content"] if isinstance(value, dict) else value


def with_t5_defaults(config, folder_files):
    """`config` plus T5Tokenizer's default special tokens, for a T5 folder that does not name them.

    Args:
        config: the merged tokenizer config.
        folder_files: names of the files in the folder.

    Returns:
        A new dict; unchanged unless the config names a T5 tokenizer class or the folder's
        tokenizer is `spiece.model` alone.
    """
    is_t5 = config.get("tokenizer_class") in T5_CLASSES or (
        "spiece.model" in folder_files and "tokenizer.json" not in folder_files
    )
    merged = dict(config)
    if is_t5:
        for key, value in T5_SPECIAL_TOKENS.items():
            merged.setdefault(key, value)
    return merged
