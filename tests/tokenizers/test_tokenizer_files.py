"""Malformed, deeply nested or out-of-folder tokenizer files are refused with a CheckpointError naming the file."""

import os

import pytest

from tfllm.model_files import CheckpointError
from tfllm.tokenizers import AutoTokenizer, train_byte_level_bpe


@pytest.fixture
def folder(tmp_path):
    train_byte_level_bpe(["hello world"] * 10, vocab_size=270).save_pretrained(tmp_path)
    return tmp_path


@pytest.mark.parametrize(
    "content, match",
    [
        ('{"model": ' + "[" * 100_000 + "]" * 100_000 + "}",
         r"tokenizer.json: the tokenizers library cannot read it \(recursion limit exceeded"),
        ('{"model": {"type": "Secret"}}', r"tokenizer.json: the tokenizers library cannot read it"),
        ("not json", r"tokenizer.json: the tokenizers library cannot read it \(expected .* at line 1 column 2\)"),
    ],
    ids=["deep", "unknown_model", "not_json"],
)
def test_malformed_tokenizer_json_names_the_file(folder, content, match):
    (folder / "tokenizer.json").write_text(content)
    with pytest.raises(CheckpointError, match=match) as info:
        AutoTokenizer.from_pretrained(folder)
    assert "Secret" not in str(info.value)


def test_malformed_vocab_and_merges_name_the_files(tmp_path):
    (tmp_path / "vocab.json").write_text("[1, 2]")
    (tmp_path / "merges.txt").write_text("#version: 0.2\n")
    with pytest.raises(CheckpointError, match=r"vocab.json \+ .*merges.txt: the tokenizers library cannot read it"):
        AutoTokenizer.from_pretrained(tmp_path)


def test_deep_tokenizer_config_names_the_file(folder):
    (folder / "tokenizer_config.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(CheckpointError, match=r"tokenizer_config.json: JSON nested too deeply to parse"):
        AutoTokenizer.from_pretrained(folder)


def test_tokenizer_json_linked_out_of_the_folder_is_refused(folder, tmp_path_factory):
    outside = tmp_path_factory.mktemp("outside") / "tokenizer.json"
    os.replace(folder / "tokenizer.json", outside)
    os.symlink(outside, folder / "tokenizer.json")
    with pytest.raises(CheckpointError, match=r"tokenizer.json resolves to .*, outside the model folder"):
        AutoTokenizer.from_pretrained(folder)
