"""Hostile `pytorch_model.bin` files: poisoned unpickler state, zip bombs, oversized tensor views.

Each is refused with a CheckpointError naming the file, before memory is allocated for what the
file only declares, and leaves later loads in the same process unaffected.
"""

import pickle
import tracemalloc
import zipfile

import numpy as np
import pytest

from checkpoint_testing import tensor_pickle, tensors_pickle, torch_zip
from tfllm.checkpoints import CheckpointError, read_state_dict


def _op(opcode):
    return opcode if isinstance(opcode, bytes) else opcode.encode("latin-1")


def _text(value):
    raw = value.encode()
    return pickle.SHORT_BINUNICODE + bytes([len(raw)]) + raw


def _global(module, name):
    return pickle.GLOBAL + f"{module}\n{name}\n".encode()


def _poison(target, how):
    """Pickle bytes that change `target` (an allow-listed global), then return an empty state dict."""
    module, name = target
    body = _global(module, name)
    if how == "build":  # target.__dict__.update({"name": "BFloat16Storage"})
        body += pickle.EMPTY_DICT + _text("name") + _text("BFloat16Storage") + pickle.SETITEM + pickle.BUILD
    elif how == "build_slots":  # setattr(target, "name", ...) through BUILD's (state, slotstate) form
        state = pickle.EMPTY_DICT + _text("name") + _text("BFloat16Storage") + pickle.SETITEM
        body += pickle.NONE + state + pickle.TUPLE2 + pickle.BUILD
    else:  # target["name"] = ...
        body += _text("name") + _text("BFloat16Storage") + pickle.SETITEM
    return pickle.PROTO + b"\x02" + body + pickle.POP + pickle.EMPTY_DICT + pickle.STOP


@pytest.mark.parametrize("how", ["build", "build_slots", "setitem"])
@pytest.mark.parametrize("target", [("torch", "FloatStorage"), ("torch._utils", "_rebuild_tensor_v2"),
                                    ("collections", "OrderedDict")], ids=["storage", "function", "class"])
def test_pickle_cannot_modify_allowed_globals(tmp_path, target, how):
    poisoned, clean = tmp_path / "poisoned", tmp_path / "clean"
    poisoned.mkdir()
    clean.mkdir()
    torch_zip(poisoned / "pytorch_model.bin", _poison(target, how))
    with pytest.raises(CheckpointError, match=rf"poisoned/pytorch_model.bin: the pickle modifies the allow-listed "
                                              rf"global `{'.'.join(target)}`"):
        read_state_dict(poisoned)
    # A later, legitimate file in the same process loads exactly.
    expected = np.arange(6, dtype=np.float32).reshape(2, 3) / 7
    torch_zip(clean / "pytorch_model.bin", tensor_pickle("FloatStorage", 6, (2, 3), (3, 1)), {"0": expected.tobytes()})
    np.testing.assert_array_equal(read_state_dict(clean)["w"], expected)


def test_storage_types_are_not_callable(tmp_path):
    payload = pickle.PROTO + b"\x02" + _global("torch", "FloatStorage") + pickle.EMPTY_TUPLE + pickle.REDUCE
    torch_zip(tmp_path / "pytorch_model.bin", payload + pickle.STOP)
    with pytest.raises(CheckpointError, match="calls `torch.FloatStorage`, which a state dict never does"):
        read_state_dict(tmp_path)


def _refused_cheaply(folder, match, limit_bytes=64 * 2**20):
    """Asserts that loading `folder` raises a CheckpointError matching `match` and allocates < `limit_bytes`."""
    tracemalloc.start()  # numpy reports its buffers to tracemalloc
    try:
        with pytest.raises(CheckpointError, match=match) as info:
            read_state_dict(folder)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert "pytorch_model.bin" in str(info.value)
    assert peak < limit_bytes, f"{peak} bytes allocated before refusing"


def test_deflate_bomb_is_refused_before_allocating(tmp_path):
    numel = 2**28  # 1 GiB of float32 zeros, deflated to ~1 MB
    storage = (bytes(2**24), numel * 4 // 2**24)
    torch_zip(tmp_path / "pytorch_model.bin", tensor_pickle("FloatStorage", numel, (numel,), (1,)), {"0": storage},
              compression=zipfile.ZIP_DEFLATED)
    assert (tmp_path / "pytorch_model.bin").stat().st_size < 2 * 2**20
    _refused_cheaply(tmp_path, r"declares 1073741824 bytes but the archive \(\d+ bytes\) holds \d+ for it compressed")


def test_stored_member_larger_than_the_file_is_refused(tmp_path):
    path = tmp_path / "pytorch_model.bin"
    torch_zip(path, tensor_pickle("FloatStorage", 6, (2, 3), (3, 1)), {"0": bytes(24)})
    raw = path.read_bytes()
    # Make the central directory claim a 1 GiB stored member: its sizes are at offsets 20 and 24 of its entry,
    # its name at 46.
    entry = next(i for i in range(len(raw)) if raw.startswith(b"PK\x01\x02", i) and raw[i + 46 :].startswith(b"archive/data/0"))
    patched = raw[: entry + 20] + (2**30).to_bytes(4, "little") * 2 + raw[entry + 28 :]
    path.write_bytes(patched)
    _refused_cheaply(tmp_path, r"storage `archive/data/0` declares 24 bytes but the archive")


def test_stride_zero_view_is_refused_before_allocating(tmp_path):
    torch_zip(tmp_path / "pytorch_model.bin", tensor_pickle("FloatStorage", 1, (2**30,), (0,)), {"0": bytes(4)})
    assert (tmp_path / "pytorch_model.bin").stat().st_size < 1024
    _refused_cheaply(tmp_path, r"has 1073741824 elements, more than its storage holds \(1\)")


def test_many_views_of_one_storage_are_refused_before_allocating(tmp_path):
    numel = 2**16
    views = {f"w{i}": ((numel - i,), (1,), i) for i in range(64)}  # 64 distinct views, each almost all of it
    torch_zip(tmp_path / "pytorch_model.bin", tensors_pickle("FloatStorage", numel, views), {"0": bytes(numel * 4)})
    _refused_cheaply(tmp_path, r"tensors hold \d+ elements, more than 2 x the 65536 of its storages")


def test_tied_views_share_one_copy(tmp_path):
    views = {"wte": ((2, 3), (3, 1), 0), "lm_head": ((2, 3), (3, 1), 0)}
    raw = np.arange(6, dtype=np.float32).tobytes()
    torch_zip(tmp_path / "pytorch_model.bin", tensors_pickle("FloatStorage", 6, views), {"0": raw})
    state_dict = read_state_dict(tmp_path)
    assert state_dict["wte"] is state_dict["lm_head"]
    np.testing.assert_array_equal(state_dict["wte"], np.arange(6, dtype=np.float32).reshape(2, 3))


def test_oversized_pickle_member_is_refused(tmp_path):
    torch_zip(tmp_path / "pytorch_model.bin", b"\x80\x02}." + bytes(65 * 2**20))
    with pytest.raises(CheckpointError, match="data.pkl` declares more than 67108864 bytes"):
        read_state_dict(tmp_path)
