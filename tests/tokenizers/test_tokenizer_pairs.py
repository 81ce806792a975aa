"""Sentence pairs, `token_type_ids` and pair truncation, against transformers' fast tokenizers."""

import json

import numpy as np
import pytest
import torch
import transformers

import tfllm
from testing import TINY_BERT, make_hf_model, minilm_folder, write_wordpiece_vocab
from tfllm.tokenizers import AutoTokenizer, Tokenizer

FIRSTS = ["The quick brown fox jumps over the lazy dog.", "Short.", "Café naïve — accents, 東京", ""]
SECONDS = ["And then?", "A much longer second sentence, with punctuation and words to cut.", "x", "only"]
CALLS = [
    {},
    {"padding": True},
    {"padding": True, "padding_side": "left"},
    {"truncation": True, "max_length": 9, "padding": True},
    {"truncation": "longest_first", "max_length": 12},
    {"truncation": "only_second", "max_length": 14},
    {"padding": "max_length", "max_length": 24, "truncation": True},
    {"add_special_tokens": False, "truncation": True, "max_length": 5},
    {"return_token_type_ids": False, "padding": True},
]


@pytest.fixture(scope="module")
def minilm():
    return minilm_folder()


@pytest.fixture(scope="module")
def wordpiece_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny_wordpiece")
    write_wordpiece_vocab(folder)
    return folder


def _lists(batch):
    return {k: v if isinstance(v, list) else np.asarray(v).tolist() for k, v in batch.items()}


def _assert_same(ours, theirs, kwargs):
    expected = _lists(theirs)
    assert _lists(ours) == expected, kwargs
    assert list(ours) == list(expected), kwargs  # same keys, in transformers' order


@pytest.mark.parametrize("source", ["tokenizer.json", "vocab.txt"])
def test_minilm_pairs_match_transformers(minilm, tmp_path, source):
    folder = minilm
    if source == "vocab.txt":
        folder = tmp_path
        for name in ("vocab.txt", "tokenizer_config.json", "special_tokens_map.json"):
            (tmp_path / name).write_bytes(open(f"{minilm}/{name}", "rb").read())
    ours, theirs = AutoTokenizer.from_pretrained(folder), transformers.AutoTokenizer.from_pretrained(folder)
    assert type(theirs).__name__ == "BertTokenizerFast"
    assert ours.model_input_names == tuple(theirs.model_input_names)
    assert (ours.sep_token_id, ours.cls_token_id, ours.mask_token_id) == (
        theirs.sep_token_id, theirs.cls_token_id, theirs.mask_token_id)
    for kwargs in CALLS:
        _assert_same(ours(FIRSTS, SECONDS, **kwargs), theirs(FIRSTS, SECONDS, **kwargs), kwargs)
        _assert_same(ours(list(zip(FIRSTS, SECONDS)), **kwargs), theirs(list(zip(FIRSTS, SECONDS)), **kwargs), kwargs)
        _assert_same(ours(FIRSTS[0], SECONDS[1], **kwargs), theirs(FIRSTS[0], SECONDS[1], **kwargs), kwargs)
    _assert_same(ours(FIRSTS, padding=True), theirs(FIRSTS, padding=True), "single sentences")
    batch = ours(FIRSTS, SECONDS, padding=True, return_tensors="tf")
    _assert_same(batch, theirs(FIRSTS, SECONDS, padding=True, return_tensors="np"), "tf tensors")
    assert ours.encode(FIRSTS[0], SECONDS[0]) == theirs.encode(FIRSTS[0], SECONDS[0])


def test_pair_truncation_lengths_match_transformers(wordpiece_folder):
    ours = AutoTokenizer.from_pretrained(wordpiece_folder)
    theirs = transformers.BertTokenizerFast.from_pretrained(wordpiece_folder)
    for n_first in range(7):
        for n_second in range(7):
            first, second = " ".join(["cat"] * n_first), " ".join(["dog"] * n_second)
            for max_length in range(3, 16):
                for strategy in ("longest_first", "only_first", "only_second"):
                    kwargs = dict(truncation=strategy, max_length=max_length)
                    try:
                        expected = theirs(first, second, **kwargs)
                    except Exception:  # "Sequence to truncate too short", "Second sequence not provided"
                        with pytest.raises(ValueError, match="argument `(max_length|truncation)`"):
                            ours(first, second, **kwargs)
                        continue
                    _assert_same(ours(first, second, **kwargs), expected, (n_first, n_second, kwargs))


@pytest.mark.parametrize("layout", ["json", "files"])
def test_gpt2_pairs_have_no_token_type_ids_by_default(gpt2_folders, layout):
    ours = AutoTokenizer.from_pretrained(gpt2_folders[layout])
    theirs = transformers.GPT2TokenizerFast.from_pretrained(gpt2_folders[layout])
    theirs.pad_token = theirs.eos_token  # ours pads with eos when there is no pad token
    assert ours.model_input_names == tuple(theirs.model_input_names) == ("input_ids", "attention_mask")
    for kwargs in CALLS[:5] + [{"return_token_type_ids": True, "padding": True},
                               {"return_token_type_ids": True, "truncation": True, "max_length": 6}]:
        _assert_same(ours(FIRSTS, SECONDS, **kwargs), theirs(FIRSTS, SECONDS, **kwargs), kwargs)


