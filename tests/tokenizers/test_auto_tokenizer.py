"""AutoTokenizer.from_pretrained gives the ids transformers gives, from both folder layouts."""

import json
import os

import pytest
import transformers

from tfllm.tokenizers import AutoTokenizer, Tokenizer


def _hf_loaders(folders):
    """The reference tokenizers transformers builds for the same files."""
    return {
        "fast_json": lambda: transformers.GPT2TokenizerFast.from_pretrained(folders["json"]),
        "fast_files": lambda: transformers.GPT2TokenizerFast.from_pretrained(folders["files"]),
        "slow_files": lambda: transformers.GPT2Tokenizer.from_pretrained(folders["files"]),
        "auto_json": lambda: transformers.AutoTokenizer.from_pretrained(folders["json"]),
    }


@pytest.fixture(scope="module")
def references(gpt2_folders):
    return {name: load() for name, load in _hf_loaders(gpt2_folders).items()}


@pytest.mark.parametrize("layout", ["json", "files"])
def test_ids_match_transformers(gpt2_folders, references, layout, samples):
    ours = AutoTokenizer.from_pretrained(gpt2_folders[layout])
    assert isinstance(ours, Tokenizer)
    for name, reference in references.items():
        assert len(ours) == len(reference), name
        for sample, text in samples.items():
            expected = reference(text)["input_ids"]
            assert ours.encode(text) == expected, (name, sample)
            assert ours(text)["input_ids"] == expected, (name, sample)
            assert ours.decode(ours.encode(text)) == text, sample
            assert ours.decode(expected) == reference.decode(expected), (name, sample)


def test_special_token_attributes_match_transformers(gpt2_folders, references):
    ours = AutoTokenizer.from_pretrained(gpt2_folders["json"])
    reference = references["fast_json"]
    assert ours.eos_token_id == reference.eos_token_id == ours.bos_token_id
    assert ours.unk_token_id == reference.unk_token_id
    assert ours.pad_token_id is None and reference.pad_token_id is None
    assert ours.model_max_length == reference.model_max_length == 64
    assert ours.vocab_size == len(reference)
    tokens = reference.convert_ids_to_tokens(reference("Hello world")["input_ids"])
    assert ours.convert_ids_to_tokens(ours.encode("Hello world")) == tokens
    assert ours.convert_tokens_to_ids(tokens) == reference.convert_tokens_to_ids(tokens)
    assert ours.convert_tokens_to_ids("no-such-token") == reference.unk_token_id


@pytest.mark.parametrize("layout", ["json", "files"])
def test_add_prefix_space_matches_transformers(trained, tmp_path, layout, gpt2_config, write_folder):
    config = dict(gpt2_config, add_prefix_space=True)
    folder = write_folder(tmp_path, trained.backend_tokenizer, layout, config)
    ours = AutoTokenizer.from_pretrained(folder)
    reference = transformers.GPT2TokenizerFast.from_pretrained(folder)
    for text in ("Hello world", " Hello", "", "a\nb"):
        assert ours.encode(text) == reference(text)["input_ids"], text


def test_add_bos_token_matches_transformers(trained, tmp_path, gpt2_config, write_folder):
    config = dict(gpt2_config, add_bos_token=True)
    folder = write_folder(tmp_path, trained.backend_tokenizer, "files", config)
    ours = AutoTokenizer.from_pretrained(folder)
    assert ours.add_bos_token
    for reference in (
        transformers.GPT2TokenizerFast.from_pretrained(folder),
        transformers.GPT2Tokenizer.from_pretrained(folder),
    ):
        for text in ("Hello world", ""):
            assert ours.encode(text) == reference(text)["input_ids"], text
            assert ours.encode(text)[0] == ours.bos_token_id
        assert ours.encode("Hi", add_special_tokens=False) == reference(
            "Hi", add_special_tokens=False
        )["input_ids"]


