"""Corrupt, truncated and malicious files are refused with a CheckpointError naming the file."""

import io
import json
import os
import pickle
import struct
import zipfile

import numpy as np
import pytest

from checkpoint_testing import tensor_pickle, torch_zip
from tfllm.checkpoints import CheckpointError, read_state_dict


def _write_safetensors(path, header, data=b""):
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)


def _valid_safetensors(tmp_path):
    import safetensors.numpy

    path = tmp_path / "model.safetensors"
    safetensors.numpy.save_file({"a": np.ones((8, 8), np.float32), "b": np.ones(4, np.float32)}, path)
    return path


@pytest.mark.parametrize("keep", [0, 5, 20, -100], ids=["empty", "short_length", "header_cut", "data_cut"])
def test_truncated_safetensors(tmp_path, keep):
    path = _valid_safetensors(tmp_path)
    path.write_bytes(path.read_bytes()[:keep])
    with pytest.raises(CheckpointError, match="model.safetensors"):
        read_state_dict(tmp_path)


@pytest.mark.parametrize(
    "header, data, match",
    [
        (None, b"", "not valid JSON"),
        ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 4, "ends at data byte 8"),
        ({"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}, b"\0" * 8, "needs 12 bytes"),
        ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [8, 0]}}, b"\0" * 8, "malformed"),
        ({"a": {"dtype": "C64", "shape": [1], "data_offsets": [0, 8]}}, b"\0" * 8, "Unsupported dtype 'C64'"),
        ([1, 2], b"", "not a JSON object"),
    ],
    ids=["bad_json", "offsets_past_eof", "size_mismatch", "reversed_offsets", "unknown_dtype", "not_object"],
)
def test_corrupt_safetensors(tmp_path, header, data, match):
    path = tmp_path / "model.safetensors"
    if header is None:
        path.write_bytes(struct.pack("<Q", 5) + b"{oops")
    else:
        _write_safetensors(path, header, data)
    with pytest.raises(CheckpointError, match=match) as info:
        read_state_dict(tmp_path)
    assert str(path) in str(info.value)


