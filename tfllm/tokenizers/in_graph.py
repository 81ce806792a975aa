"""Tokenizers made of TensorFlow ops, for exported graphs (SavedModel, TF Serving).

They give the same ids as the Python `Tokenizer` they are built from, using TF core ops and
TF-Text's `regex_split` (ops that TF Serving links), so a SavedModel takes text and returns text.
"""

import json

import tensorflow as tf

from tfllm.tokenizers import sentencepiece

# GPT-2's pre-tokenizer without its one lookahead (`\s+(?!\S)`), which RE2 lacks; see `_pre_split`.
_BYTE_LEVEL_SPLIT = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+"""
# A private-use character marks split points before splitting; it cannot be typed by accident.
_MARK = "\U000F0000"
_NO_MERGE = 2**31 - 1
_SPACE = "\u2581"  # SentencePiece's visible space
# `Tokenizer.decode`'s clean-up of spaces before punctuation (`_utils.clean_up`), in its order.
_CLEAN_UP = ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"), (" 'm", "'m"),
             (" 's", "'s"), (" 've", "'ve"), (" 're", "'re"))


def _bytes_to_unicode():
    """GPT-2's reversible map from the 256 byte values to printable unicode characters."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAC + 1)) + list(range(0xAE, 0xFF + 1))
    chars, extra = {}, 0
    for byte in range(256):
        if byte in printable:
            chars[byte] = chr(byte)
        else:
            chars[byte] = chr(256 + extra)
            extra += 1
    return chars


def _static_table(keys, values, key_dtype, value_dtype, default):
    initializer = tf.lookup.KeyValueTensorInitializer(
        tf.constant(keys, key_dtype), tf.constant(values, value_dtype)
    )
    return tf.lookup.StaticHashTable(initializer, default_value=default)