def test_special_tokens_map_dicts_and_new_pad_token(trained, tmp_path, write_folder):
    special = {
        "eos_token": {"content": "<|endoftext|>", "lstrip": False, "rstrip": False},
        "pad_token": {"content": "<pad>", "lstrip": False, "rstrip": False, "normalized": False},
    }
    config = {"tokenizer_class": "GPT2Tokenizer", "padding_side": "left"}
    folder = write_folder(tmp_path, trained.backend_tokenizer, "json", config, special)
    ours = AutoTokenizer.from_pretrained(folder)
    reference = transformers.AutoTokenizer.from_pretrained(folder)
    assert ours.pad_token == "<pad>" and ours.pad_token_id == reference.pad_token_id
    assert len(ours) == len(reference) == trained.vocab_size + 1
    assert ours.padding_side == reference.padding_side == "left"
    texts = ["a <pad> b", "much longer text here"]
    ours_batch = ours(texts, padding=True)
    assert ours_batch == dict(reference(texts, padding=True))


def test_added_tokens_decoder_is_read(trained, tmp_path, gpt2_config, write_folder):
    config = dict(
        gpt2_config,
        added_tokens_decoder={
            str(trained.vocab_size): {"content": "<tool>", "special": False, "lstrip": False,
                                      "rstrip": False, "normalized": True, "single_word": False},
        },
    )
    folder = write_folder(tmp_path, trained.backend_tokenizer, "files", config)
    ours = AutoTokenizer.from_pretrained(folder)
    reference = transformers.GPT2TokenizerFast.from_pretrained(folder)
    text = "call <tool> now"
    assert ours.encode(text) == reference(text)["input_ids"]
    assert ours.convert_tokens_to_ids("<tool>") == trained.vocab_size


def test_no_limit_model_max_length_and_overrides(trained, tmp_path, gpt2_config, write_folder):
    config = dict(gpt2_config, model_max_length=int(1e30))
    folder = write_folder(tmp_path, trained.backend_tokenizer, "json", config)
    assert AutoTokenizer.from_pretrained(folder).model_max_length is None
    ours = AutoTokenizer.from_pretrained(folder, padding_side="left", model_max_length=8)
    assert ours.padding_side == "left" and ours.model_max_length == 8


def test_folder_without_config_uses_gpt2_defaults(trained, tmp_path, write_folder):
    folder = write_folder(tmp_path, trained.backend_tokenizer, "files")
    ours = AutoTokenizer.from_pretrained(folder)
    reference = transformers.GPT2TokenizerFast.from_pretrained(folder)
    assert ours.eos_token_id == reference.eos_token_id == 0
    assert ours.unk_token_id == reference.unk_token_id


# === Errors ===


def test_missing_folder(tmp_path):
    missing = str(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="nope"):
        AutoTokenizer.from_pretrained(missing)


def test_folder_without_tokenizer_files(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="tokenizer.json.*vocab.json \\+ merges.txt"):
        AutoTokenizer.from_pretrained(tmp_path)


def test_vocab_json_without_merges(trained, tmp_path, write_folder):
    write_folder(tmp_path, trained.backend_tokenizer, "files")
    os.remove(tmp_path / "merges.txt")
    with pytest.raises(FileNotFoundError, match="merges.txt"):
        AutoTokenizer.from_pretrained(tmp_path)


@pytest.mark.parametrize("name", ["tokenizer.model", "sentencepiece.bpe.model"])
def test_not_yet_supported_files(tmp_path, name):
    (tmp_path / name).write_text("[PAD]\n[UNK]\n")
    with pytest.raises(NotImplementedError, match=name.replace(".", "\\.")):
        AutoTokenizer.from_pretrained(tmp_path)


def test_unknown_keyword_argument(gpt2_folders):
    with pytest.raises(TypeError, match="use_fast"):
        AutoTokenizer.from_pretrained(gpt2_folders["json"], use_fast=True)


def test_bad_padding_side_in_from_pretrained(gpt2_folders):
    with pytest.raises(ValueError, match="argument `padding_side`.*Received: padding_side='up'"):
        AutoTokenizer.from_pretrained(gpt2_folders["json"], padding_side="up")


def test_auto_tokenizer_is_not_instantiated():
    with pytest.raises(TypeError, match="from_pretrained"):
        AutoTokenizer()


def test_config_written_by_transformers_loads(gpt2_folders, tmp_path, samples):
    reference = transformers.GPT2TokenizerFast.from_pretrained(gpt2_folders["files"])
    reference.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "tokenizer_config.json").read_text())
    assert "added_tokens_decoder" in saved
    ours = AutoTokenizer.from_pretrained(tmp_path)
    for text in samples.values():
        assert ours.encode(text) == reference(text)["input_ids"]
