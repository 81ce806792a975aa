"""save_folder writes a folder transformers can load, and replaces an old one atomically."""

import json
import os

import numpy as np
import pytest
import safetensors.numpy

from checkpoint_testing import torch_state_dict, without_pt_only
from tfllm.checkpoints import load_config, read_state_dict, save_folder


def test_round_trip_and_extra_files(tmp_path):
    base = np.arange(12, dtype=np.float32).reshape(3, 4)
    halves = np.split(base, 2, axis=1)  # views sharing memory, and non-contiguous
    state_dict = {"t": base.T, "left": halves[0], "right": halves[1], "ids": np.arange(3)}
    folder = tmp_path / "out"
    save_folder(
        folder,
        config={"b": 1, "a": [1, 2]},
        state_dict=state_dict,
        files={"tokenizer.json": '{"x": 1}', "sub/raw.bin": b"\x00\x01"},
    )
    assert (folder / "config.json").read_text() == json.dumps({"a": [1, 2], "b": 1}, indent=2, sort_keys=True) + "\n"
    assert load_config(folder) == {"a": [1, 2], "b": 1}
    assert (folder / "tokenizer.json").read_text() == '{"x": 1}'
    assert (folder / "sub" / "raw.bin").read_bytes() == b"\x00\x01"
    loaded = read_state_dict(folder)
    for key, value in state_dict.items():
        np.testing.assert_array_equal(loaded[key], value)
    with open(folder / "model.safetensors", "rb") as handle:
        assert b'"__metadata__":{"format":"pt"}' in handle.read(1000)
    assert sorted(os.listdir(tmp_path)) == ["out"]


def test_transformers_loads_the_folder(gpt2_pt, tmp_path):
    from transformers import GPT2LMHeadModel

    gpt2_pt.save_pretrained(tmp_path / "source")
    state_dict = read_state_dict(tmp_path / "source")
    save_folder(tmp_path / "copy", config=load_config(tmp_path / "source"), state_dict=state_dict)
    reloaded = GPT2LMHeadModel.from_pretrained(tmp_path / "copy")
    expected = without_pt_only(torch_state_dict(gpt2_pt))
    actual = torch_state_dict(reloaded)
    for key, value in expected.items():
        np.testing.assert_array_equal(actual[key], value, err_msg=key)


def test_replaces_an_existing_folder(tmp_path):
    folder = tmp_path / "model"
    save_folder(folder, config={"v": 1}, state_dict={"w": np.zeros(2, np.float32)}, files={"old.txt": "x"})
    save_folder(folder, config={"v": 2}, state_dict={"w": np.ones(2, np.float32)})
    assert load_config(folder) == {"v": 2}
    assert not (folder / "old.txt").exists()
    assert sorted(os.listdir(tmp_path)) == ["model"]


def test_failure_leaves_the_old_folder_untouched(tmp_path, monkeypatch):
    folder = tmp_path / "model"
    save_folder(folder, config={"v": 1}, state_dict={"w": np.zeros(2, np.float32)}, metadata={"format": "pt", "k": "v"})
    before = {name: (folder / name).read_bytes() for name in os.listdir(folder)}

    def failing_writer(tensors, path, metadata=None):
        with open(path, "wb") as handle:
            handle.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.numpy, "save_file", failing_writer)
    with pytest.raises(OSError, match="disk full"):
        save_folder(folder, config={"v": 2}, state_dict={"w": np.ones(2, np.float32)})
    assert {name: (folder / name).read_bytes() for name in os.listdir(folder)} == before
    assert sorted(os.listdir(tmp_path)) == ["model"]
    with pytest.raises(OSError, match="disk full"):
        save_folder(tmp_path / "new", config={}, state_dict={})
    assert sorted(os.listdir(tmp_path)) == ["model"]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(config=[1]), "argument `config`. Expected a dict"),
        (dict(state_dict=[1]), "argument `state_dict`. Expected a dict"),
        (dict(files={"../escape.txt": "x"}), "argument `files`. Expected relative file names"),
        (dict(files={"/abs.txt": "x"}), "argument `files`"),
        (dict(files={"config.json": "{}"}), "argument `files`"),
        (dict(files={"a.txt": 3}), r"argument `files\['a.txt'\]`. Expected str or bytes"),
    ],
)
def test_argument_errors(tmp_path, kwargs, match):
    arguments = dict(config={}, state_dict={}) | kwargs
    with pytest.raises(ValueError, match=match):
        save_folder(tmp_path / "model", **arguments)
    assert os.listdir(tmp_path) == []


def test_files_are_readable_by_others_as_umask_allows(tmp_path):
    old = os.umask(0o022)
    try:
        save_folder(tmp_path / "out", config={"a": 1}, state_dict={"w": np.zeros(2, np.float32)},
                    files={"tokenizer.json": "{}"})
    finally:
        os.umask(old)
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        assert oct(os.stat(tmp_path / "out" / name).st_mode & 0o777) == "0o644", name
