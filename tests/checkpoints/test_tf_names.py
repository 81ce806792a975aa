"""TF weight names and layouts become PyTorch's, as transformers' converter does it."""

import h5py
import numpy as np
import pytest
import safetensors.numpy

from checkpoint_testing import BERT_KWARGS, torch_state_dict
from tfllm.checkpoints import CheckpointError, read_state_dict


def _save_tf_safetensors(folder, tensors):
    safetensors.numpy.save_file(tensors, folder / "model.safetensors", metadata={"format": "tf"})


def test_names_and_layouts(tmp_path):
    rng = np.random.default_rng(0)
    tensors = {
        "model/encoder/layer_._3/dense/kernel:0": rng.standard_normal((4, 6)).astype(np.float32),
        "model/encoder/layer_._3/conv1d/kernel:0": rng.standard_normal((3, 4, 6)).astype(np.float32),
        "model/encoder/layer_._3/conv2d/kernel:0": rng.standard_normal((3, 5, 4, 6)).astype(np.float32),
        "model/c_fc/bias:0": rng.standard_normal((1, 6)).astype(np.float32),
        "model/norm/gamma:0": np.ones(6, np.float32),
        "model/norm/beta:0": np.zeros(6, np.float32),
        "model/wte/embeddings:0": np.ones((5, 6), np.float32),
        "mlm___cls/predictions/bias:0": np.zeros(5, np.float32),
        "final_logits_bias:0": np.zeros((1, 5), np.float32),
    }
    _save_tf_safetensors(tmp_path, tensors)
    state_dict = read_state_dict(tmp_path)
    assert sorted(state_dict) == [
        "cls.predictions.bias",
        "final_logits_bias",
        "model.c_fc.bias",
        "model.encoder.layer.3.conv1d.weight",
        "model.encoder.layer.3.conv2d.weight",
        "model.encoder.layer.3.dense.weight",
        "model.norm.bias",
        "model.norm.weight",
        "model.wte.weight",
    ]
    dense = tensors["model/encoder/layer_._3/dense/kernel:0"]
    np.testing.assert_array_equal(state_dict["model.encoder.layer.3.dense.weight"], dense.T)
    conv1d = tensors["model/encoder/layer_._3/conv1d/kernel:0"]  # (width, in, out) -> (out, in, width)
    np.testing.assert_array_equal(state_dict["model.encoder.layer.3.conv1d.weight"], conv1d.transpose(2, 1, 0))
    conv2d = tensors["model/encoder/layer_._3/conv2d/kernel:0"]  # (h, w, in, out) -> (out, in, h, w)
    np.testing.assert_array_equal(state_dict["model.encoder.layer.3.conv2d.weight"], conv2d.transpose(3, 2, 0, 1))
    assert state_dict["model.c_fc.bias"].shape == (6,)
    assert state_dict["final_logits_bias"].shape == (1, 5)  # a (1, vocab) buffer in PyTorch too


@pytest.mark.parametrize(
    "tensors, match",
    [
        ({"m/a/kernel:0": np.ones((2, 2), np.float32), "m/a/weight:0": np.ones((2, 2), np.float32)},
         r"`m/a/(kernel|weight):0` and `m/a/(kernel|weight):0` both map to PyTorch key `m\.a\.weight`"),
        ({"m/a/kernel:0": np.ones(3, np.float32)}, r"kernel `m/a/kernel:0` has rank 1"),
    ],
    ids=["name_clash", "kernel_rank"],
)
def test_conversion_errors_name_the_weights(tmp_path, tensors, match):
    _save_tf_safetensors(tmp_path, tensors)
    with pytest.raises(CheckpointError, match=match) as info:
        read_state_dict(tmp_path)
    assert "model.safetensors" in str(info.value)


def test_names_with_slashes_are_tf_even_without_metadata(tmp_path):
    safetensors.numpy.save_file({"m/ln/gamma:0": np.ones(2, np.float32)}, tmp_path / "model.safetensors")
    assert list(read_state_dict(tmp_path)) == ["m.ln.weight"]


def test_flax_safetensors_are_refused(tmp_path):
    safetensors.numpy.save_file({"a": np.ones(2, np.float32)}, tmp_path / "model.safetensors", metadata={"format": "flax"})
    with pytest.raises(CheckpointError, match="model.safetensors: Flax"):
        read_state_dict(tmp_path)


def _keras_h5(path, groups):
    """A Keras 2 weights file: root `layer_names`, each group with `weight_names`."""
    with h5py.File(path, "w") as handle:
        handle.attrs["layer_names"] = [name.encode() for name in groups]
        for group_name, weights in groups.items():
            group = handle.create_group(group_name)
            group.attrs["weight_names"] = [name.encode() for name in weights]
            for name, value in weights.items():
                group[name] = value


def test_h5_tied_duplicates_must_agree(tmp_path):
    shared = {"scope/bert/emb/weight:0": np.ones((2, 2), np.float32)}
    _keras_h5(tmp_path / "tf_model.h5", {"bert": shared, "mlm___cls": {**shared}})
    assert list(read_state_dict(tmp_path)) == ["bert.emb.weight"]
    _keras_h5(tmp_path / "tf_model.h5", {"bert": shared, "head": {"scope/bert/emb/weight:0": np.zeros((2, 2))}})
    with pytest.raises(CheckpointError, match=r"tf_model.h5: weight `bert/emb/weight:0` appears twice with different"):
        read_state_dict(tmp_path)


@pytest.mark.parametrize("save_kwargs", [dict(), dict(safe_serialization=True)], ids=["tf_h5", "tf_safetensors"])
def test_tf_bert_masked_lm_head_scope_and_tied_embeddings(tmp_path, save_kwargs):
    import torch
    from transformers import BertConfig, BertForMaskedLM, TFBertForMaskedLM
    from transformers.modeling_tf_pytorch_utils import load_pytorch_state_dict_in_tf2_model

    torch.manual_seed(0)
    config = BertConfig(**BERT_KWARGS)
    pt_model = BertForMaskedLM(config)
    tf_model = TFBertForMaskedLM(config)
    tf_model(tf_model.dummy_inputs)
    expected = torch_state_dict(pt_model)
    load_pytorch_state_dict_in_tf2_model(tf_model, expected, tf_inputs=False, allow_missing_keys=True)
    tf_model.save_pretrained(tmp_path, **save_kwargs)
    state_dict = read_state_dict(tmp_path)
    # The decoder is tied: its weight is the word embeddings, its bias `cls.predictions.bias`.
    tied = {"cls.predictions.decoder.weight", "cls.predictions.decoder.bias", "bert.embeddings.position_ids"}
    assert sorted(state_dict) == sorted(set(expected) - tied)
    for key, value in state_dict.items():
        np.testing.assert_array_equal(value, expected[key], err_msg=key)
