"""WordPiece (BERT style): built from `vocab.txt` as `transformers.BertTokenizerFast` builds it."""

from tokenizers import AddedToken
from tokenizers import Tokenizer as BackendTokenizer
from tokenizers import decoders
from tokenizers import models
from tokenizers import normalizers
from tokenizers import pre_tokenizers
from tokenizers import processors

# BertTokenizer's defaults, for the keys `tokenizer_config.json` does not set.
DEFAULT_SPECIAL_TOKENS = {
    "unk_token": "[UNK]",
    "sep_token": "[SEP]",
    "pad_token": "[PAD]",
    "cls_token": "[CLS]",
    "mask_token": "[MASK]",
}


def _content(value):
    return value["content"] if isinstance(value, dict) else value


def special_tokens(config):
    """`{name: token}` for BERT's five special tokens, from the config or BertTokenizer's defaults."""
    return {name: _content(config.get(name) or default) for name, default in DEFAULT_SPECIAL_TOKENS.items()}


def wordpiece_from_vocab(vocab_file, config):
    """Builds the backend `transformers.BertTokenizerFast` builds from `vocab.txt`.

    Args:
        vocab_file: path to `vocab.txt` (one token a line; the line number is the id).
        config: the merged `tokenizer_config.json` / `special_tokens_map.json` dict; read for
            `do_lower_case` (default True), `strip_accents` (default: follow `do_lower_case`),
            `tokenize_chinese_chars` (default True) and the special tokens.

    Returns:
        A `tokenizers.Tokenizer` with the `[CLS] A [SEP] (B [SEP])` template and the special
        tokens added as special.
    """
    tokens = special_tokens(config)
    with open(vocab_file, encoding="utf-8") as f:
        vocab = {line.rstrip("\n"): i for i, line in enumerate(f)}
    for name in ("cls_token", "sep_token", "unk_token"):
        if tokens[name] not in vocab:
            raise ValueError(f"`{name}` {tokens[name]!r} is not in {vocab_file}; BERT's template needs it.")
    backend = BackendTokenizer(models.WordPiece(vocab, unk_token=tokens["unk_token"], max_input_chars_per_word=100))
    backend.normalizer = normalizers.BertNormalizer(
        clean_text=True,
        handle_chinese_chars=config.get("tokenize_chinese_chars", True),
        strip_accents=config.get("strip_accents"),
        lowercase=config.get("do_lower_case", True),
    )
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    cls, sep = tokens["cls_token"], tokens["sep_token"]
    backend.post_processor = processors.TemplateProcessing(
        single=f"{cls}:0 $A:0 {sep}:0",
        pair=f"{cls}:0 $A:0 {sep}:0 $B:1 {sep}:1",
        special_tokens=[(cls, vocab[cls]), (sep, vocab[sep])],
    )
    backend.decoder = decoders.WordPiece(prefix="##")
    backend.add_special_tokens([AddedToken(token, special=True) for token in tokens.values()])
    return backend
