"""Helpers shared by the checkpoint tests: tiny configs, state dict comparisons, hand-made torch.save files."""

import collections
import io
import pickle
import re
import zipfile

import numpy as np

GPT2_KWARGS = dict(n_layer=2, n_embd=32, n_head=4, vocab_size=99, n_positions=64)
BERT_KWARGS = dict(
    vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
    max_position_embeddings=64,
)
# Keys a PyTorch state dict may hold that a checkpoint need not: the tied head and causal-mask buffers.
PT_ONLY = (r"lm_head\.weight", r".*\.attn\.(masked_)?bias", r".*position_ids")


def torch_state_dict(model):
    """The model's state dict as float32 numpy arrays."""
    return {key: value.detach().float().numpy() for key, value in model.state_dict().items()}


def without_pt_only(state_dict):
    """Drops the keys matched by `PT_ONLY`."""
    return {k: v for k, v in state_dict.items() if not any(re.fullmatch(p, k) for p in PT_ONLY)}


def assert_state_dicts_equal(actual, expected):
    """Same keys, shapes and values, and every array float32."""
    assert sorted(actual) == sorted(expected)
    for key, value in expected.items():
        assert actual[key].shape == value.shape, key
        assert actual[key].dtype == np.float32, key
        np.testing.assert_array_equal(actual[key], value, err_msg=key)


def torch_zip(path, pickle_bytes, storages=None, compression=zipfile.ZIP_STORED):
    """Writes the layout torch.save uses: `<name>/data.pkl`, `byteorder`, `version`, `data/<key>`.

    A storage given as `(chunk, repeats)` is streamed as `chunk` written `repeats` times, so a test
    can write a large compressed member without holding it in memory.
    """
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", pickle_bytes)
        archive.writestr("archive/byteorder", "little")
        archive.writestr("archive/version", "3\n")
        for key, raw in (storages or {}).items():
            info = zipfile.ZipInfo(f"archive/data/{key}")
            info.compress_type = compression
            chunk, repeats = raw if isinstance(raw, tuple) else (raw, 1)
            with archive.open(info, "w") as handle:
                for _ in range(repeats):
                    handle.write(chunk)


def tensors_pickle(storage_name, numel, views):
    """Pickle bytes for {key: _rebuild_tensor_v2(<storage "0">, offset, size, stride, ...)} per `views`.

    Args:
        storage_name: the torch storage class name, e.g. "FloatStorage".
        numel: the element count the storage reference declares.
        views: key -> (size, stride, offset).
    """
    import torch  # only to produce reference bytes of the real layout

    buffer = io.BytesIO()
    storage = object()

    class _Pickler(pickle.Pickler):
        def persistent_id(self, obj):
            return ("storage", getattr(torch, storage_name), "0", "cpu", numel) if obj is storage else None

    class _Tensor:
        def __init__(self, size, stride, offset):
            self.args = (storage, offset, size, stride, False, collections.OrderedDict())

        def __reduce__(self):
            return torch._utils._rebuild_tensor_v2, self.args

    _Pickler(buffer, protocol=2).dump({key: _Tensor(*view) for key, view in views.items()})
    return buffer.getvalue()


def tensor_pickle(storage_name, numel, size, stride, offset=0):
    """Pickle bytes for {"w": _rebuild_tensor_v2(<storage>, offset, size, stride, False, OrderedDict())}."""
    return tensors_pickle(storage_name, numel, {"w": (size, stride, offset)})
