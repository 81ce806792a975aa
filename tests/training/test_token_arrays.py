"""Long training texts tokenized in pieces give the ids of one pass, for every kind of tokenizer."""

import logging

import numpy as np
import pytest
from pydoc_data.topics import topics
from tokenizers import Tokenizer as BackendTokenizer
from tokenizers import models, normalizers, pre_tokenizers, processors, trainers

from testing import train_tiny_spiece, write_wordpiece_vocab
from tfllm.tokenizers import AutoTokenizer, Tokenizer, train_byte_level_bpe
from tfllm.training.token_arrays import shorten, token_arrays

# ~40 000 characters: words, punctuation, numbers, newlines, runs of spaces, non-ASCII letters.
TEXT = "\n".join(topics[name] for name in sorted(topics)[:12]) + " Café  naïve\tdone ×3."


def byte_level_bpe(folder):
    return train_byte_level_bpe(list(topics.values())[:40], vocab_size=400)


def wordpiece(folder):
    write_wordpiece_vocab(str(folder))
    return AutoTokenizer.from_pretrained(str(folder))


def sentencepiece_unigram(folder):
    train_tiny_spiece(folder / "spiece")
    return AutoTokenizer.from_pretrained(str(folder / "spiece"))


def prepended_bpe(folder):
    """BPE after a "▁" is prepended to the text and spaces become "▁" (Llama 2's layout): a piece must
    drop the space it was cut at, or it would start with "▁▁"."""
    backend = BackendTokenizer(models.BPE(unk_token="<unk>"))
    backend.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    backend.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme="never")  # words as SentencePiece keeps them
    backend.train_from_iterator(list(topics.values())[:40], trainers.BpeTrainer(vocab_size=400,
                                                                                special_tokens=["<unk>", "<s>"]))
    backend.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return Tokenizer(backend, bos_token="<s>", unk_token="<unk>")


@pytest.mark.parametrize("make", [byte_level_bpe, wordpiece, sentencepiece_unigram, prepended_bpe])
@pytest.mark.parametrize("add_special_tokens", [True, False])
def test_a_text_cut_in_pieces_gives_the_ids_of_one_pass(tmp_path, make, add_special_tokens):
    tokenizer = make(tmp_path)
    expected = tokenizer([TEXT, "short", ""], add_special_tokens=add_special_tokens)["input_ids"]
    got = list(token_arrays(tokenizer, [TEXT, "short", ""], add_special_tokens, piece_chars=997))
    assert all(ids.dtype == np.int32 for ids in got)
    assert [ids.tolist() for ids in got] == expected
    assert len(expected[0]) > 40 * 10  # TEXT really was cut in many pieces


def test_a_text_with_no_space_is_cut_anyway_and_says_so(tmp_path, caplog):
    tokenizer = byte_level_bpe(tmp_path)
    text = "x" * 5000
    with caplog.at_level(logging.WARNING, logger="tfllm.training.token_arrays"):
        ids = next(token_arrays(tokenizer, [text], False, piece_chars=1000))
    assert tokenizer.decode(ids.tolist()) == text  # nothing lost; tokens next to the cuts may differ
    assert "hold no space to cut at" in caplog.text


@pytest.mark.parametrize("make", [byte_level_bpe, wordpiece, sentencepiece_unigram, prepended_bpe])
def test_a_shortened_text_truncates_to_the_tokens_of_the_whole_text(tmp_path, make):
    tokenizer = make(tmp_path)
    pair = "a short second text"
    for max_length in (16, 200):
        texts = shorten(tokenizer, [TEXT, pair], max_length, piece_chars=997)
        assert len(texts[0]) < 4 * 997 and texts[1] == pair  # cut after a few pieces; short texts untouched
        for first, second in (([TEXT], None), ([TEXT], [pair]), ([pair], [TEXT])):
            expected = tokenizer(first, second, truncation=True, max_length=max_length)["input_ids"]
            shortened = [shorten(tokenizer, t, max_length, piece_chars=997) if t else t for t in (first, second)]
            assert tokenizer(*shortened, truncation=True, max_length=max_length)["input_ids"] == expected
