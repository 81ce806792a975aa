"""Byte-level BPE (GPT-2 style): built from `vocab.json` + `merges.txt`, or trained."""

import logging

from tokenizers import Tokenizer as BackendTokenizer
from tokenizers import decoders
from tokenizers import models
from tokenizers import pre_tokenizers
from tokenizers import processors
from tokenizers import trainers

from tfllm.errors import invalid_argument
from tfllm.tokenizers.tokenizer import Tokenizer

logger = logging.getLogger(__name__)

ENDOFTEXT = "<|endoftext|>"


def _byte_level_pipeline(model, add_prefix_space):
    backend = BackendTokenizer(model)
    # `ByteLevel` defaults to add_prefix_space=True; GPT-2 uses False.
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=add_prefix_space)
    backend.decoder = decoders.ByteLevel()
    # As transformers' GPT2Converter: trim_offsets=False makes this a no-op on ids.
    backend.post_processor = processors.ByteLevel(trim_offsets=False)
    return backend


def byte_level_bpe_from_files(vocab_file, merges_file, *, add_prefix_space=False):
    """Builds the backend `transformers.GPT2TokenizerFast` builds from `vocab.json` + `merges.txt`.

    Args:
        vocab_file: Path to `vocab.json` (`{token: id}`).
        merges_file: Path to `merges.txt` (a `#version` header line, then one
            merge per line).
        add_prefix_space: Whether a space is added before the first word.

    Returns:
        A `tokenizers.Tokenizer` (special tokens not added yet).
    """
    model = models.BPE.from_file(
        vocab_file,
        merges_file,
        dropout=None,
        continuing_subword_prefix="",
        end_of_word_suffix="",
        fuse_unk=False,
    )
    return _byte_level_pipeline(model, add_prefix_space)


def train_byte_level_bpe(
    texts, *, vocab_size, special_tokens=(ENDOFTEXT,), min_frequency=2
):
    """Trains a GPT-2 style byte-level BPE tokenizer.

    The pre-tokenizer is `ByteLevel` without prefix space and the initial
    alphabet is all 256 bytes, so any text can be encoded and decoded back
    exactly. `bos_token` and `eos_token` are `"<|endoftext|>"` when it is among
    `special_tokens` (otherwise `None`); there is no pad token, so padding uses
    the eos id.

    Args:
        texts: An iterable of strings.
        vocab_size: The vocabulary size to reach, special tokens included; at
            least 256 + `len(special_tokens)`. Fewer tokens result when the
            text has no more merges of `min_frequency`.
        special_tokens: Tokens given the first ids, in order.
        min_frequency: Minimum count of a pair for it to be merged.

    Returns:
        A `tfllm.tokenizers.Tokenizer`.

    Example:

    >>> from pydoc_data.topics import topics
    >>> tokenizer = train_byte_level_bpe(list(topics.values())[:20], vocab_size=500)
    >>> tokenizer.decode(tokenizer.encode("def f(x):\\n    return x"))
    'def f(x):\\n    return x'
    """
    special_tokens = list(special_tokens)
    smallest = 256 + len(special_tokens)
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < smallest:
        raise invalid_argument(
            "vocab_size",
            f"an integer of at least {smallest} (256 bytes + {len(special_tokens)} special tokens)",
            vocab_size,
        )
    if isinstance(texts, str):
        raise invalid_argument("texts", "an iterable of strings, not one string", texts[:50])
    backend = _byte_level_pipeline(models.BPE(), add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=special_tokens,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(texts, trainer=trainer)
    logger.info("Trained a byte-level BPE with %d tokens", backend.get_vocab_size())
    special = ENDOFTEXT if ENDOFTEXT in special_tokens else None
    return Tokenizer(backend, bos_token=special, eos_token=special)
