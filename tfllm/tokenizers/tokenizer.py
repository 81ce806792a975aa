"""`Tokenizer`: a Hugging Face style front end over a `tokenizers.Tokenizer`."""

import copy
import json
import logging
import os

import numpy as np
from tokenizers import AddedToken
from tokenizers import processors

from tfllm.tokenizers import _utils

logger = logging.getLogger(__name__)

_SPECIAL_TOKEN_NAMES = ("bos_token", "eos_token", "unk_token", "pad_token")


class Tokenizer:
    """Turns text into model inputs (`input_ids`, `attention_mask`) and ids back into text.

    It wraps a fast `tokenizers.Tokenizer` (the backend; a private copy is
    kept) and behaves like a `transformers` fast tokenizer: same ids, same
    padding and truncation rules, same decoding.

    One deliberate difference: when the tokenizer has no pad token (GPT-2
    has none) and padding is asked for, the eos token id is used as the pad
    id and a warning is logged once, where `transformers` would raise. The
    padded positions are masked out by `attention_mask`, so the choice of id
    does not change a model's output. `pad_token_id` stays `None`.

    Args:
        tokenizer: The `tokenizers.Tokenizer` to wrap.
        bos_token: Beginning-of-sequence token, or `None`.
        eos_token: End-of-sequence token, or `None`.
        unk_token: Unknown token, or `None`.
        pad_token: Padding token, or `None` (see above).
        padding_side: `"right"` or `"left"`; where padding goes by default.
            Use `"left"` for batched generation with decoder-only models.
        model_max_length: The longest sequence the model accepts, or `None`.
            Used by `truncation=True` and `padding="max_length"` when
            `max_length` is not given.
        add_bos_token: Whether encoding with special tokens prepends
            `bos_token`. When `True` the backend's post-processor is replaced
            by one that does so (as `transformers` does for GPT-2); when
            `False` the backend's own post-processor is kept.
        clean_up_tokenization_spaces: Whether `decode` removes spaces before
            punctuation, as `transformers` does when this is set.

    Special tokens named here that the backend does not yet know as added
    tokens are added as special tokens, as `transformers` does.

    Example:

    >>> from tfllm.tokenizers import train_byte_level_bpe
    >>> tokenizer = train_byte_level_bpe(["hello world"] * 10, vocab_size=270)
    >>> batch = tokenizer(["hello", "hello world"], padding=True, return_tensors="np")
    >>> batch["input_ids"].shape
    (2, 2)
    >>> tokenizer.decode(tokenizer.encode("hello world"))
    'hello world'
    """

    def __init__(
        self,
        tokenizer,
        *,
        bos_token=None,
        eos_token=None,
        unk_token=None,
        pad_token=None,
        padding_side="right",
        model_max_length=None,
        add_bos_token=False,
        clean_up_tokenization_spaces=False,
    ):
        self._tokenizer = copy.deepcopy(tokenizer)
        # Per-call padding/truncation are done here, never by backend state.
        self._tokenizer.no_padding()
        self._tokenizer.no_truncation()
        self.bos_token = bos_token
        self.eos_token = eos_token
        self.unk_token = unk_token
        self.pad_token = pad_token
        self.padding_side = padding_side
        self.model_max_length = _utils.check_max_length(model_max_length, "model_max_length")
        self.add_bos_token = bool(add_bos_token)
        self.clean_up_tokenization_spaces = bool(clean_up_tokenization_spaces)
        self._warned_pad_fallback = False
        self._add_missing_special_tokens()
        if self.add_bos_token:
            self._install_bos_template()

    # === Special tokens ===

    def _add_missing_special_tokens(self):
        added = {t.content for t in self._tokenizer.get_added_tokens_decoder().values()}
        for name in _SPECIAL_TOKEN_NAMES:
            token = getattr(self, name)
            if token is None:
                continue
            if not isinstance(token, str) or not token:
                raise _utils.invalid(name, "a non-empty string or None", token)
            if token not in added:
                self._tokenizer.add_special_tokens([AddedToken(token, special=True)])
                added.add(token)

    def _install_bos_template(self):
        if self.bos_token is None:
            raise _utils.invalid(
                "add_bos_token", "False when the tokenizer has no bos_token", True
            )
        bos, bos_id = self.bos_token, self.bos_token_id
        if self._tokenizer.encode("").ids[:1] == [bos_id]:
            return  # The backend already prepends it.
        self._tokenizer.post_processor = processors.TemplateProcessing(
            single=f"{bos}:0 $A:0",
            pair=f"{bos}:0 $A:0 $B:1",
            special_tokens=[(bos, bos_id)],
        )

    @property
    def bos_token_id(self):
        """Id of `bos_token`, or `None`."""
        return self._token_id(self.bos_token)

    @property
    def eos_token_id(self):
        """Id of `eos_token`, or `None`."""
        return self._token_id(self.eos_token)

    @property
    def unk_token_id(self):
        """Id of `unk_token`, or `None`."""
        return self._token_id(self.unk_token)

    @property
    def pad_token_id(self):
        """Id of `pad_token`, or `None` (padding then uses `eos_token_id`)."""
        return self._token_id(self.pad_token)

    def _token_id(self, token):
        return None if token is None else self._tokenizer.token_to_id(token)

    @property
    def padding_side(self):
        """Where padding goes by default: `"left"` or `"right"`."""
        return self._padding_side

    @padding_side.setter
    def padding_side(self, value):
        self._padding_side = _utils.check_one_of("padding_side", value, _utils.PADDING_SIDES)

    # === Vocabulary ===

    @property
    def backend_tokenizer(self):
        """The wrapped `tokenizers.Tokenizer` (the same name as in `transformers`)."""
        return self._tokenizer

    @property
    def vocab_size(self):
        """Number of tokens, added tokens included (`len(hf_tokenizer)` in `transformers`)."""
        return self._tokenizer.get_vocab_size(with_added_tokens=True)

    def __len__(self):
        return self.vocab_size

    def get_vocab(self):
        """Returns the `{token: id}` mapping, added tokens included."""
        return self._tokenizer.get_vocab(with_added_tokens=True)

    def convert_tokens_to_ids(self, tokens):
        """Maps a token (or a list of tokens) to ids; unknown tokens map to `unk_token_id`."""
        if isinstance(tokens, str):
            token_id = self._tokenizer.token_to_id(tokens)
            return self.unk_token_id if token_id is None else token_id
        return [self.convert_tokens_to_ids(token) for token in tokens]

    def convert_ids_to_tokens(self, ids, skip_special_tokens=False):
        """Maps an id (or a sequence of ids) to tokens, e.g. `"Ġworld"` for byte-level BPE."""
        if isinstance(ids, (int, np.integer)):
            return self._tokenizer.id_to_token(int(ids))
        special = self._special_ids() if skip_special_tokens else set()
        return [
            self._tokenizer.id_to_token(i) for i in _utils.as_id_list(ids) if i not in special
        ]

    def _special_ids(self):
        return {i for i, t in self._tokenizer.get_added_tokens_decoder().items() if t.special}

    # === Encoding ===

    def encode(self, text, add_special_tokens=True):
        """Returns the token ids of one string as a list of ints."""
        if not isinstance(text, str):
            raise _utils.invalid("text", "a string", text)
        return self._tokenizer.encode(text, add_special_tokens=add_special_tokens).ids

    def __call__(
        self,
        text,
        *,
        return_tensors=None,
        padding=False,
        truncation=False,
        max_length=None,
        add_special_tokens=True,
        padding_side=None,
    ):
        """Tokenizes a string or a batch of strings.

        Args:
            text: A string or a list of strings.
            return_tensors: `None` for Python lists, `"np"` for int32 numpy
                arrays, `"tf"` for int32 `tf.Tensor`s. With tensors a single
                string gives a batch of one; with `None` it gives flat lists.
            padding: `False`; `True` or `"longest"` (pad to the longest in the
                batch); `"max_length"` (pad to `max_length`, or to
                `model_max_length` when `max_length` is `None`).
            truncation: `True` cuts sequences (special tokens included) to
                `max_length`, or to `model_max_length` when it is `None`.
            max_length: Length used by truncation and `padding="max_length"`.
            add_special_tokens: Whether to add the post-processor's special
                tokens (e.g. bos when `add_bos_token`).
            padding_side: `"left"` or `"right"`; defaults to `self.padding_side`.

        Returns:
            A dict with `"input_ids"` and `"attention_mask"`, each of shape
            `(batch_size, sequence_length)` when tensors are returned.

        Raises:
            ValueError: For an invalid argument, or when a batch of unequal
                lengths is to be returned as tensors without padding.
        """
        texts, is_single = _utils.as_text_batch(text)
        padding = _utils.check_padding(padding)
        truncation = _utils.check_truncation(truncation)
        max_length = _utils.check_max_length(max_length)
        _utils.check_one_of("return_tensors", return_tensors, _utils.RETURN_TENSORS)
        side = self.padding_side
        if padding_side is not None:
            side = _utils.check_one_of("padding_side", padding_side, _utils.PADDING_SIDES)

        limit = self._length_limit(max_length, truncation, padding)
        rows = self._encode_rows(texts, add_special_tokens, limit if truncation else None)
        lengths = [len(row) for row in rows]
        if padding is None:
            batch = {"input_ids": rows, "attention_mask": [[1] * n for n in lengths]}
        else:
            target = limit if padding == "max_length" else max(lengths, default=0)
            ids, mask = _utils.pad_batch(rows, target, self._padding_id(), side)
            batch = {"input_ids": ids, "attention_mask": mask}

        if return_tensors is None:
            return {k: v[0] for k, v in batch.items()} if is_single else batch
        _utils.check_rectangular(batch["input_ids"], padding)
        return _utils.to_tensors(batch, return_tensors)

    def _length_limit(self, max_length, truncation, padding):
        """`max_length`, else `model_max_length`; an error if truncation or padding needs one."""
        limit = max_length if max_length is not None else self.model_max_length
        for needed, setting in ((truncation, "truncation=True"),
                                (padding == "max_length", "padding='max_length'")):
            if needed and limit is None:
                raise _utils.invalid(
                    "max_length",
                    f"a positive integer when {setting} and the tokenizer has no model_max_length",
                    max_length,
                )
        return limit

    def _encode_rows(self, texts, add_special_tokens, truncate_to):
        backend = self._tokenizer
        if truncate_to is None:
            encodings = backend.encode_batch(texts, add_special_tokens=add_special_tokens)
            return [e.ids for e in encodings]
        # Truncate the text's tokens first, then add special tokens, so the
        # total is `truncate_to` and trailing special tokens survive (as in HF).
        num_special = backend.num_special_tokens_to_add(False) if add_special_tokens else 0
        if truncate_to < num_special:
            raise _utils.invalid(
                "max_length",
                f"at least {num_special} (the special tokens added to every sequence)",
                truncate_to,
            )
        rows = []
        for encoding in backend.encode_batch(texts, add_special_tokens=False):
            encoding.truncate(truncate_to - num_special)
            if add_special_tokens:
                encoding = backend.post_process(encoding, add_special_tokens=True)
            rows.append(encoding.ids)
        return rows

    def _padding_id(self):
        if self.pad_token_id is not None:
            return self.pad_token_id
        if self.eos_token_id is None:
            raise _utils.invalid(
                "padding", "False for a tokenizer with neither a pad_token nor an eos_token", True
            )
        if not self._warned_pad_fallback:
            self._warned_pad_fallback = True
            logger.warning(
                "The tokenizer has no pad_token; padding with the eos_token %r (id %d). "
                "Padded positions are masked out by attention_mask.",
                self.eos_token,
                self.eos_token_id,
            )
        return self.eos_token_id

    # === Decoding ===

    def decode(self, ids, skip_special_tokens=False):
        """Turns a 1-D sequence of ids (list, numpy array or `tf.Tensor`) back into text."""
        text = self._tokenizer.decode(
            _utils.as_id_list(ids), skip_special_tokens=skip_special_tokens
        )
        return _utils.clean_up(text) if self.clean_up_tokenization_spaces else text

    def batch_decode(self, ids, skip_special_tokens=False):
        """Decodes a 2-D batch of ids (list of lists, numpy array or `tf.Tensor`)."""
        texts = self._tokenizer.decode_batch(
            _utils.as_id_rows(ids), skip_special_tokens=skip_special_tokens
        )
        return [_utils.clean_up(t) for t in texts] if self.clean_up_tokenization_spaces else texts

    # === Saving ===

    def get_config(self):
        """Returns the `tokenizer_config.json` content this tokenizer saves."""
        config = {
            "tokenizer_class": "PreTrainedTokenizerFast",
            # Without this, PreTrainedTokenizerFast also returns token_type_ids.
            "model_input_names": ["input_ids", "attention_mask"],
            "padding_side": self.padding_side,
            "add_bos_token": self.add_bos_token,
            "clean_up_tokenization_spaces": self.clean_up_tokenization_spaces,
        }
        add_prefix_space = self._add_prefix_space()
        if add_prefix_space is not None:
            # HF resets a ByteLevel pre-tokenizer's add_prefix_space to this key (default False).
            config["add_prefix_space"] = add_prefix_space
        if self.model_max_length is not None:
            config["model_max_length"] = self.model_max_length
        config.update(self._special_tokens_map())
        return config

    def _special_tokens_map(self):
        return {n: getattr(self, n) for n in _SPECIAL_TOKEN_NAMES if getattr(self, n) is not None}

    def _add_prefix_space(self):
        state = json.loads(self._tokenizer.to_str()).get("pre_tokenizer") or {}
        return state.get("add_prefix_space") if state.get("type") == "ByteLevel" else None

    def save_pretrained(self, folder):
        """Writes `tokenizer.json`, `tokenizer_config.json` and `special_tokens_map.json`.

        `transformers.AutoTokenizer.from_pretrained(folder)` and
        `tfllm.tokenizers.AutoTokenizer.from_pretrained(folder)` both load the
        result into an equivalent tokenizer. Each file is written atomically.

        Args:
            folder: The folder to write into; created if missing.
        """
        folder = os.fspath(folder)
        os.makedirs(folder, exist_ok=True)
        files = {
            "tokenizer.json": self._tokenizer.to_str(pretty=True),
            "tokenizer_config.json": json.dumps(self.get_config(), indent=2),
            "special_tokens_map.json": json.dumps(self._special_tokens_map(), indent=2),
        }
        for name, content in files.items():
            _utils.write_atomic(os.path.join(folder, name), content)
        logger.info("Saved tokenizer to %s", folder)

    def __repr__(self):
        return (
            f"Tokenizer(vocab_size={self.vocab_size}, bos_token={self.bos_token!r}, "
            f"eos_token={self.eos_token!r}, pad_token={self.pad_token!r}, "
            f"padding_side={self.padding_side!r})"
        )