def test_bert_model_takes_the_pair_batch_directly(wordpiece_folder, tmp_path):
    """The tokenizer's dict, token_type_ids included, feeds tfllm's BERT as transformers' feeds its own."""
    vocab_size = write_wordpiece_vocab(tmp_path)
    hf_model = make_hf_model(tmp_path, "BertModel", TINY_BERT, vocab_size=vocab_size)
    first, second = ["the cat sat on the mat", "hello"], ["a dog ran in the park", "paris is the capital of france"]
    batch = AutoTokenizer.from_pretrained(tmp_path)(first, second, padding=True, return_tensors="tf")
    assert set(batch) == {"input_ids", "token_type_ids", "attention_mask"}
    ours = tfllm.AutoModel.from_pretrained(tmp_path)(batch)["sequence_output"].numpy()
    hf_batch = transformers.AutoTokenizer.from_pretrained(tmp_path)(first, second, padding=True, return_tensors="pt")
    with torch.no_grad():
        theirs = hf_model(**hf_batch).last_hidden_state.numpy()
    mask = batch["attention_mask"].numpy()[:, :, None]
    assert np.abs((ours - theirs) * mask).max() < 1e-4
    without_types = {k: v for k, v in batch.items() if k != "token_type_ids"}
    changed = tfllm.AutoModel.from_pretrained(tmp_path)(without_types)["sequence_output"].numpy()
    assert np.abs((changed - theirs) * mask).max() > 1e-2  # the segment embedding matters


def test_saved_bert_tokenizer_keeps_token_types_and_mask_token(wordpiece_folder, tmp_path):
    AutoTokenizer.from_pretrained(wordpiece_folder).save_pretrained(tmp_path)
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    assert config["model_input_names"] == ["input_ids", "token_type_ids", "attention_mask"]
    assert config["mask_token"] == "[MASK]"
    ours, theirs = AutoTokenizer.from_pretrained(tmp_path), transformers.AutoTokenizer.from_pretrained(tmp_path)
    assert ours.mask_token_id == theirs.mask_token_id == 4
    _assert_same(ours(FIRSTS, SECONDS, padding=True), theirs(FIRSTS, SECONDS, padding=True), "saved")


def test_model_input_names_from_config(wordpiece_folder, tmp_path):
    (tmp_path / "vocab.txt").write_bytes((wordpiece_folder / "vocab.txt").read_bytes())
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"model_input_names": ["input_ids", "attention_mask"]}))
    ours, theirs = AutoTokenizer.from_pretrained(tmp_path), transformers.BertTokenizerFast.from_pretrained(tmp_path)
    _assert_same(ours("the cat", "a dog"), theirs("the cat", "a dog"), "no token types")
    assert "token_type_ids" in ours("the cat", "a dog", return_token_type_ids=True)


# --- Errors ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bert(wordpiece_folder):
    return AutoTokenizer.from_pretrained(wordpiece_folder)


def test_text_pair_length_mismatch(bert):
    with pytest.raises(ValueError, match=r"argument `text_pair`\. Expected a list of 2 strings, one per text.*"
                                         r"Received: text_pair=\['a'\]"):
        bert(["the cat", "a dog"], ["a"])


def test_text_pair_of_the_wrong_kind(bert):
    with pytest.raises(ValueError, match="argument `text_pair`.*a string.*Received: text_pair=\\['a', 'b'\\]"):
        bert("the cat", ["a", "b"])
    with pytest.raises(ValueError, match="argument `text_pair`.*Received: text_pair=3"):
        bert(["the cat"], 3)
    with pytest.raises(ValueError, match="argument `text_pair`.*Received: text_pair=3"):
        bert.encode("the cat", 3)
    with pytest.raises(ValueError, match="argument `text`.*pairs"):
        bert([("the", "cat"), "dog"])


def test_bad_return_token_type_ids(bert):
    with pytest.raises(ValueError, match="argument `return_token_type_ids`.*Received: return_token_type_ids='yes'"):
        bert("the cat", return_token_type_ids="yes")


def test_only_second_without_pair(bert):
    with pytest.raises(ValueError, match="argument `truncation`.*no text_pair.*Received: truncation='only_second'"):
        bert("the cat sat on the mat", truncation="only_second", max_length=4)


def test_bad_model_input_names(bert):
    with pytest.raises(ValueError, match="argument `model_input_names`.*'input_ids'.*Received: model_input_names="):
        Tokenizer(bert.backend_tokenizer, model_input_names=["attention_mask"])