class ByteLevelBPE(tf.Module):
    """GPT-2 style byte-level BPE as TF ops: the same ids as the `tokenizers` backend.

    Args:
        vocabulary: dict token → id.
        merges: list of "left right" merge rules, in priority order.
        special_tokens: dict token → id of added tokens matched whole in the text (e.g.
            `<|endoftext|>`) and dropped by `detokenize(skip_special_tokens=True)`.
        affixes: `(prefix_ids, suffix_ids)`, what the tokenizer's post-processor puts around a text
            (`([<s>], [</s>])` for a `<s> … </s>` template); `encode` adds them.
        pad_id: the id `encode` pads with.
        max_length: longest `encode` output, affixes included (None: no limit).

    Example:

    >>> bpe = ByteLevelBPE.from_tokenizer(tfllm.AutoTokenizer.from_pretrained(folder))
    >>> ids = bpe.tokenize(tf.constant(["Hello world"]))  # RaggedTensor (batch, (tokens)) int32
    >>> bpe.detokenize(ids.to_tensor(), tf.ones_like(ids.to_tensor()))
    """

    def __init__(self, vocabulary, merges, special_tokens=None, affixes=((), ()), pad_id=0, max_length=None,
                 name=None):
        super().__init__(name=name)
        import tensorflow_text  # noqa: F401  (registers regex_split's op)

        self.prefix_ids, self.suffix_ids = (list(ids) for ids in affixes)
        self.pad_id, self.max_length = pad_id, max_length

        self._tf_text = tensorflow_text
        tokens = sorted(vocabulary, key=vocabulary.get)
        self.special_tokens = dict(special_tokens or {})
        byte_chars = _bytes_to_unicode()
        self._token_ids = _static_table(tokens, [vocabulary[t] for t in tokens], tf.string, tf.int32, -1)
        size = max(vocabulary.values()) + 1
        id_strings = [""] * size
        for token, index in vocabulary.items():
            id_strings[index] = token
        self._id_strings = tf.constant(id_strings)
        self._merge_ranks = _static_table(list(merges), list(range(len(merges))), tf.string, tf.int32, _NO_MERGE)
        self._byte_to_char = tf.constant([byte_chars[b] for b in range(256)])
        self._char_to_byte = _static_table(
            [byte_chars[b] for b in range(256)], [bytes([b]) for b in range(256)], tf.string, tf.string, ""
        )
        special_ids = sorted(self.special_tokens.values())
        self._special_ids = tf.constant(special_ids or [-1], tf.int32)
        self._special_table = _static_table(
            list(self.special_tokens) or [""], list(self.special_tokens.values()) or [-1], tf.string, tf.int32, -1
        )
        self._special_pattern = "|".join(_re2_escape(t) for t in sorted(self.special_tokens, key=len, reverse=True))

    @classmethod
    def from_tokenizer(cls, tokenizer):
        """Builds the in-graph version of a byte-level BPE `tfllm.tokenizers.Tokenizer`."""
        spec = json.loads(tokenizer.backend_tokenizer.to_str())
        model, pre = spec["model"], spec.get("pre_tokenizer") or {}
        if model.get("type") != "BPE" or pre.get("type") != "ByteLevel" or pre.get("add_prefix_space"):
            raise NotImplementedError(
                "In-graph tokenization supports GPT-2 style byte-level BPE without a prefix space; this "
                f"tokenizer has model {model.get('type')!r} and pre-tokenizer {pre.get('type')!r}."
            )
        if spec.get("normalizer"):
            raise NotImplementedError(f"In-graph tokenization has no normalizer {spec['normalizer'].get('type')!r}.")
        merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
        special = {t["content"]: t["id"] for t in spec.get("added_tokens", [])}
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        return cls(model["vocab"], merges, special, _affixes(tokenizer.backend_tokenizer), pad_id,
                   tokenizer.model_max_length)

    # === Text → ids ===

    def _pre_split(self, text):
        """Splits `(batch,)` strings into GPT-2's pre-tokens: RaggedTensor `(batch, (words))`.

        GPT-2's `\\s+(?!\\S)` leaves the last whitespace character of a run before a word to that
        word (a space joins it, other whitespace stands alone). Marking that boundary first makes
        the lookahead-free pattern split the same way.
        """
        text = tf.strings.regex_replace(text, r"(\s)(\S)", _MARK + r"\1\2")
        pieces = tf.strings.split(text, _MARK)  # (batch, (pieces))
        words = self._tf_text.regex_split(pieces.flat_values, _BYTE_LEVEL_SPLIT, _BYTE_LEVEL_SPLIT)
        return pieces.with_flat_values(words).merge_dims(1, 2)

    def _merge(self, symbols):
        """Applies BPE merges to a RaggedTensor of words `(words, (symbols))` of byte characters.

        Each step merges, in every word, the leftmost occurrence of its lowest-ranked pair, which is
        the order the `tokenizers` library applies merges in.
        """

        def has_merge(symbols):
            pairs = _pairs(symbols)
            return tf.reduce_any(self._merge_ranks.lookup(pairs.flat_values) < _NO_MERGE)

        def step(symbols):
            pairs = _pairs(symbols)  # (words, (symbols - 1))
            ranks = pairs.with_flat_values(self._merge_ranks.lookup(pairs.flat_values))
            best = tf.reduce_min(ranks, axis=1)  # (words,)
            position = tf.argmin(ranks.to_tensor(_NO_MERGE), axis=1, output_type=tf.int32)
            mergeable = best < _NO_MERGE
            index = tf.ragged.range(symbols.row_lengths(), dtype=tf.int64)
            index = tf.cast(index, tf.int32)
            position = position[:, None]
            first = tf.logical_and(mergeable[:, None], tf.equal(index, position))  # left of the pair
            second = tf.logical_and(mergeable[:, None], tf.equal(index, position + 1))
            following = tf.concat([symbols[:, 1:], tf.fill([symbols.nrows(), 1], "")], axis=1)
            merged = tf.where(first.flat_values, tf.strings.join([symbols.flat_values, following.flat_values]),
                              symbols.flat_values)
            return tf.ragged.boolean_mask(symbols.with_flat_values(merged), tf.logical_not(second))

        return tf.while_loop(
            lambda s: has_merge(s),
            step,
            [symbols],
            shape_invariants=[tf.RaggedTensorSpec([None, None], tf.string, ragged_rank=1, row_splits_dtype=tf.int64)],
        )[0]

    def _encode_words(self, words):
        """`(words,)` strings → RaggedTensor `(words, (tokens))` int32."""
        raw = tf.strings.bytes_split(words)  # (words, (bytes)), one byte per string
        byte_values = tf.cast(tf.io.decode_raw(raw.flat_values, tf.uint8)[:, 0], tf.int32)
        merged = self._merge(raw.with_flat_values(tf.gather(self._byte_to_char, byte_values)))
        return merged.with_flat_values(self._token_ids.lookup(merged.flat_values))

    def tokenize(self, text):
        """`(batch,)` strings → RaggedTensor `(batch, (tokens))` int32 ids."""
        text = tf.convert_to_tensor(text, tf.string)
        if not self.special_tokens:
            words = self._pre_split(text)
            return words.with_flat_values(self._encode_words(words.flat_values)).merge_dims(1, 2)
        pieces = self._tf_text.regex_split(text, self._special_pattern, self._special_pattern)  # (batch, (pieces))
        special = self._special_table.lookup(pieces.flat_values)  # (pieces,), -1 for ordinary text
        words = self._pre_split(tf.where(special >= 0, "", pieces.flat_values))  # special pieces: no words
        ids = words.with_flat_values(self._encode_words(words.flat_values)).merge_dims(1, 2)  # (pieces, (tokens))
        single = tf.ragged.boolean_mask(special[:, None], (special >= 0)[:, None])  # the special id, or nothing
        return pieces.with_flat_values(tf.concat([ids, single], axis=1)).merge_dims(1, 2)

    def encode(self, text, max_length=None):
        """`(batch,)` strings → the tokens within the post-processor's special tokens (RoBERTa's
        `<s> … </s>`) as `(ids, mask)`, right-padded with `pad_id` to `(batch, longest)` int32.

        Rows are truncated to `max_length` tokens (default `self.max_length`, None: no limit), special
        tokens included, as the tokenizer's `truncation=True` does.
        """
        ids = self.tokenize(text)
        max_length = max_length or self.max_length
        if max_length:
            ids = ids[:, : max_length - len(self.prefix_ids) - len(self.suffix_ids)]
        rows = tf.cast(ids.nrows(), tf.int32)

        def repeated(affix):
            return tf.tile(tf.constant(affix, tf.int32, shape=[1, len(affix)]), [rows, 1])  # (B, len(affix))

        ids = tf.concat([repeated(self.prefix_ids), ids, repeated(self.suffix_ids)], axis=1)
        return ids.to_tensor(self.pad_id), tf.ones_like(ids).to_tensor(0)

    # === Ids → text ===

    def detokenize(self, token_ids, mask=None, skip_special_tokens=True):
        """`(batch, length)` ids (and an optional 0/1 mask of which to keep) → `(batch,)` UTF-8 strings.

        Byte sequences that are not valid UTF-8 become U+FFFD, as `Tokenizer.decode` does.
        """
        token_ids = tf.cast(token_ids, tf.int32)
        keep = tf.ones_like(token_ids, tf.bool) if mask is None else tf.cast(mask, tf.bool)
        if skip_special_tokens and self.special_tokens:
            is_special = tf.reduce_any(tf.equal(token_ids[..., None], self._special_ids), axis=-1)
            keep = tf.logical_and(keep, tf.logical_not(is_special))
        keep = tf.logical_and(keep, tf.logical_and(token_ids >= 0, token_ids < tf.shape(self._id_strings)[0]))
        tokens = tf.ragged.boolean_mask(tf.gather(self._id_strings, tf.maximum(token_ids, 0)), keep)
        text = tf.strings.reduce_join(tokens, axis=1)  # byte characters
        chars = tf.strings.unicode_split(text, "UTF-8")
        raw = tf.strings.reduce_join(chars.with_flat_values(self._char_to_byte.lookup(chars.flat_values)), axis=1)
        return tf.strings.unicode_transcode(raw, "UTF-8", "UTF-8", errors="replace", replacement_char=0xFFFD)