def test_truncated_pytorch_bin(gpt2_pt, tmp_path):
    gpt2_pt.save_pretrained(tmp_path, safe_serialization=False)
    path = tmp_path / "pytorch_model.bin"
    path.write_bytes(path.read_bytes()[: os.path.getsize(path) // 2])
    with pytest.raises(CheckpointError, match="pytorch_model.bin"):
        read_state_dict(tmp_path)


def test_legacy_pickle_pytorch_bin_is_unsupported(tmp_path):
    import torch

    torch.save({"w": torch.ones(2)}, tmp_path / "pytorch_model.bin", _use_new_zipfile_serialization=False)
    with pytest.raises(CheckpointError, match="legacy .*unsupported"):
        read_state_dict(tmp_path)


class _Exploit:
    def __init__(self, function, argument):
        self.function, self.argument = function, argument

    def __reduce__(self):
        return self.function, (self.argument,)


@pytest.mark.parametrize("protocol", [2, 4])
@pytest.mark.parametrize("function", ["os.system", "builtins.exec"])
def test_malicious_pickle_is_refused_without_running(tmp_path, function, protocol):
    marker = tmp_path / "pwned"
    command = f"touch {marker}" if function == "os.system" else f"open({str(marker)!r}, 'w').close()"
    target = os.system if function == "os.system" else exec
    payload = pickle.dumps({"w": _Exploit(target, command)}, protocol=protocol)
    torch_zip(tmp_path / "pytorch_model.bin", payload)
    refused = r"refuses to unpickle global `(posix\.system|(__)?builtins?(__)?\.exec)`"
    with pytest.raises(CheckpointError, match=refused) as info:
        read_state_dict(tmp_path)
    assert "pytorch_model.bin" in str(info.value)
    assert not marker.exists()


@pytest.mark.parametrize(
    "numel, raw_bytes, size, stride, offset, match",
    [
        (6, 24, (2, 3), (3, 1), 0, None),
        (6, 8, (2, 3), (3, 1), 0, "fewer than"),
        (6, 24, (3, 3), (3, 1), 0, "reads past the end"),
        (6, 24, (2, 3), (3, 1), 2, "reads past the end"),
    ],
    ids=["valid", "short_storage", "size_past_end", "offset_past_end"],
)
def test_tensor_geometry_is_checked(tmp_path, numel, raw_bytes, size, stride, offset, match):
    raw = np.arange(numel, dtype="<f4").tobytes()[:raw_bytes]
    torch_zip(tmp_path / "pytorch_model.bin", tensor_pickle("FloatStorage", numel, size, stride, offset), {"0": raw})
    if match is None:
        np.testing.assert_array_equal(read_state_dict(tmp_path)["w"], np.arange(6, dtype=np.float32).reshape(2, 3))
        return
    with pytest.raises(CheckpointError, match=match) as info:
        read_state_dict(tmp_path)
    assert "pytorch_model.bin" in str(info.value)


def test_truncated_pickle_and_missing_storage(tmp_path):
    pickle_bytes = tensor_pickle("FloatStorage", 6, (2, 3), (3, 1))
    torch_zip(tmp_path / "pytorch_model.bin", pickle_bytes[:-5], {"0": b"\0" * 24})
    with pytest.raises(CheckpointError, match="corrupt PyTorch checkpoint"):
        read_state_dict(tmp_path)
    torch_zip(tmp_path / "pytorch_model.bin", pickle_bytes)
    with pytest.raises(CheckpointError, match="archive/data/0.* missing"):
        read_state_dict(tmp_path)


def test_big_endian_storage(tmp_path):
    path = tmp_path / "pytorch_model.bin"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", tensor_pickle("IntStorage", 3, (3,), (1,)))
        archive.writestr("archive/byteorder", "big")
        archive.writestr("archive/data/0", np.array([1, 2, 300], ">i4").tobytes())
    state_dict = read_state_dict(tmp_path)
    np.testing.assert_array_equal(state_dict["w"], [1, 2, 300])
    assert state_dict["w"].dtype == np.int32


def test_zip_without_data_pkl(tmp_path):
    with zipfile.ZipFile(tmp_path / "pytorch_model.bin", "w") as archive:
        archive.writestr("something.txt", "hello")
    with pytest.raises(CheckpointError, match="data.pkl"):
        read_state_dict(tmp_path)


def test_unreadable_tf_h5(tmp_path):
    (tmp_path / "tf_model.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + b"garbage" * 10)
    with pytest.raises(CheckpointError, match="tf_model.h5"):
        read_state_dict(tmp_path)


def test_h5_without_layer_names(tmp_path):
    import h5py

    with h5py.File(tmp_path / "tf_model.h5", "w") as handle:
        handle["x"] = np.ones(3)
    with pytest.raises(CheckpointError, match="tf_model.h5.*layer_names"):
        read_state_dict(tmp_path)


class _PersistentPickler(pickle.Pickler):
    """Pickles `{"w": <marker>}` with `pid` as the marker's persistent id."""

    def __init__(self, buffer, pid):
        super().__init__(buffer, protocol=2)
        self.pid = pid

    def persistent_id(self, obj):
        return self.pid if obj == "marker" else None


def _torch_dtype(name):
    import torch

    return getattr(torch, name)


def _persistent_pickle(pid):
    buffer = io.BytesIO()
    _PersistentPickler(buffer, pid).dump({"w": "marker"})
    return buffer.getvalue()


@pytest.mark.parametrize(
    "payload, match",
    [
        (lambda: _persistent_pickle(("module", "x")), "unsupported persistent id"),
        (lambda: _persistent_pickle(("storage", _torch_dtype("float32"), "0", "cpu", 1)),
         r"unsupported storage type torch\.float32"),
        (lambda: pickle.dumps([1, 2], protocol=2), "holds a list, not a state dict"),
        (lambda: pickle.dumps({"w": 3}, protocol=2), "entry `w` is a int, not a tensor"),
    ],
    ids=["persistent_id", "storage_type", "not_a_dict", "not_a_tensor"],
)
def test_unexpected_pickle_contents(tmp_path, payload, match):
    torch_zip(tmp_path / "pytorch_model.bin", payload())
    with pytest.raises(CheckpointError, match=match) as info:
        read_state_dict(tmp_path)
    assert "pytorch_model.bin" in str(info.value)


def test_unknown_byte_order(tmp_path):
    with zipfile.ZipFile(tmp_path / "pytorch_model.bin", "w") as archive:
        archive.writestr("archive/data.pkl", pickle.dumps({}, protocol=2))
        archive.writestr("archive/byteorder", "middle")
    with pytest.raises(CheckpointError, match="byteorder` holds neither 'little' nor 'big'"):
        read_state_dict(tmp_path)


def test_safetensors_metadata_must_be_an_object(tmp_path):
    _write_safetensors(tmp_path / "model.safetensors", {"__metadata__": [1]})
    with pytest.raises(CheckpointError, match="`__metadata__` is not a JSON object"):
        read_state_dict(tmp_path)


def test_key_in_two_shards(tmp_path):
    import safetensors.numpy

    for shard in ("one.safetensors", "two.safetensors"):
        safetensors.numpy.save_file({"w": np.ones(2, np.float32)}, tmp_path / shard)
    index = {"weight_map": {"w": "one.safetensors", "v": "two.safetensors"}}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match="Key `w` appears in both .*one.safetensors and .*two.safetensors"):
        read_state_dict(tmp_path)
