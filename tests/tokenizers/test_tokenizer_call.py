"""Tokenizer.__call__ (padding, truncation, tensors) and decoding, against transformers."""

import copy
import logging

import numpy as np
import pytest
import tensorflow as tf
import transformers
from tokenizers import processors

from tfllm.tokenizers import AutoTokenizer, Tokenizer

TEXTS = ["Hello world", "A much longer sentence, with punctuation and  spaces.", "", "x"]


@pytest.fixture(scope="module")
def ours(gpt2_folders):
    return AutoTokenizer.from_pretrained(gpt2_folders["json"])


@pytest.fixture(scope="module")
def reference(gpt2_folders):
    tokenizer = transformers.GPT2TokenizerFast.from_pretrained(gpt2_folders["json"])
    tokenizer.pad_token = tokenizer.eos_token  # ours pads with eos when there is no pad token
    return tokenizer


def _lists(batch):
    return {k: np.asarray(v).tolist() for k, v in batch.items()}


@pytest.mark.parametrize("side", ["left", "right"])
def test_padding_longest_matches_transformers(ours, reference, side):
    expected = reference(TEXTS, padding=True, padding_side=side)
    assert ours(TEXTS, padding=True, padding_side=side) == dict(expected)
    assert ours(TEXTS, padding="longest", padding_side=side) == dict(expected)


def test_padding_side_attribute_is_used(gpt2_folders, reference):
    ours = AutoTokenizer.from_pretrained(gpt2_folders["json"], padding_side="left")
    expected = reference(TEXTS, padding=True, padding_side="left")
    assert ours(TEXTS, padding=True) == dict(expected)
    ours.padding_side = "right"
    assert ours(TEXTS, padding=True) == dict(reference(TEXTS, padding=True))


@pytest.mark.parametrize("side", ["left", "right"])
def test_padding_max_length_and_truncation_match_transformers(ours, reference, side):
    for kwargs in (
        {"padding": "max_length", "max_length": 20},
        {"padding": "max_length", "max_length": 6, "truncation": True},
        {"padding": True, "max_length": 5, "truncation": True},
        {"truncation": True, "max_length": 3},
        {"truncation": True},  # model_max_length (64)
        {"padding": "max_length"},  # model_max_length (64)
    ):
        expected = reference(TEXTS, padding_side=side, **kwargs)
        assert ours(TEXTS, padding_side=side, **kwargs) == dict(expected), kwargs


def test_truncation_keeps_bos_with_add_bos_token(gpt2_folders, trained):
    ours = AutoTokenizer.from_pretrained(gpt2_folders["json"], add_bos_token=True)
    ids = ours("Hello world and more words", truncation=True, max_length=3)["input_ids"]
    assert len(ids) == 3 and ids[0] == ours.bos_token_id
    assert ids[1:] == trained.encode("Hello world and more words")[:2]


def test_truncation_keeps_trailing_special_tokens(trained):
    backend = copy.deepcopy(trained.backend_tokenizer)
    backend.post_processor = processors.TemplateProcessing(
        single="<|endoftext|> $A <|endoftext|>", special_tokens=[("<|endoftext|>", 0)]
    )
    ours = Tokenizer(backend, eos_token="<|endoftext|>")
    ids = ours("Hello world and more words", truncation=True, max_length=4)["input_ids"]
    assert ids == [0] + trained.encode("Hello world and more words")[:2] + [0]
    with pytest.raises(ValueError, match="argument `max_length`.*at least 2.*max_length=1"):
        ours("Hello", truncation=True, max_length=1)


@pytest.mark.parametrize("return_tensors", ["np", "tf"])
def test_return_tensors(ours, reference, return_tensors):
    batch = ours(TEXTS, padding=True, return_tensors=return_tensors)
    expected = reference(TEXTS, padding=True, return_tensors="np")
    assert set(batch) == {"input_ids", "attention_mask"}
    for key, value in batch.items():
        if return_tensors == "tf":
            assert isinstance(value, tf.Tensor) and value.dtype == tf.int32
        else:
            assert isinstance(value, np.ndarray) and value.dtype == np.int32
        assert tuple(value.shape) == expected[key].shape
        np.testing.assert_array_equal(np.asarray(value), expected[key])


def test_single_string(ours, reference):
    assert ours("Hello world") == dict(reference("Hello world"))
    batch = ours("Hello world", return_tensors="tf")
    assert batch["input_ids"].shape == (1, len(ours.encode("Hello world")))
    # An equal-length batch needs no padding to become a tensor.
    assert ours(["ab", "ab"], return_tensors="np")["input_ids"].shape == (2, len(ours.encode("ab")))
    assert ours([], return_tensors="np")["input_ids"].shape == (0, 0)