class WordPiece(tf.Module):
    """BERT's WordPiece as TF-Text ops, normalized as transformers' `BertNormalizer` does.

    Control characters are dropped, unicode spaces become spaces, accents are stripped after NFD and
    text is lower-cased per character (one known difference from Python's `str.lower`: a final
    capital sigma becomes "σ", not "ς").

    Args:
        vocabulary: dict token → id.
        lowercase: lower-case and strip accents (uncased checkpoints).
        unk_token, cls_token, sep_token: the special tokens.
        max_length: longest output including `[CLS]` and `[SEP]`; longer inputs are truncated.
    """

    def __init__(self, vocabulary, lowercase=True, unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]",
                 max_length=512, name=None):
        super().__init__(name=name)
        import tensorflow_text

        self.lowercase = lowercase
        self.max_length = max_length
        words = sorted(vocabulary, key=vocabulary.get)
        table = tf.lookup.StaticVocabularyTable(
            tf.lookup.KeyValueTensorInitializer(words, tf.range(len(words), dtype=tf.int64)), 1
        )
        self._tokenizer = tensorflow_text.BertTokenizer(
            table, lower_case=False, token_out_type=tf.int64, unknown_token=unk_token
        )
        self._normalize_utf8 = tensorflow_text.normalize_utf8
        self.cls_id, self.sep_id = vocabulary[cls_token], vocabulary[sep_token]

    @classmethod
    def from_tokenizer(cls, tokenizer):
        spec = json.loads(tokenizer.backend_tokenizer.to_str())
        normalizer = spec.get("normalizer") or {}
        if spec["model"].get("type") != "WordPiece" or normalizer.get("type") != "BertNormalizer":
            raise NotImplementedError("In-graph WordPiece needs a BERT-style tokenizer (BertNormalizer + WordPiece).")
        lowercase = bool(normalizer.get("lowercase", True))
        if normalizer.get("strip_accents") not in (None, lowercase):
            raise NotImplementedError("In-graph WordPiece strips accents exactly when it lower-cases.")
        return cls(spec["model"]["vocab"], lowercase, spec["model"].get("unk_token", "[UNK]"), tokenizer.cls_token,
                   tokenizer.sep_token, tokenizer.model_max_length or 512)

    def _normalize(self, text):
        text = tf.strings.regex_replace(text, r"[\x00-\x08\x0B\x0C\x0E-\x1F\x7F-\x9F\p{Cf}\x{FFFD}]", "")
        text = tf.strings.regex_replace(text, r"\p{Zs}", " ")
        if self.lowercase:
            text = tf.strings.regex_replace(self._normalize_utf8(text, "NFD"), r"\p{Mn}", "")
            text = tf.strings.lower(text, encoding="utf-8")
        return text

    def tokenize(self, text):
        """`(batch,)` strings → RaggedTensor `(batch, (tokens))` int32 ids, without special tokens."""
        ids = self._tokenizer.tokenize(self._normalize(tf.convert_to_tensor(text, tf.string)))
        return tf.cast(ids.merge_dims(1, 2), tf.int32)

    def encode(self, text, max_length=None):
        """`(batch,)` strings → `[CLS] tokens [SEP]` as `(ids, mask)`, right-padded `(batch, longest)` int32.

        Rows are truncated to `max_length` tokens (default `self.max_length`), `[CLS]` and `[SEP]` included.
        """
        ids = self.tokenize(text)[:, : (max_length or self.max_length) - 2]
        rows = ids.nrows()
        ids = tf.concat([tf.fill([rows, 1], self.cls_id), ids, tf.fill([rows, 1], self.sep_id)], axis=1)
        return ids.to_tensor(0), tf.ones_like(ids).to_tensor(0)


