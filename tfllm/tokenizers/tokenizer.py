"""`Tokenizer`: a Hugging Face style front end over a `tokenizers.Tokenizer`."""

import copy
import json
import logging
import os

import numpy as np
from tokenizers import AddedToken
from tokenizers import processors

from tfllm.errors import invalid_argument
from tfllm.tokenizers import _utils

logger = logging.getLogger(__name__)

_SPECIAL_TOKEN_NAMES = (
    "bos_token", "eos_token", "unk_token", "pad_token", "sep_token", "cls_token", "mask_token"
)


class Tokenizer:
    """Turns text (and text pairs) into model inputs and ids back into text.

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
        sep_token: Separator token (BERT's `[SEP]`), or `None`.
        cls_token: Classifier token (BERT's `[CLS]`), or `None`.
        mask_token: Mask token (BERT's `[MASK]`, used by the fill-mask pipeline), or `None`.
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
        model_input_names: The inputs the model takes, as `transformers`'
            `model_input_names`; `token_type_ids` is returned by default when
            listed. Default: `("input_ids", "attention_mask")`.
        sentencepiece_model_proto: The bytes of the SentencePiece model
            (`spiece.model`) the backend was built from, or `None`. Kept for
            in-graph tokenizers (`tfllm.tokenizers.in_graph`) and written back
            by `save_pretrained`.

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
    >>> tokenizer("hello", "hello", return_token_type_ids=True)["token_type_ids"]
    [0, 1]
    """

    def __init__(
        self,
        tokenizer,
        *,
        bos_token=None,
        eos_token=None,
        unk_token=None,
        pad_token=None,
        sep_token=None,
        cls_token=None,
        mask_token=None,
        padding_side="right",
        model_max_length=None,
        add_bos_token=False,
        clean_up_tokenization_spaces=False,
        model_input_names=None,
        sentencepiece_model_proto=None,
    ):
        self._tokenizer = copy.deepcopy(tokenizer)
        # Per-call padding/truncation are done here, never by backend state.
        self._tokenizer.no_padding()
        self._tokenizer.no_truncation()
        self.bos_token = bos_token
        self.eos_token = eos_token
        self.unk_token = unk_token
        self.pad_token = pad_token
        self.sep_token = sep_token
        self.cls_token = cls_token
        self.mask_token = mask_token
        self.padding_side = padding_side
        self.model_max_length = _utils.check_max_length(model_max_length, "model_max_length")
        self.add_bos_token = bool(add_bos_token)
        self.clean_up_tokenization_spaces = bool(clean_up_tokenization_spaces)
        self.model_input_names = _utils.check_model_input_names(
            _utils.WITHOUT_TOKEN_TYPES if model_input_names is None else model_input_names
        )
        self.sentencepiece_model_proto = None if sentencepiece_model_proto is None else bytes(sentencepiece_model_proto)
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
                raise invalid_argument(name, "a non-empty string or None", token)
            if token not in added:
                self._tokenizer.add_special_tokens([AddedToken(token, special=True)])
                added.add(token)

    def _install_bos_template(self):
        if self.bos_token is None:
            raise invalid_argument(
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

    @property
    def sep_token_id(self):
        """Id of `sep_token`, or `None`."""
        return self._token_id(self.sep_token)

    @property
    def cls_token_id(self):
        """Id of `cls_token`, or `None`."""
        return self._token_id(self.cls_token)

    @property
    def mask_token_id(self):
        """Id of `mask_token`, or `None`."""
        return self._token_id(self.mask_token)

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

    def encode(self, text, text_pair=None, add_special_tokens=True):
        """Returns the token ids of one string (or of one pair of strings) as a list of ints."""
        if not isinstance(text, str):
            raise invalid_argument("text", "a string", text)
        if text_pair is not None and not isinstance(text_pair, str):
            raise invalid_argument("text_pair", "a string or None", text_pair)
        # An empty text_pair encodes as no pair, as in transformers.
        return self._tokenizer.encode(text, text_pair or None, add_special_tokens=add_special_tokens).ids

    def __call__(
        self,
        text,
        text_pair=None,
        *,
        return_tensors=None,
        padding=False,
        truncation=False,
        max_length=None,
        add_special_tokens=True,
        padding_side=None,
        return_token_type_ids=None,
    ):
        """Tokenizes a string, a pair of strings, or a batch of either.

        Args:
            text: A string, a list of strings, or a list of `(text, text_pair)` pairs.
            text_pair: The second sequence of each pair: a string when `text`
                is a string, a list of strings (one per text) when it is a list.
                Pairs are joined by the tokenizer's template, e.g. BERT's
                `[CLS] A [SEP] B [SEP]`.
            return_tensors: `None` for Python lists, `"np"` for int32 numpy
                arrays, `"tf"` for int32 `tf.Tensor`s. With tensors a single
                string gives a batch of one; with `None` it gives flat lists.
            padding: `False`; `True` or `"longest"` (pad to the longest in the
                batch); `"max_length"` (pad to `max_length`, or to
                `model_max_length` when `max_length` is `None`).
            truncation: `True` or `"longest_first"` cuts sequences (special
                tokens included) to `max_length`, or to `model_max_length` when
                it is `None`, shortening the longer sequence of a pair first;
                `"only_first"` / `"only_second"` cut one sequence of a pair only.
            max_length: Length used by truncation and `padding="max_length"`.
            add_special_tokens: Whether to add the post-processor's special
                tokens (e.g. BERT's `[CLS]` and `[SEP]`, bos when `add_bos_token`).
            padding_side: `"left"` or `"right"`; defaults to `self.padding_side`.
            return_token_type_ids: Whether to return `token_type_ids` (0 for
                the first sequence, 1 for the second); `None` returns them when
                `model_input_names` lists them (BERT: yes, GPT-2: no), as
                `transformers` does.

        Returns:
            A dict with `"input_ids"`, `"token_type_ids"` (see above) and
            `"attention_mask"`, each of shape `(batch_size, sequence_length)`
            when tensors are returned.

        Raises:
            ValueError: For an invalid argument, or when a batch of unequal
                lengths is to be returned as tensors without padding.
        """
        inputs, is_single, is_pair = _utils.as_text_inputs(text, text_pair)
        padding = _utils.check_padding(padding)
        truncation = _utils.check_truncation(truncation)
        max_length = _utils.check_max_length(max_length)
        _utils.check_one_of("return_tensors", return_tensors, _utils.RETURN_TENSORS)
        side = self.padding_side
        if padding_side is not None:
            side = _utils.check_one_of("padding_side", padding_side, _utils.PADDING_SIDES)
        with_types = _utils.check_return_token_type_ids(return_token_type_ids)
        if with_types is None:
            with_types = "token_type_ids" in self.model_input_names

        limit = self._length_limit(max_length, truncation, padding)
        encodings = self._encode_rows(inputs, is_pair, add_special_tokens, truncation, limit)
        batch = {"input_ids": [e.ids for e in encodings]}
        if with_types:
            batch["token_type_ids"] = [e.type_ids for e in encodings]
        batch["attention_mask"] = [[1] * len(e.ids) for e in encodings]
        if padding is not None:
            target = limit if padding == "max_length" else max((len(e.ids) for e in encodings), default=0)
            pad_values = {"input_ids": self._padding_id(), "token_type_ids": 0, "attention_mask": 0}
            batch = {k: _utils.pad_rows(rows, target, pad_values[k], side) for k, rows in batch.items()}

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
                raise invalid_argument(
                    "max_length",
                    f"a positive integer when {setting} and the tokenizer has no model_max_length",
                    max_length,
                )
        return limit

    def _encode_rows(self, inputs, is_pair, add_special_tokens, truncation, limit):
        """Returns one `tokenizers.Encoding` per input (a string or a pair), truncated as asked."""
        if truncation is None:
            return self._tokenizer.encode_batch(inputs, add_special_tokens=add_special_tokens)
        return _utils.encode_truncated(
            self._tokenizer, inputs, is_pair, add_special_tokens, truncation, limit
        )

    def _padding_id(self):
        if self.pad_token_id is not None:
            return self.pad_token_id
        if self.eos_token_id is None:
            raise invalid_argument(
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
            # PreTrainedTokenizerFast returns token_type_ids unless this leaves them out.
            "model_input_names": list(self.model_input_names),
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
        """Writes `tokenizer.json`, `tokenizer_config.json` and `special_tokens_map.json`
        (and `spiece.model` when the tokenizer keeps a `sentencepiece_model_proto`).

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
        if self.sentencepiece_model_proto is not None:
            _utils.write_atomic(os.path.join(folder, "spiece.model"), self.sentencepiece_model_proto)
        logger.info("Saved tokenizer to %s", folder)

    def __repr__(self):
        return (
            f"Tokenizer(vocab_size={self.vocab_size}, bos_token={self.bos_token!r}, "
            f"eos_token={self.eos_token!r}, pad_token={self.pad_token!r}, "
            f"padding_side={self.padding_side!r})"
        )
