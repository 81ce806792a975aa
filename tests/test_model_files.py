"""A model folder's files may not lead out of it, and deep or malformed JSON is refused naming the file."""

import json
import os
import struct

import numpy as np
import pytest
import safetensors.numpy

from tfllm.checkpoints import CheckpointError, load_config, read_state_dict
from tfllm.checkpoints.sentence_config import sentence_transformers_config
from tfllm.tokenizers import AutoTokenizer, train_byte_level_bpe

SECRET = b"root:x:0:0:root:/root:/bin/bash\n"


def _secret(tmp_path):
    path = tmp_path / "elsewhere" / "passwd"
    path.parent.mkdir()
    path.write_bytes(SECRET * 4)
    return path


def _assert_no_secret(message):
    assert "root:x" not in message
    assert str(struct.unpack("<Q", SECRET[:8])[0]) not in message  # the old message's "header length"


@pytest.mark.parametrize("target", ["elsewhere", "/etc/passwd"])
def test_weights_linked_out_of_the_folder_are_refused(tmp_path, target):
    if target == "/etc/passwd" and not os.path.isfile(target):
        pytest.skip("no /etc/passwd here")
    target = _secret(tmp_path) if target == "elsewhere" else target
    folder = tmp_path / "model"
    folder.mkdir()
    os.symlink(target, folder / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"model.safetensors resolves to .*, outside the model folder") as info:
        read_state_dict(folder)
    _assert_no_secret(str(info.value))


def test_config_and_subfolders_linked_out_are_refused(tmp_path):
    secret = _secret(tmp_path)
    folder = tmp_path / "model"
    folder.mkdir()
    os.symlink(secret, folder / "config.json")
    with pytest.raises(CheckpointError, match="config.json resolves to"):
        load_config(folder)
    (folder / "modules.json").write_text(json.dumps([{"type": "sentence_transformers.models.Pooling",
                                                       "path": "1_Pooling"}]))
    os.symlink(secret.parent, folder / "1_Pooling")  # a linked folder leads out just as well
    (secret.parent / "config.json").write_text("{}")
    with pytest.raises(CheckpointError, match="1_Pooling/config.json resolves to"):
        sentence_transformers_config(str(folder))


def _hub_cache_snapshot(tmp_path, files):
    """Lays `files` (name -> bytes) out as huggingface_hub's cache does: snapshot links to ../../blobs/."""
    repository = tmp_path / "hub" / "models--org--tiny"
    snapshot = repository / "snapshots" / "0123abcd"
    (repository / "blobs").mkdir(parents=True)
    snapshot.mkdir(parents=True)
    for index, (name, content) in enumerate(files.items()):
        (repository / "blobs" / f"blob{index}").write_bytes(content)
        os.symlink(f"../../blobs/blob{index}", snapshot / name)
    return snapshot


def test_hub_cache_snapshot_loads(tmp_path):
    weights = tmp_path / "weights.safetensors"
    safetensors.numpy.save_file({"w": np.arange(3, dtype=np.float32)}, weights)
    folder = tmp_path / "tokenizer"
    train_byte_level_bpe(["hello world"] * 10, vocab_size=270).save_pretrained(folder)
    files = {"config.json": b'{"model_type": "gpt2"}', "model.safetensors": weights.read_bytes()}
    files.update({name: (folder / name).read_bytes() for name in os.listdir(folder)})
    snapshot = _hub_cache_snapshot(tmp_path, files)
    assert load_config(snapshot) == {"model_type": "gpt2"}
    np.testing.assert_array_equal(read_state_dict(snapshot)["w"], np.arange(3, dtype=np.float32))
    tokenizer = AutoTokenizer.from_pretrained(snapshot)
    assert tokenizer.decode(tokenizer.encode("hello world")) == "hello world"


def test_hub_cache_link_outside_blobs_is_refused(tmp_path):
    snapshot = _hub_cache_snapshot(tmp_path, {"config.json": b"{}"})
    os.symlink(_secret(tmp_path), snapshot / "model.safetensors")
    with pytest.raises(CheckpointError, match="outside the model folder"):
        read_state_dict(snapshot)


def test_links_inside_the_folder_load(tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "config.json").write_text('{"a": 1}')
    os.symlink("real/config.json", tmp_path / "config.json")
    assert load_config(tmp_path) == {"a": 1}


def test_deep_json_is_refused_naming_the_file(tmp_path):
    (tmp_path / "config.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(CheckpointError, match=r"config.json: JSON nested too deeply to parse"):
        load_config(tmp_path)
    safetensors.numpy.save_file({"w": np.ones(2, np.float32)}, tmp_path / "one.safetensors")
    (tmp_path / "model.safetensors.index.json").write_text('{"weight_map": ' + "[" * 100_000 + "]" * 100_000 + "}")
    with pytest.raises(CheckpointError, match=r"model.safetensors.index.json: JSON nested too deeply"):
        read_state_dict(tmp_path)


def test_json_errors_give_positions_not_bytes(tmp_path):
    (tmp_path / "config.json").write_bytes(b'{"a": "\xc3\x28"}')
    with pytest.raises(CheckpointError, match=r"config.json: not UTF-8 text \(invalid byte at offset 7\)"):
        load_config(tmp_path)
    (tmp_path / "config.json").write_text('{"a": secret}')
    with pytest.raises(CheckpointError, match=r"config.json: not valid JSON \(Expecting value at line 1, column 7\)"):
        load_config(tmp_path)