class SentencePiece(tf.Module):
    """SentencePiece Unigram (T5) with TF-Text's `SentencepieceTokenizer` op: the same ids as the `Tokenizer`.

    The op runs the checkpoint's own model proto (its normalizer, dummy prefix and Unigram
    segmentation). Around it, added tokens (`</s>`, `<extra_id_N>`, ...) are matched whole in the
    text first, as the `tokenizers` backend does, and the post-processor's suffix (T5's `</s>`) is
    appended. Decoding drops special tokens and joins the pieces as the backend's `Metaspace`
    decoder does (every "▁" of the first token is dropped, the others become spaces).

    Args:
        model_proto: the bytes of `spiece.model`.
        id_strings: the token of every id (the model's pieces, then added tokens beyond them).
        added_tokens: dict token → id of tokens matched whole in the text.
        special_ids: ids that `detokenize(skip_special_tokens=True)` drops.
        suffix_ids: ids `tokenize(text, add_special_tokens=True)` appends.
        prepend: the decoder's prepend scheme, "always" or "never".
        clean_up_tokenization_spaces: remove spaces before punctuation, as `Tokenizer.decode` does.

    Example:

    >>> codec = SentencePiece.from_tokenizer(tfllm.AutoTokenizer.from_pretrained(t5_folder))
    >>> ids = codec.tokenize(tf.constant(["Hello world"]), add_special_tokens=True)  # (batch, (tokens)), "</s>" last
    """

    def __init__(self, model_proto, id_strings, added_tokens=None, special_ids=(), suffix_ids=(), prepend="always",
                 clean_up_tokenization_spaces=False, name=None):
        super().__init__(name=name)
        import tensorflow_text

        self._tf_text = tensorflow_text
        self._model = tensorflow_text.SentencepieceTokenizer(model=model_proto, out_type=tf.int32)
        self.added_tokens = dict(added_tokens or {})
        self.suffix_ids = tuple(int(i) for i in suffix_ids)
        self.prepend = prepend
        self.clean_up_tokenization_spaces = bool(clean_up_tokenization_spaces)
        self._id_strings = tf.constant(list(id_strings))
        self._special_ids = tf.constant(sorted(special_ids) or [-1], tf.int32)
        self._added_table = _static_table(
            list(self.added_tokens) or [""], list(self.added_tokens.values()) or [-1], tf.string, tf.int32, -1
        )
        self._added_pattern = "|".join(_re2_escape(t) for t in sorted(self.added_tokens, key=len, reverse=True))

    @classmethod
    def from_tokenizer(cls, tokenizer):
        """Builds the in-graph version of a SentencePiece Unigram `tfllm.tokenizers.Tokenizer` (T5).

        Raises:
            NotImplementedError: the tokenizer keeps no `spiece.model` (loaded from `tokenizer.json`
                alone), or uses an option this class does not reproduce (named in the message).
        """
        proto = getattr(tokenizer, "sentencepiece_model_proto", None)
        if proto is None:
            raise NotImplementedError(
                "In-graph SentencePiece tokenization needs the SentencePiece model file `spiece.model`; this "
                "tokenizer was loaded without one (e.g. from tokenizer.json alone). Put the checkpoint's "
                "spiece.model next to tokenizer.json and load the folder again."
            )
        model = sentencepiece.parse_model_proto(proto)
        backend = tokenizer.backend_tokenizer
        spec = json.loads(backend.to_str())
        _check_same_pieces(model, backend)
        prepend = _sentencepiece_prepend(model, spec)
        added = backend.get_added_tokens_decoder()
        for token in added.values():
            for option in ("normalized", "lstrip", "rstrip", "single_word"):
                if getattr(token, option):
                    raise NotImplementedError(
                        f"In-graph SentencePiece matches added tokens as written; {token.content!r} has {option}=True."
                    )
        empty = tokenizer.encode("")
        if tokenizer.encode("a") != tokenizer.encode("a", add_special_tokens=False) + empty:
            raise NotImplementedError("In-graph SentencePiece supports post-processors that append tokens (T5's </s>).")
        size = backend.get_vocab_size(with_added_tokens=True)
        return cls(proto, [backend.id_to_token(i) or "" for i in range(size)],
                   {t.content: i for i, t in added.items()}, [i for i, t in added.items() if t.special], empty,
                   prepend, tokenizer.clean_up_tokenization_spaces)

    def tokenize(self, text, add_special_tokens=False):
        """`(batch,)` strings → RaggedTensor `(batch, (tokens))` int32 ids; with the suffix (`</s>`) if asked."""
        text = tf.convert_to_tensor(text, tf.string)
        if not self.added_tokens:
            ids = self._model.tokenize(text)
        else:
            pieces = self._tf_text.regex_split(text, self._added_pattern, self._added_pattern)  # (batch, (pieces))
            added = self._added_table.lookup(pieces.flat_values)  # (pieces,), -1 for ordinary text
            ids = self._model.tokenize(tf.where(added >= 0, "", pieces.flat_values))  # (pieces, (tokens))
            single = tf.ragged.boolean_mask(added[:, None], (added >= 0)[:, None])  # the added id, or nothing
            ids = pieces.with_flat_values(tf.concat([ids, single], axis=1)).merge_dims(1, 2)
        if add_special_tokens and self.suffix_ids:
            suffix = tf.tile(tf.constant([self.suffix_ids], tf.int32), [ids.nrows(), 1])
            ids = tf.concat([ids, tf.cast(suffix, ids.dtype)], axis=1)
        return tf.cast(ids, tf.int32)

    def detokenize(self, token_ids, mask=None, skip_special_tokens=True):
        """`(batch, length)` ids (and an optional 0/1 mask of which to keep) → `(batch,)` UTF-8 strings."""
        token_ids = tf.cast(token_ids, tf.int32)
        keep = tf.ones_like(token_ids, tf.bool) if mask is None else tf.cast(mask, tf.bool)
        if skip_special_tokens:
            is_special = tf.reduce_any(tf.equal(token_ids[..., None], self._special_ids), axis=-1)
            keep = tf.logical_and(keep, tf.logical_not(is_special))
        keep = tf.logical_and(keep, tf.logical_and(token_ids >= 0, token_ids < tf.shape(self._id_strings)[0]))
        tokens = tf.ragged.boolean_mask(tf.gather(self._id_strings, tf.maximum(token_ids, 0)), keep)
        first = tokens[:, :1].with_flat_values(tf.strings.regex_replace(
            tokens[:, :1].flat_values, _SPACE, "" if self.prepend != "never" else " "))
        rest = tokens[:, 1:].with_flat_values(tf.strings.regex_replace(tokens[:, 1:].flat_values, _SPACE, " "))
        text = tf.strings.reduce_join(tf.concat([first, rest], axis=1), axis=1)
        if self.clean_up_tokenization_spaces:
            for before, after in _CLEAN_UP:
                text = tf.strings.regex_replace(text, _re2_escape(before), after)
        return text


