"""load_config errors name the folder or file."""

import pytest

from tfllm.checkpoints import CheckpointError, load_config


def test_reads_config(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "gpt2", "n_layer": 2}')
    assert load_config(tmp_path) == {"model_type": "gpt2", "n_layer": 2}


def test_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="Model folder not found: .*nowhere"):
        load_config(tmp_path / "nowhere")


def test_missing_config(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_config(tmp_path)


@pytest.mark.parametrize("text, match", [('{"a": ', "not valid JSON"), ("[1, 2]", "expected a JSON object")])
def test_bad_config(tmp_path, text, match):
    (tmp_path / "config.json").write_text(text)
    with pytest.raises(CheckpointError, match=match) as info:
        load_config(tmp_path)
    assert str(tmp_path / "config.json") in str(info.value)
