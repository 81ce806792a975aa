"""`AutoTokenizer`: loads a tokenizer from a local Hugging Face folder."""

import json
import logging
import os
import re

from tokenizers import AddedToken
from tokenizers import Tokenizer as BackendTokenizer
from tokenizers import models

from tfllm.model_files import CheckpointError, folder_file, read_json
from tfllm.tokenizers import _utils, bpe, sentencepiece, wordpiece
from tfllm.tokenizers.tokenizer import Tokenizer

logger = logging.getLogger(__name__)

_SPECIAL_KEYS = ("bos_token", "eos_token", "unk_token", "pad_token")
_BYTE_LEVEL_CLASSES = ("GPT2Tokenizer", "GPT2TokenizerFast")
# transformers writes int(1e30) for "no limit".
_NO_LIMIT = 10**18
_NOT_YET = {
    "tokenizer.model": "SentencePiece tokenizers",
    "sentencepiece.bpe.model": "SentencePiece tokenizers",
}
_LOOKED_FOR = ("tokenizer.json", "vocab.json + merges.txt", "vocab.txt", "spiece.model", *_NOT_YET)
_INIT_ARGS = (
    *_SPECIAL_KEYS,
    "model_max_length",
    "add_bos_token",
    "clean_up_tokenization_spaces",
)


class AutoTokenizer:
    """Loads the right tokenizer for a local Hugging Face folder.

    Supported: byte-level BPE (GPT-2 style) from `tokenizer.json`, or from
    `vocab.json` + `merges.txt` (built as `transformers.GPT2TokenizerFast`
    builds it); WordPiece (BERT style) from `vocab.txt` (built as
    `transformers.BertTokenizerFast` builds it, reading `do_lower_case`,
    `strip_accents` and `tokenize_chinese_chars`); SentencePiece Unigram (T5)
    from `spiece.model` (built as `transformers.T5TokenizerFast` converts it, see
    `tfllm.tokenizers.sentencepiece`). `tokenizer_config.json` and `special_tokens_map.json` are read
    for special tokens, `model_max_length`, `padding_side`, `add_bos_token`,
    `add_prefix_space` and `added_tokens_decoder`.

    Example:

    >>> import tempfile
    >>> from tfllm.tokenizers import train_byte_level_bpe
    >>> folder = tempfile.mkdtemp()
    >>> train_byte_level_bpe(["hello world"] * 10, vocab_size=270).save_pretrained(folder)
    >>> tokenizer = AutoTokenizer.from_pretrained(folder, padding_side="left")
    >>> tokenizer.decode(tokenizer.encode("hello world"))
    'hello world'
    """

    def __init__(self):
        raise TypeError("Use `AutoTokenizer.from_pretrained(folder)` to create a tokenizer.")

    @classmethod
    def from_pretrained(cls, folder, *, padding_side=None, **kwargs):
        """Loads the tokenizer saved in `folder`.

        Args:
            folder: A local folder in the Hugging Face layout.
            padding_side: `"left"` or `"right"`; overrides the folder's setting.
            **kwargs: Overrides for `Tokenizer` arguments (`bos_token`,
                `eos_token`, `unk_token`, `pad_token`, `model_max_length`,
                `add_bos_token`, `clean_up_tokenization_spaces`).

        Returns:
            A `tfllm.tokenizers.Tokenizer`.

        Raises:
            FileNotFoundError: The folder, or any tokenizer file in it, is missing.
            NotImplementedError: The folder holds a tokenizer kind not supported yet.
            CheckpointError: A tokenizer file is malformed (named in the message), or leads out
                of the folder (see `tfllm.model_files.folder_file`).
        """
        unknown = sorted(set(kwargs) - set(_INIT_ARGS))
        if unknown:
            raise TypeError(
                f"AutoTokenizer.from_pretrained() got unexpected keyword arguments {unknown}. "
                f"Accepted: padding_side, {', '.join(_INIT_ARGS)}."
            )
        folder = os.fspath(folder)
        if not os.path.isdir(folder):
            raise FileNotFoundError(f"Tokenizer folder not found: {folder!r}")
        config = sentencepiece.with_t5_defaults(_read_config(folder), os.listdir(folder))
        backend = _load_backend(folder, config)
        _add_config_tokens(backend, config)
        init = _init_kwargs(config, backend)
        init["sentencepiece_model_proto"] = _sentencepiece_proto(folder, backend)
        init.update(kwargs)
        if padding_side is not None:
            init["padding_side"] = padding_side
        return Tokenizer(backend, **init)


def _read_config(folder):
    """Merges `tokenizer_config.json` and `special_tokens_map.json` (which wins, as in HF)."""
    config = {}
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        if os.path.isfile(os.path.join(folder, name)):
            path = folder_file(folder, name)
            settings = read_json(path)
            if not isinstance(settings, dict):
                raise CheckpointError(f"{path}: expected a JSON object, got a {type(settings).__name__}.")
            config.update(settings)
    return config


def _library_error(paths, error):
    """A CheckpointError naming `paths` for an error of the tokenizers library, with quoted values masked.

    The library raises a bare `Exception`, whose text may quote the file (`unknown variant `...``).
    """
    detail = re.sub(r"`[^`]*`|\"[^\"]*\"|'[^']*'", "...", str(error))[:300]
    return CheckpointError(f"{' + '.join(paths)}: the tokenizers library cannot read it ({detail}).")