def _check_same_pieces(model, backend):
    """The backend's first ids must be the proto's pieces, or the op would give other ids."""
    for index, (piece, _, _) in enumerate(model.pieces):
        if backend.id_to_token(index) != piece:
            raise NotImplementedError(
                f"In-graph SentencePiece needs the tokenizer's vocabulary to start with spiece.model's pieces; id "
                f"{index} is {backend.id_to_token(index)!r} in the tokenizer and {piece!r} in spiece.model."
            )


def _sentencepiece_prepend(model, spec):
    """The Metaspace prepend scheme, when the op (which follows the proto) adds "▁" the same way."""
    pre, decoder = spec.get("pre_tokenizer") or {}, spec.get("decoder") or {}
    if spec["model"].get("type") != "Unigram" or pre.get("type") != "Metaspace" or decoder.get("type") != "Metaspace":
        raise NotImplementedError("In-graph SentencePiece needs a Unigram model with Metaspace pre-tokenizer and decoder.")
    scheme = pre.get("prepend_scheme") or ("always" if pre.get("add_prefix_space", True) else "never")
    expected = "always" if model.add_dummy_prefix else "never"
    if scheme != expected or not model.remove_extra_whitespaces:
        raise NotImplementedError(
            f"In-graph SentencePiece runs spiece.model as written (add_dummy_prefix={model.add_dummy_prefix}, "
            f"remove_extra_whitespaces={model.remove_extra_whitespaces}); this tokenizer's prepend_scheme is "
            f"{scheme!r} (legacy=False or add_prefix_space=False), which it cannot reproduce."
        )
    return scheme


