"""Hostile safetensors files: overlapping or gapped data offsets, relabelled dtypes, deep JSON, odd lengths.

The offsets rule is the `safetensors` library's (checked against it in the test): in offset order the
tensors' bytes tile the data exactly. Both the eager and the memory-mapped reader apply it.
"""

import json
import struct

import keras
import numpy as np
import pytest
import safetensors.numpy

from tfllm.checkpoints import CheckpointError, WeightEntry, load_weights, open_state_dict, read_state_dict


def _write(path, header, data):
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)


def _f32(offsets, shape=(2,)):
    return {"dtype": "F32", "shape": list(shape), "data_offsets": list(offsets)}


@pytest.mark.parametrize(
    "header, data_bytes, match",
    [
        ({"a": _f32([0, 8]), "b": _f32([0, 8])}, 8, r"invalid offset for tensor `b`: its data starts at byte 0, but"),
        ({"a": _f32([0, 8]), "b": _f32([4, 12])}, 12, r"invalid offset for tensor `b`: its data starts at byte 4"),
        ({"a": _f32([0, 4], (1,)), "b": _f32([8, 12], (1,))}, 12, r"invalid offset for tensor `b`"),
        ({"a": _f32([4, 12])}, 12, r"invalid offset for tensor `a`: its data starts at byte 4"),
        ({"a": _f32([0, 8])}, 12, r"its tensors cover 8 of its 12 data bytes"),
    ],
    ids=["full_overlap", "partial_overlap", "gap", "not_from_zero", "trailing_bytes"],
)
@pytest.mark.parametrize("reader", [read_state_dict, open_state_dict], ids=["eager", "mapped"])
def test_offsets_must_tile_the_data(tmp_path, header, data_bytes, match, reader):
    path = tmp_path / "model.safetensors"
    _write(path, header, bytes(data_bytes))
    with pytest.raises(Exception, match="invalid offset|not fully covered"):
        safetensors.numpy.load_file(path)  # the reference refuses it too
    with pytest.raises(CheckpointError, match=match) as info:
        reader(tmp_path)
    assert str(path) in str(info.value)


def test_offsets_in_any_header_order_load(tmp_path):
    header = {"b": _f32([8, 16]), "a": _f32([0, 8])}
    _write(tmp_path / "model.safetensors", header, np.arange(4, dtype="<f4").tobytes())
    expected = safetensors.numpy.load_file(tmp_path / "model.safetensors")
    state_dict = read_state_dict(tmp_path)
    for key in ("a", "b"):
        np.testing.assert_array_equal(state_dict[key], expected[key])


def _relabelled(tmp_path, dtype):
    """A model.safetensors whose float32 tensor `w` is relabelled `dtype` (same byte size)."""
    values = np.linspace(-1, 1, 4, dtype=np.float32).reshape(2, 2)
    itemsize = 4 if dtype.endswith("32") else 1
    shape = [2, 2] if itemsize == 4 else [16]
    _write(tmp_path / "model.safetensors", {"w": {"dtype": dtype, "shape": shape, "data_offsets": [0, 16]}},
           values.tobytes())


@pytest.mark.parametrize("dtype", ["I32", "U32", "U8", "BOOL"])
@pytest.mark.parametrize("reader", [read_state_dict, open_state_dict], ids=["eager", "mapped"])
def test_integer_dtype_for_a_float_weight_is_refused(tmp_path, dtype, reader):
    _relabelled(tmp_path, dtype)
    state_dict = reader(tmp_path)
    shape = state_dict["w"].shape
    variable = keras.Variable(np.zeros(shape, np.float32), name="kernel")
    with pytest.raises(CheckpointError, match=r"model.safetensors: tensor `w` is stored as (int32|uint32|uint8|bool), "
                                              r"which cannot hold the floating point weights of `kernel`"):
        load_weights([WeightEntry(variable, ("w",))], state_dict, source=str(tmp_path))
    np.testing.assert_array_equal(variable.numpy(), 0)  # nothing assigned


def test_float16_and_bfloat16_weights_still_load_mapped(tmp_path):
    values = np.linspace(-1, 1, 4, dtype=np.float32).reshape(2, 2)
    _write(tmp_path / "model.safetensors", {"w": {"dtype": "F16", "shape": [2, 2], "data_offsets": [0, 8]}},
           values.astype("<f2").tobytes())
    variable = keras.Variable(np.zeros((2, 2), np.float32))
    load_weights([WeightEntry(variable, ("w",))], open_state_dict(tmp_path), source=str(tmp_path))
    np.testing.assert_array_equal(variable.numpy(), values.astype(np.float16).astype(np.float32))


@pytest.mark.parametrize("raw_length", [2**63, 200_000_000, 0x64_6f_6f_72], ids=["huge", "over_limit", "passwd_like"])
def test_implausible_header_length_is_not_quoted(tmp_path, raw_length):
    path = tmp_path / "model.safetensors"
    path.write_bytes(struct.pack("<Q", raw_length) + b"{}" + bytes(64))
    with pytest.raises(CheckpointError, match=r"header length field is not plausible \(the file is 74 bytes\)") as info:
        read_state_dict(tmp_path)
    assert str(raw_length) not in str(info.value)


def test_deeply_nested_header_is_refused(tmp_path):
    raw = b"{" + b'"a":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    (tmp_path / "model.safetensors").write_bytes(struct.pack("<Q", len(raw)) + raw)
    with pytest.raises(CheckpointError, match=r"model.safetensors: the header: JSON nested too deeply"):
        read_state_dict(tmp_path)


def test_non_utf8_header_is_not_quoted(tmp_path):
    raw = b'{"\xff\xfe": 1}'
    (tmp_path / "model.safetensors").write_bytes(struct.pack("<Q", len(raw)) + raw)
    with pytest.raises(CheckpointError, match=r"not UTF-8 text \(invalid byte at offset 2\)") as info:
        read_state_dict(tmp_path)
    assert "0xff" not in str(info.value) and "\\xff" not in str(info.value)
