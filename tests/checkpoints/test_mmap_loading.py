"""Memory-mapped safetensors loading: views instead of reads, exact values, corrupt files still refused."""

import json
import struct

import keras
import ml_dtypes
import numpy as np
import pytest
import safetensors.numpy

import tfllm
from tfllm.checkpoints import (
    TRANSPOSE,
    CheckpointError,
    WeightEntry,
    compose,
    concat,
    load_weights,
    open_state_dict,
    read_state_dict,
)
from tfllm.checkpoints import state_dict as state_dict_module
from tfllm.checkpoints import weights as weights_module
from tfllm.checkpoints.safetensors_io import is_mapped, release_mapped_pages
from tfllm.layers.keras_internals import deferred_initializers, run_deferred_initializers

from checkpoint_testing import GPT2_KWARGS


def _random(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _save(folder, tensors):
    folder.mkdir(exist_ok=True)
    safetensors.numpy.save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})
    return folder


def test_open_state_dict_maps_without_reading(tmp_path, monkeypatch):
    tensors = {"a": _random(300, 40), "b": _random(7, seed=1)}
    folder = _save(tmp_path / "ckpt", tensors)
    monkeypatch.setattr(state_dict_module, "read_safetensors", None)  # the eager reader must not run
    mapped = open_state_dict(folder)
    assert all(is_mapped(array) for array in mapped.values())
    assert not any(array.flags.writeable for array in mapped.values())
    for key, value in tensors.items():
        np.testing.assert_array_equal(mapped[key], value)


def test_release_drops_pages_but_keeps_values(tmp_path):
    value = _random(4096, 16)  # 256 KiB: whole pages inside the tensor
    mapped = open_state_dict(_save(tmp_path / "ckpt", {"a": value}))["a"]
    assert release_mapped_pages(mapped)
    np.testing.assert_array_equal(mapped, value)  # paged back in from the file
    assert not release_mapped_pages(value.copy())  # an ordinary array is left alone
    assert not is_mapped(value)


def test_half_precision_stays_stored_and_loads_exactly(tmp_path):
    wide = _random(6, 4)
    folder = _save(
        tmp_path / "ckpt", {"h": wide.astype(np.float16), "b": wide.astype(ml_dtypes.bfloat16)}
    )
    mapped = open_state_dict(folder)
    assert mapped["h"].dtype == np.float16 and mapped["b"].dtype == ml_dtypes.bfloat16
    eager = read_state_dict(folder)
    entries = [WeightEntry(keras.Variable(np.zeros((4, 6), np.float32)), ("h",), TRANSPOSE),
               WeightEntry(keras.Variable(np.zeros((6, 4), np.float32)), ("b",))]
    load_weights(entries, mapped, source="test")
    np.testing.assert_array_equal(entries[0].variable.numpy(), eager["h"].T)
    np.testing.assert_array_equal(entries[1].variable.numpy(), eager["b"])


def test_chunked_assignment_is_exact_and_variables_own_their_memory(tmp_path, monkeypatch):
    monkeypatch.setattr(weights_module, "_CHUNK_BYTES", 256)  # many slices per tensor
    tensors = {"w": _random(50, 12), "lin": _random(9, 20, seed=1), "q": _random(3, 5, seed=2),
               "k": _random(2, 5, seed=3)}
    folder = _save(tmp_path / "ckpt", tensors)
    entries = [
        WeightEntry(keras.Variable(np.zeros((50, 12), np.float32)), ("w",)),
        WeightEntry(keras.Variable(np.zeros((20, 9), np.float32)), ("lin",), TRANSPOSE),
        WeightEntry(keras.Variable(np.zeros((5, 5), np.float32)), ("q", "k"), compose(concat(0, [3, 2]), TRANSPOSE)),
    ]
    load_weights(entries, open_state_dict(folder), source=str(folder))
    np.testing.assert_array_equal(entries[0].variable.numpy(), tensors["w"])
    np.testing.assert_array_equal(entries[1].variable.numpy(), tensors["lin"].T)
    np.testing.assert_array_equal(entries[2].variable.numpy(), np.concatenate([tensors["q"], tensors["k"]]).T)
    entries[0].variable.assign_add(np.ones((50, 12), np.float32))  # would fault on a read-only mapping
    np.testing.assert_array_equal(safetensors.numpy.load_file(folder / "model.safetensors")["w"], tensors["w"])


def test_shape_mismatch_from_a_mapped_file_assigns_nothing(tmp_path):
    folder = _save(tmp_path / "ckpt", {"a": _random(4, 3), "b": _random(5, seed=1)})
    entries = [WeightEntry(keras.Variable(np.zeros((4, 3), np.float32)), ("a",)),
               WeightEntry(keras.Variable(np.zeros((6,), np.float32)), ("b",))]
    with pytest.raises(CheckpointError, match=r"`b` \(5,\)"):
        load_weights(entries, open_state_dict(folder), source=str(folder))
    assert not entries[0].variable.numpy().any()


def _write_corrupt(folder):
    """A file whose first tensor is fine and whose second runs past the end of the data."""
    header = {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
              "b": {"dtype": "F32", "shape": [4], "data_offsets": [8, 24]}}
    raw = json.dumps(header).encode()
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(struct.pack("<Q", len(raw)) + raw + b"\0" * 12)


def test_corrupt_file_is_refused_before_any_tensor_is_handed_out(tmp_path):
    _write_corrupt(tmp_path / "ckpt")
    with pytest.raises(CheckpointError, match="`b` ends at data byte 24"):
        open_state_dict(tmp_path / "ckpt")


@pytest.fixture(scope="module")
def gpt2_folder(tmp_path_factory):
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("gpt2")
    GPT2LMHeadModel(GPT2Config(**GPT2_KWARGS)).save_pretrained(folder)
    return folder


def test_from_pretrained_uses_the_mapped_path(gpt2_folder, monkeypatch):
    monkeypatch.setattr(state_dict_module, "read_safetensors", None)  # no whole-file read
    model = tfllm.AutoModelForCausalLM.from_pretrained(gpt2_folder)
    expected = safetensors.numpy.load_file(gpt2_folder / "model.safetensors")["transformer.wte.weight"]
    np.testing.assert_array_equal(model.backbone.token_embedding.embeddings.numpy(), expected)


def test_from_pretrained_refuses_a_truncated_file(gpt2_folder, tmp_path):
    folder = tmp_path / "cut"
    folder.mkdir()
    (folder / "config.json").write_bytes((gpt2_folder / "config.json").read_bytes())
    (folder / "model.safetensors").write_bytes((gpt2_folder / "model.safetensors").read_bytes()[:-100])
    with pytest.raises(CheckpointError, match="truncated"):
        tfllm.AutoModelForCausalLM.from_pretrained(folder)


def test_deferred_initializers_start_at_zero_and_unloaded_variables_get_their_initializer():
    layer = keras.layers.Dense(8, kernel_initializer="ones", bias_initializer="ones")
    with deferred_initializers() as created:
        layer.build((None, 4))
    assert len(created) == 2 and not layer.kernel.numpy().any()
    run_deferred_initializers(created, loaded=[layer.kernel])
    assert not layer.kernel.numpy().any()  # "loaded": left to the checkpoint
    np.testing.assert_array_equal(layer.bias.numpy(), np.ones(8))
    outside = keras.Variable(initializer="ones", shape=(2,))  # the patch is gone after the block
    np.testing.assert_array_equal(outside.numpy(), np.ones(2))
