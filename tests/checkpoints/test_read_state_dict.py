"""read_state_dict against transformers' own PyTorch and TF checkpoints."""

import json
import os

import numpy as np
import pytest

from checkpoint_testing import assert_state_dicts_equal, torch_state_dict, without_pt_only
from tfllm.checkpoints import CheckpointError, find_weight_files, read_state_dict


@pytest.mark.parametrize(
    "save_kwargs, expected_format, expected_index",
    [
        (dict(), "safetensors", None),
        (dict(safe_serialization=False), "pytorch_bin", None),
        (dict(max_shard_size="20KB"), "safetensors", "model.safetensors.index.json"),
        (dict(max_shard_size="20KB", safe_serialization=False), "pytorch_bin", "pytorch_model.bin.index.json"),
    ],
    ids=["safetensors", "pytorch_bin", "sharded_safetensors", "sharded_pytorch_bin"],
)
def test_pytorch_gpt2_checkpoints(gpt2_pt, tmp_path, save_kwargs, expected_format, expected_index):
    gpt2_pt.save_pretrained(tmp_path, **save_kwargs)
    weight_format, files = find_weight_files(tmp_path)
    assert weight_format == expected_format
    if expected_index:
        assert os.path.isfile(tmp_path / expected_index) and len(files) > 1
    assert_state_dicts_equal(without_pt_only(read_state_dict(tmp_path)), without_pt_only(torch_state_dict(gpt2_pt)))


@pytest.mark.parametrize(
    "save_kwargs, expected_format",
    [
        (dict(), "tf_h5"),
        (dict(safe_serialization=True), "safetensors"),
        (dict(max_shard_size="20KB"), "tf_h5"),
        (dict(safe_serialization=True, max_shard_size="20KB"), "safetensors"),
    ],
    ids=["tf_h5", "tf_safetensors", "sharded_tf_h5", "sharded_tf_safetensors"],
)
def test_tf_gpt2_checkpoints_convert_to_pytorch(gpt2_pt, gpt2_tf, tmp_path, save_kwargs, expected_format):
    gpt2_tf.save_pretrained(tmp_path, **save_kwargs)
    assert find_weight_files(tmp_path)[0] == expected_format
    state_dict = read_state_dict(tmp_path)
    assert "transformer.h.0.attn.c_attn.weight" in state_dict
    assert_state_dicts_equal(state_dict, without_pt_only(torch_state_dict(gpt2_pt)))


@pytest.mark.parametrize("save_kwargs", [dict(), dict(safe_serialization=True)], ids=["tf_h5", "tf_safetensors"])
def test_tf_bert_kernels_are_transposed(bert_pair, tmp_path, save_kwargs):
    pt_model, tf_model = bert_pair
    tf_model.save_pretrained(tmp_path, **save_kwargs)
    state_dict = read_state_dict(tmp_path)
    # TF base models keep their main layer's scope (`bert/`); PyTorch base models have no prefix.
    expected = {"bert." + k: v for k, v in without_pt_only(torch_state_dict(pt_model)).items()}
    assert_state_dicts_equal(state_dict, expected)
    assert state_dict["bert.encoder.layer.0.intermediate.dense.weight"].shape == (37, 32)


def test_prefers_safetensors_over_pytorch_bin(gpt2_pt, tmp_path):
    gpt2_pt.save_pretrained(tmp_path, safe_serialization=False)
    gpt2_pt.save_pretrained(tmp_path)
    assert find_weight_files(tmp_path) == ("safetensors", [str(tmp_path / "model.safetensors")])


def test_bfloat16_and_float16_safetensors_widen_to_float32(tmp_path):
    import safetensors.torch
    import torch

    tensors = {
        "bf16": torch.randn(3, 5).to(torch.bfloat16),
        "f16": torch.randn(4).to(torch.float16),
        "ids": torch.arange(6, dtype=torch.int64).reshape(2, 3),
    }
    safetensors.torch.save_file(tensors, tmp_path / "model.safetensors", metadata={"format": "pt"})
    state_dict = read_state_dict(tmp_path)
    for key in ("bf16", "f16"):
        assert state_dict[key].dtype == np.float32
        np.testing.assert_array_equal(state_dict[key], tensors[key].float().numpy())
    assert state_dict["ids"].dtype == np.int64
    np.testing.assert_array_equal(state_dict["ids"], tensors["ids"].numpy())


def test_pytorch_bin_views_dtypes_and_shared_storage(tmp_path):
    import torch

    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    tensors = {
        "transposed": base.t(),  # non-contiguous: strides (1, 6)
        "slice": base[1:, 2:4],  # storage offset 8
        "same_storage": base,
        "half": base.half(),
        "bf16": (base / 7).bfloat16(),
        "double": base.double(),
        "ids": torch.arange(5),
        "mask": torch.tensor([True, False, True]),
        "scalar": torch.tensor(3.5),
        "empty": torch.zeros(0, 3),
    }
    torch.save(tensors, tmp_path / "pytorch_model.bin")
    state_dict = read_state_dict(tmp_path)
    assert sorted(state_dict) == sorted(tensors)
    for key, tensor in tensors.items():
        expected = tensor.float().numpy() if tensor.is_floating_point() else tensor.numpy()
        assert state_dict[key].dtype == expected.dtype, key
        np.testing.assert_array_equal(state_dict[key], expected, err_msg=key)
        assert state_dict[key].flags.c_contiguous and state_dict[key].flags.owndata, key


def test_missing_shard_is_named(gpt2_pt, tmp_path):
    gpt2_pt.save_pretrained(tmp_path, max_shard_size="20KB")
    os.remove(tmp_path / "model-00002-of-00008.safetensors")
    with pytest.raises(CheckpointError, match="model-00002-of-00008.safetensors"):
        read_state_dict(tmp_path)


def test_index_key_missing_from_its_shard_is_named(gpt2_pt, tmp_path):
    gpt2_pt.save_pretrained(tmp_path, max_shard_size="20KB", safe_serialization=False)
    index_path = tmp_path / "pytorch_model.bin.index.json"
    index = json.loads(index_path.read_text())
    index["weight_map"]["transformer.h.9.ln_1.weight"] = "pytorch_model-00001-of-00008.bin"
    index_path.write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match=r"transformer\.h\.9\.ln_1\.weight"):
        read_state_dict(tmp_path)


@pytest.mark.parametrize(
    "weight_map, match",
    [("not a map", "weight_map"), ({"a": "../outside.safetensors"}, "not a plain file name")],
)
def test_invalid_index_is_refused(tmp_path, weight_map, match):
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    with pytest.raises(CheckpointError, match=match):
        find_weight_files(tmp_path)


def test_no_weights_lists_the_names_looked_for(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        read_state_dict(tmp_path)
    message = str(info.value)
    assert str(tmp_path) in message
    for name in ("model.safetensors", "tf_model.h5", "pytorch_model.bin.index.json", "pytorch_model.bin"):
        assert name in message


def test_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        find_weight_files(tmp_path / "nowhere")
