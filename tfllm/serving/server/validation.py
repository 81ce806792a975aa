"""Checks every route of `tfllm serve` makes before any work is done: generation parameters, prompt
lengths (refused from their byte count before they are tokenized) and declared tensor sizes."""

import json
import logging
import math
import os

import numpy as np
import tensorflow as tf

from tfllm.export import signatures as sig
from tfllm.serving.server.errors import invalid_argument, invalid_value

logger = logging.getLogger(__name__)

MIN_BYTES_PER_TOKEN = 4  # one UTF-8 character: an unknown character is at least one token
# Normalizers and pre-tokenizers that never drop or merge input, so a token covers at most as many
# input bytes as its own text has (Replace is checked to grow only; Strip removes a bounded amount).
_KEEPING_NORMALIZERS = {"Prepend", "Replace", "NFD", "Lowercase"}
_KEEPING_PRE_TOKENIZERS = {"ByteLevel", "Metaspace", "Split", "Digits", "Punctuation"}


# `/generate` parameters: name -> (numpy dtype, JSON types accepted, what the error message expects)
GENERATE_PARAMETERS = {
    sig.MAX_NEW_TOKENS: (np.int32, (int,), "an int32"), sig.TOP_K: (np.int32, (int,), "an int32"),
    sig.SEED: (np.int32, (int,), "an int32"), sig.TEMPERATURE: (np.float32, (int, float), "a number"),
    sig.TOP_P: (np.float32, (int, float), "a number"), sig.DO_SAMPLE: (np.bool_, (bool,), "true or false"),
}
_GENERATE_KEYS = {sig.TEXT, "model", "version", "label", *GENERATE_PARAMETERS}
GENERATE_KEYS = {sig.TEXT, "model", "version", "label", *GENERATE_PARAMETERS}


# === Generation parameters ===


def check_generation(values):
    """Refuses generation parameters no route may run with (INVALID_ARGUMENT naming the argument).

    Args:
        values: `{name: python scalar}` with any of `max_new_tokens`, `do_sample`, `temperature`,
            `top_k`, `top_p` (absent ones are not checked). As in transformers, `temperature` only
            matters when sampling, so 0 is accepted for greedy decoding; it must be finite always.
    """
    sampling = bool(values.get(sig.DO_SAMPLE, False))
    checks = {
        sig.MAX_NEW_TOKENS: (lambda v: v >= 1, "an integer >= 1"),
        sig.TEMPERATURE: ((lambda v: math.isfinite(v) and v > 0) if sampling else math.isfinite,
                          "a finite number > 0 when sampling" if sampling else "a finite number"),
        sig.TOP_K: (lambda v: v >= 0, "an integer >= 0"),
        sig.TOP_P: (lambda v: 0 < v <= 1, "a number in (0, 1]"),
    }
    for key, (ok, expected) in checks.items():
        if key in values and not ok(values[key]):
            raise invalid_value(key, expected, values[key])


def generation_values(feed):
    """`{name: python scalar}` of the scalar generation inputs of a feed of tensors or arrays."""
    keys = (sig.MAX_NEW_TOKENS, sig.DO_SAMPLE, sig.TEMPERATURE, sig.TOP_K, sig.TOP_P)
    values = {}
    for key in keys:
        if key in feed:
            array = np.asarray(feed[key])
            if array.size == 1:
                values[key] = array.reshape(()).item()
    return values


def check_texts(texts):
    """Refuses an empty prompt (a generation needs at least one token to continue)."""
    for text in texts:
        if len(text) == 0:
            raise invalid_value(sig.TEXT, "a non-empty string", text.decode() if isinstance(text, bytes) else text)


def generate_request(doc, default_model):
    """`(model, version, label, text, params)` of a parsed `/generate` body, types checked.

    Raises:
        ServingError: INVALID_ARGUMENT for an unknown key or a value of the wrong type.
    """
    unknown = sorted(set(doc) - GENERATE_KEYS)
    if unknown:
        raise invalid_argument(
            f"Invalid keys in the request: {', '.join(unknown)}. Expected some of: {', '.join(sorted(GENERATE_KEYS))}"
        )
    model, version, label = doc.get("model") or default_model, doc.get("version"), doc.get("label")
    text = doc.get(sig.TEXT)
    for key, value, ok, expected in (
        ("model", model, isinstance(model, str), "a model name"),
        ("version", version, version is None or (isinstance(version, (int, str)) and not isinstance(version, bool)
                                                 and str(version).isdigit()), "a version number"),
        ("label", label, label is None or isinstance(label, str), "a version label"),
        (sig.TEXT, text, isinstance(text, str), "a string"),
    ):
        if not ok:
            raise invalid_value(key, expected, value)
    params = {}
    for key, (_, kinds, expected) in GENERATE_PARAMETERS.items():
        value = doc.get(key)
        if value is None:
            continue
        if (not isinstance(value, kinds) or (bool not in kinds and isinstance(value, bool))
                or (kinds == (int,) and not -2**31 <= value < 2**31)):
            raise invalid_value(key, expected, value)
        params[key] = value
    return model, None if version is None else int(version), label, text, params


# === Prompt length ===