def _load_backend(folder, config):
    def has(name):
        return os.path.isfile(os.path.join(folder, name))

    add_prefix_space = bool(config.get("add_prefix_space", False))
    if has("tokenizer.json"):
        path = folder_file(folder, "tokenizer.json")
        try:
            backend = BackendTokenizer.from_file(path)
        except Exception as error:  # noqa: BLE001 - the library raises only bare `Exception`
            raise _library_error([path], error) from error
        _set_add_prefix_space(backend, add_prefix_space)
        return backend
    if has("vocab.json") and has("merges.txt"):
        paths = [folder_file(folder, "vocab.json"), folder_file(folder, "merges.txt")]
        try:
            return bpe.byte_level_bpe_from_files(*paths, add_prefix_space=add_prefix_space)
        except Exception as error:  # noqa: BLE001 - the library raises only bare `Exception`
            raise _library_error(paths, error) from error
    if has("vocab.txt"):
        return wordpiece.wordpiece_from_vocab(folder_file(folder, "vocab.txt"), config)
    if has("spiece.model"):
        return sentencepiece.t5_backend(folder_file(folder, "spiece.model"), config)
    for name, kind in _NOT_YET.items():
        if has(name):
            raise NotImplementedError(
                f"{kind} ({name} in {folder!r}) are not supported yet. Supported: "
                "tokenizer.json, vocab.json + merges.txt (byte-level BPE), vocab.txt (WordPiece), or "
                "spiece.model (SentencePiece Unigram, T5)."
            )
    raise FileNotFoundError(
        f"No tokenizer files in {folder!r}. Looked for: {', '.join(_LOOKED_FOR)}. "
        f"Found: {sorted(os.listdir(folder))}."
    )


def _sentencepiece_proto(folder, backend):
    """The bytes of the folder's `spiece.model` when the backend is a Unigram model, else None.

    In-graph tokenizers run SentencePiece from these bytes; a folder with both `tokenizer.json` and
    `spiece.model` (as transformers saves T5) keeps them too. An unreadable `spiece.model` next to a
    `tokenizer.json` is left out with a warning, since the backend does not need it.
    """
    if not os.path.isfile(os.path.join(folder, "spiece.model")) or not isinstance(backend.model, models.Unigram):
        return None
    try:
        return sentencepiece.read_model_proto(folder_file(folder, "spiece.model"))
    except ValueError as error:
        logger.warning("Not keeping %s for in-graph tokenization: %s", os.path.join(folder, "spiece.model"), error)
        return None


def _set_add_prefix_space(backend, add_prefix_space):
    """Mirrors transformers: the config's `add_prefix_space` (default False) wins for ByteLevel."""
    state = json.loads(backend.to_str()).get("pre_tokenizer") or {}
    if state.get("type") != "ByteLevel" or state.get("add_prefix_space") == add_prefix_space:
        return
    from tokenizers import pre_tokenizers  # pylint: disable=import-outside-toplevel

    backend.pre_tokenizer = pre_tokenizers.ByteLevel(
        add_prefix_space=add_prefix_space,
        trim_offsets=state.get("trim_offsets", True),
        use_regex=state.get("use_regex", True),
    )


def _added_token(value, special):
    """`value` is a str or a dict such as `{"content": "<s>", "lstrip": false, ...}`."""
    if isinstance(value, str):
        return AddedToken(value, special=special)
    options = {k: value[k] for k in ("single_word", "lstrip", "rstrip", "normalized") if k in value}
    return AddedToken(value["content"], special=value.get("special", special), **options)


def _content(value):
    return value["content"] if isinstance(value, dict) else value


def _add_config_tokens(backend, config):
    """Adds `added_tokens_decoder`, special and additional special tokens, as transformers does."""
    known = {t.content for t in backend.get_added_tokens_decoder().values()}
    pending = [
        _added_token(value, special=False)
        for _, value in sorted(
            config.get("added_tokens_decoder", {}).items(), key=lambda item: int(item[0])
        )
    ]
    pending += [_added_token(config[k], True) for k in _SPECIAL_KEYS if config.get(k)]
    pending += [_added_token(v, True) for v in config.get("additional_special_tokens") or []]
    for token in pending:
        if token.content not in known:
            backend.add_tokens([token])
            known.add(token.content)


def _init_kwargs(config, backend):
    init = {k: _content(config[k]) for k in _SPECIAL_KEYS if k in config}
    end_of_text = config.get("tokenizer_class") in _BYTE_LEVEL_CLASSES or (
        "tokenizer_class" not in config and backend.token_to_id(bpe.ENDOFTEXT) is not None
    )
    if end_of_text:  # GPT2Tokenizer's defaults for the keys the folder does not set.
        for key in ("bos_token", "eos_token", "unk_token"):
            init.setdefault(key, bpe.ENDOFTEXT)
    if config.get("tokenizer_class") in _utils.WORDPIECE_CLASSES or isinstance(backend.model, models.WordPiece):
        for key in ("unk_token", "pad_token"):  # BertTokenizer's defaults
            init.setdefault(key, wordpiece.DEFAULT_SPECIAL_TOKENS[key])
    max_length = config.get("model_max_length")
    if max_length is not None and max_length < _NO_LIMIT:
        init["model_max_length"] = int(max_length)
    for key in ("padding_side", "add_bos_token", "clean_up_tokenization_spaces"):
        if key in config:
            init[key] = config[key]
    init.update(_utils.folder_init_kwargs(config, backend))  # model_input_names, sep/cls/mask tokens
    return init