def _pairs(symbols):
    """Adjacent pairs "a b" of each row of a RaggedTensor of strings."""
    return tf.strings.join([symbols[:, :-1], symbols[:, 1:]], separator=" ")


def _re2_escape(text):
    return "".join("\\" + c if c in r"\.^$|?*+()[]{}" else c for c in text)


def _affixes(backend):
    """The ids a tokenizer's post-processor puts before and after a text: `([<s>], [</s>])` for RoBERTa."""
    plain = backend.encode("a", add_special_tokens=False).ids
    full = backend.encode("a", add_special_tokens=True).ids
    start = next(i for i in range(len(full) - len(plain) + 1) if full[i:i + len(plain)] == plain)
    return full[:start], full[start + len(plain):]


def from_tokenizer(tokenizer):
    """The in-graph tokenizer for a `tfllm.tokenizers.Tokenizer`, or NotImplementedError saying why not.

    WordPiece (BERT) → `WordPiece`; Unigram (T5's SentencePiece) → `SentencePiece`; byte-level BPE
    (GPT-2, Llama 3 style) → `ByteLevelBPE`.
    """
    model = json.loads(tokenizer.backend_tokenizer.to_str())["model"].get("type")
    if model == "WordPiece":
        return WordPiece.from_tokenizer(tokenizer)
    if model == "Unigram":
        return SentencePiece.from_tokenizer(tokenizer)
    return ByteLevelBPE.from_tokenizer(tokenizer)