def test_pad_fallback_warns_once(gpt2_folders, caplog):
    ours = AutoTokenizer.from_pretrained(gpt2_folders["json"])
    with caplog.at_level(logging.WARNING, logger="tfllm.tokenizers.tokenizer"):
        ours(TEXTS, padding=True)
        ours(TEXTS, padding=True)
    warnings = [r for r in caplog.records if "no pad_token" in r.getMessage()]
    assert len(warnings) == 1
    assert ours.pad_token_id is None


def test_decode_and_batch_decode(ours, reference):
    batch = ours(TEXTS, padding=True, padding_side="left")
    for ids in (batch["input_ids"], np.asarray(batch["input_ids"]),
                tf.constant(batch["input_ids"])):
        assert ours.batch_decode(ids) == reference.batch_decode(np.asarray(ids).tolist())
        assert ours.batch_decode(ids, skip_special_tokens=True) == TEXTS
    row = [ours.eos_token_id] + ours.encode("Hello world") + [ours.eos_token_id]
    for ids in (row, np.asarray(row), tf.constant(row, dtype=tf.int64)):
        assert ours.decode(ids) == "<|endoftext|>Hello world<|endoftext|>"
        assert ours.decode(ids, skip_special_tokens=True) == "Hello world"
    assert ours.decode(ours.eos_token_id) == "<|endoftext|>"
    assert ours.batch_decode([[ours.eos_token_id], row]) == reference.batch_decode([[0], row])
    assert ours.convert_ids_to_tokens(row, skip_special_tokens=True) == (
        reference.convert_ids_to_tokens(row, skip_special_tokens=True)
    )


def test_clean_up_tokenization_spaces(gpt2_folders, reference):
    ours = AutoTokenizer.from_pretrained(gpt2_folders["json"], clean_up_tokenization_spaces=True)
    text = "Hi , there . It 's fine !"
    ids = ours.encode(text)
    assert ours.decode(ids) == reference.decode(ids, clean_up_tokenization_spaces=True)
    assert ours.batch_decode([ids]) == [ours.decode(ids)] == ["Hi, there. It's fine!"]


# === Errors ===


def test_bad_padding(ours):
    message = (
        "Invalid value for argument `padding`. Expected one of True, False, 'longest', "
        "'max_length'. Received: padding='foo'"
    )
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        ours("hi", padding="foo")
    with pytest.raises(ValueError, match="argument `padding`.*Received: padding=1"):
        ours("hi", padding=1)


def test_bad_padding_side(ours):
    with pytest.raises(ValueError, match="argument `padding_side`.*Received: padding_side='up'"):
        ours("hi", padding_side="up")
    with pytest.raises(ValueError, match="argument `padding_side`.*Received: padding_side='top'"):
        ours.padding_side = "top"


def test_bad_return_tensors(ours):
    with pytest.raises(ValueError, match="argument `return_tensors`.*'np', 'tf'.*'pt'"):
        ours("hi", return_tensors="pt")


def test_bad_truncation_and_max_length(ours):
    with pytest.raises(ValueError, match="argument `truncation`.*Received: truncation='yes'"):
        ours("hi", truncation="yes")
    with pytest.raises(ValueError, match="argument `max_length`.*Received: max_length=0"):
        ours("hi", max_length=0)


def test_max_length_padding_without_max_length(trained):
    assert trained.model_max_length is None
    with pytest.raises(ValueError, match="argument `max_length`.*padding='max_length'"):
        trained(["a", "bb"], padding="max_length")
    with pytest.raises(ValueError, match="argument `max_length`.*truncation=True"):
        trained(["a", "bb"], truncation=True)


def test_unequal_batch_without_padding(ours):
    assert ours(TEXTS)["input_ids"][2] == []  # lists may be ragged
    with pytest.raises(ValueError, match="argument `padding`.*padding=True.*padding=False"):
        ours(TEXTS, return_tensors="np")
    with pytest.raises(ValueError, match="truncation=True"):
        ours(TEXTS, padding="max_length", max_length=2, return_tensors="tf")


def test_bad_text_and_ids(ours):
    with pytest.raises(ValueError, match="argument `text`"):
        ours(["ok", 3])
    with pytest.raises(ValueError, match="argument `text`"):
        ours.encode(["a list"])
    with pytest.raises(ValueError, match="argument `ids`.*1-D"):
        ours.decode([[1, 2]])
    with pytest.raises(ValueError, match="argument `ids`.*2-D"):
        ours.batch_decode([1, 2])
    with pytest.raises(ValueError, match="argument `ids`.*2-D"):
        ours.batch_decode(np.zeros((2, 2, 2), dtype=np.int32))
