"""save_pretrained writes a folder that transformers and tfllm load into the same tokenizer."""

import json
import os

import pytest
import transformers

from tfllm.tokenizers import AutoTokenizer, Tokenizer


@pytest.fixture(name="saved")
def saved_fixture(gpt2_folders, tmp_path):
    ours = AutoTokenizer.from_pretrained(gpt2_folders["files"], padding_side="left")
    ours.save_pretrained(tmp_path / "saved")
    return ours, str(tmp_path / "saved")


def test_writes_the_three_files_and_nothing_else(saved):
    _, folder = saved
    assert sorted(os.listdir(folder)) == [
        "special_tokens_map.json", "tokenizer.json", "tokenizer_config.json"
    ]
    config = json.loads(open(os.path.join(folder, "tokenizer_config.json")).read())
    assert config["eos_token"] == "<|endoftext|>" and config["padding_side"] == "left"
    assert config["model_max_length"] == 64 and config["add_prefix_space"] is False


def test_transformers_loads_our_save(saved, samples):
    ours, folder = saved
    reference = transformers.AutoTokenizer.from_pretrained(folder)
    assert len(reference) == len(ours)
    assert reference.padding_side == "left" and reference.model_max_length == 64
    assert (reference.bos_token_id, reference.eos_token_id, reference.unk_token_id) == (
        ours.bos_token_id, ours.eos_token_id, ours.unk_token_id
    )
    for text in samples.values():
        assert reference(text)["input_ids"] == ours.encode(text)
    reference.pad_token = reference.eos_token
    texts = list(samples.values())
    assert dict(reference(texts, padding=True)) == ours(texts, padding=True)


def test_tfllm_loads_our_save(saved, samples):
    ours, folder = saved
    loaded = AutoTokenizer.from_pretrained(folder)
    assert isinstance(loaded, Tokenizer)
    assert loaded.get_config() == ours.get_config()
    for text in samples.values():
        assert loaded.encode(text) == ours.encode(text)


def test_trained_tokenizer_round_trip(trained, tmp_path, samples):
    trained.save_pretrained(tmp_path)
    reference = transformers.AutoTokenizer.from_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    assert loaded.unk_token is None and reference.unk_token is None
    assert loaded.model_max_length is None
    for text in samples.values():
        assert reference(text)["input_ids"] == loaded.encode(text) == trained.encode(text)


@pytest.mark.parametrize("add_prefix_space", [True, False])
def test_add_prefix_space_and_add_bos_token_survive(
    trained, tmp_path, gpt2_config, write_folder, add_prefix_space
):
    config = dict(gpt2_config, add_prefix_space=add_prefix_space, add_bos_token=True)
    source = write_folder(tmp_path / "src", trained.backend_tokenizer, "files", config)
    ours = AutoTokenizer.from_pretrained(source)
    ours.save_pretrained(tmp_path / "out")
    reference = transformers.AutoTokenizer.from_pretrained(tmp_path / "out")
    loaded = AutoTokenizer.from_pretrained(tmp_path / "out")
    for text in ("Hello world", "", " two"):
        assert reference(text)["input_ids"] == loaded.encode(text) == ours.encode(text)
    assert ours.encode("Hello")[0] == ours.bos_token_id


def test_save_overwrites_and_leaves_no_temp_files(trained, tmp_path):
    (tmp_path / "tokenizer.json").write_text("stale")
    trained.save_pretrained(tmp_path)
    trained.save_pretrained(tmp_path)
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".")]  # no staging left
    assert AutoTokenizer.from_pretrained(tmp_path).vocab_size == trained.vocab_size


def test_saved_files_are_not_private(saved):
    _, folder = saved
    umask = os.umask(0)
    os.umask(umask)
    for name in os.listdir(folder):
        assert os.stat(os.path.join(folder, name)).st_mode & 0o777 == 0o666 & ~umask, name  # not mkstemp's 0600