def max_bytes_per_token(backend):
    """The most input bytes one token of a `tokenizers.Tokenizer` can stand for, or None when no
    bound holds (a normalizer or pre-tokenizer that drops input, a model that fuses unknowns, or one
    other than BPE).

    With the bound `L`, a prompt of `n` bytes has at least `ceil(n / L)` tokens, so a prompt of more
    than `positions * L` bytes is too long whatever its text: refused without tokenizing it.
    """
    spec = json.loads(backend.to_str())
    model = spec.get("model") or {}
    fuses_unknowns = model.get("fuse_unk") and model.get("unk_token") and not model.get("byte_fallback")
    if model.get("type") != "BPE" or fuses_unknowns:
        return None
    if not _keeps_input(spec.get("normalizer"), _KEEPING_NORMALIZERS, "normalizers"):
        return None
    if not _keeps_input(spec.get("pre_tokenizer"), _KEEPING_PRE_TOKENIZERS, "pretokenizers"):
        return None
    texts = list(model.get("vocab") or {}) + [token.get("content", "") for token in spec.get("added_tokens") or []]
    # A token's text is at least as long in UTF-8 as the input it covers (a byte-level character
    # stands for one byte, "▁" for a space, "<0x41>" for one byte).
    return max([MIN_BYTES_PER_TOKEN] + [len(text.encode("utf-8")) for text in texts])


def _keeps_input(component, allowed, nested):
    if component is None:
        return True
    kind = component.get("type")
    if kind == "Sequence":
        return all(_keeps_input(part, allowed, nested) for part in component.get(nested) or [])
    if kind == "Replace":
        pattern = (component.get("pattern") or {}).get("String")
        return pattern is not None and len(component.get("content", "").encode()) >= len(pattern.encode())
    if kind == "Split" and str(component.get("behavior", "")).lower() == "removed":
        return False
    return kind in allowed


class PromptLimit:
    """Refuses prompts that cannot fit the model's positions with `max_new_tokens` more.

    First by bytes (no tokenizing, so a 10 MB prompt costs nothing), then by the exact token count.

    Args:
        max_positions: the model's positions (None: no check).
        tokenizer: the version's Python `Tokenizer` (None: no check).
    """

    def __init__(self, max_positions, tokenizer):
        self.max_positions = max_positions if tokenizer is not None else None
        self.tokenizer = tokenizer
        self.bytes_per_token = max_bytes_per_token(tokenizer.backend_tokenizer) if tokenizer is not None else None

    @classmethod
    def of_version(cls, folder, tokenizer):
        """The limit of an exported version (its `assets.extra/tfllm_limits.json`)."""
        path = os.path.join(folder, sig.LIMITS_FILE)
        if not os.path.isfile(path):
            return cls(None, tokenizer)
        with open(path, encoding="utf-8") as file:
            return cls(int(json.load(file)["max_positions"]), tokenizer)

    def check(self, texts, max_new_tokens):
        """Raises INVALID_ARGUMENT for a prompt whose tokens plus `max_new_tokens` exceed the positions."""
        if self.max_positions is None:
            return
        room = self.max_positions - max_new_tokens
        for text in texts:
            data = text if isinstance(text, bytes) else text.encode("utf-8")
            if self.bytes_per_token is not None and len(data) > room * self.bytes_per_token:
                raise self._too_long(f"{len(data)} bytes (at least {-(-len(data) // self.bytes_per_token)} tokens)",
                                     max_new_tokens)
            count = len(self.tokenizer.encode(data.decode("utf-8", "replace")))
            if count > room:
                raise self._too_long(f"{count} tokens", max_new_tokens)

    def _too_long(self, size, max_new_tokens):
        return invalid_argument(
            f"Invalid value for argument `{sig.TEXT}`. Expected a prompt of at most "
            f"{self.max_positions - max_new_tokens} tokens (the model's {self.max_positions} positions less "
            f"max_new_tokens={max_new_tokens}). Received: a prompt of {size}"
        )


# === Declared tensor sizes (gRPC) ===


def check_tensor_proto(name, proto, max_bytes):
    """Refuses a TensorProto whose declared shape asks for more memory than its values justify.

    TensorFlow fills a tensor sent with fewer values than its shape by repeating the last one, so
    100 bytes can declare gigabytes. A shape must hold exactly the values sent, or, when it is
    filled by repetition, take at most `max_bytes` (the largest request the server accepts).
    """
    dims = [dim.size for dim in proto.tensor_shape.dim]
    if proto.tensor_shape.unknown_rank or any(size < 0 for size in dims):
        raise invalid_argument(f"Input {name} is not a valid TensorProto: shape {dims} is not fully defined")
    declared = math.prod(dims)
    dtype = tf.dtypes.as_dtype(proto.dtype)
    itemsize = max(dtype.size if dtype != tf.string else 0, 8)
    present = _values_present(proto, dtype)
    if present > declared or (present != declared and declared * itemsize > max_bytes):
        raise invalid_argument(
            f"Input {name} is not a valid TensorProto: shape {dims} declares {declared} values "
            f"({declared * itemsize} bytes) but {present} were sent (a shape filled by repeating values may take "
            f"at most {max_bytes} bytes, --max_request_bytes)"
        )


def _values_present(proto, dtype):
    if proto.tensor_content:
        return len(proto.tensor_content) // max(dtype.size, 1)
    fields = [field for field, _ in proto.ListFields() if field.name.endswith("_val")]
    count = max((len(getattr(proto, field.name)) for field in fields), default=0)
    return count // 2 if dtype.is_complex else count
