"""Reads `pytorch_model.bin` files without importing torch and without running their code.

`torch.save` writes a zip archive: `<name>/data.pkl` holds a pickle of the state dict, each tensor
storage lives in `<name>/data/<key>`, and `<name>/byteorder` says how those bytes are ordered. A pickle
can call any importable function while it loads, so we unpickle with an allow-list: only the globals
needed to rebuild tensors are resolved, and each resolves to our own numpy code, never to torch.
"""

import collections
import os
import pickle
import zipfile

import numpy as np

from tfllm.checkpoints.errors import CheckpointError
from tfllm.checkpoints.safetensors_io import bfloat16_bits_to_float32


class _StorageType:
    """Stands in for a `torch.*Storage` class: only knows the element dtype of the stored bytes."""

    def __init__(self, name, dtype):
        self.name = name
        self.dtype = np.dtype(dtype)

    def __repr__(self):
        return f"torch.{self.name}"


class _DType:
    """Stands in for a `torch.<dtype>` object that may appear as a pickled global."""

    def __init__(self, name):
        self.name = name

    def __repr__(self):
        return f"torch.{self.name}"


_STORAGE_DTYPES = {
    "DoubleStorage": "<f8",
    "FloatStorage": "<f4",
    "HalfStorage": "<f2",
    "BFloat16Storage": "<u2",  # bit patterns, widened to float32 after reading
    "LongStorage": "<i8",
    "IntStorage": "<i4",
    "ShortStorage": "<i2",
    "CharStorage": "i1",
    "ByteStorage": "u1",
    "BoolStorage": "?",
    "UntypedStorage": "u1",
}
_TORCH_DTYPES = ("float64", "float32", "float16", "bfloat16", "int64", "int32", "int16", "int8", "uint8", "bool")


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None):
    """Rebuilds a tensor as a numpy view on its storage; `_Unpickler.load_state_dict` copies it."""
    del requires_grad, backward_hooks, metadata  # Training-only state.
    size, stride = tuple(size), tuple(stride)
    if len(size) != len(stride) or storage_offset < 0 or min(size + stride, default=0) < 0:
        raise ValueError(f"invalid tensor geometry: offset={storage_offset}, size={size}, stride={stride}")
    if 0 in size:
        return np.zeros(size, dtype=storage.dtype)
    last = storage_offset + sum((n - 1) * s for n, s in zip(size, stride))
    if last >= storage.size:
        raise ValueError(
            f"tensor of size {size}, stride {stride} and offset {storage_offset} reads past the end of "
            f"a storage of {storage.size} elements"
        )
    base = storage[storage_offset:]
    itemsize = storage.dtype.itemsize
    return np.lib.stride_tricks.as_strided(base, shape=size, strides=[s * itemsize for s in stride])


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None):
    del requires_grad, backward_hooks
    return data


def _rebuild_parameter_with_state(data, requires_grad=False, backward_hooks=None, state=None):
    del requires_grad, backward_hooks, state
    return data


_ALLOWED_GLOBALS = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter_with_state,
    **{("torch", name): _StorageType(name, dtype) for name, dtype in _STORAGE_DTYPES.items()},
    **{("torch", name): _DType(name) for name in _TORCH_DTYPES},
}


class _Unpickler(pickle.Unpickler):
    """Unpickles a torch state dict, resolving only allow-listed globals."""

    def __init__(self, handle, path, archive, prefix, byteorder):
        super().__init__(handle)
        self._path = path
        self._archive = archive
        self._prefix = prefix
        self._byteorder = byteorder
        self._storages = {}

    def find_class(self, module, name):
        allowed = _ALLOWED_GLOBALS.get((module, name))
        if allowed is None:
            raise CheckpointError(
                f"{self._path}: refuses to unpickle global `{module}.{name}`; a PyTorch state dict only "
                "needs tensor-rebuilding globals, so this file may run arbitrary code. Convert it to "
                "safetensors with trusted tools instead."
            )
        return allowed

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise CheckpointError(f"{self._path}: unsupported persistent id {pid!r} in the pickle.")
        _, storage_type, key, _, numel = pid
        if not isinstance(storage_type, _StorageType):
            raise CheckpointError(f"{self._path}: unsupported storage type {storage_type!r} for storage `{key}`.")
        if key not in self._storages:
            self._storages[key] = self._read_storage(storage_type, str(key), numel)
        return self._storages[key]

    def _read_storage(self, storage_type, key, numel):
        entry = f"{self._prefix}/data/{key}"
        try:
            raw = self._archive.read(entry)
        except KeyError as error:
            raise CheckpointError(f"{self._path}: storage `{entry}` is missing from the archive.") from error
        dtype = storage_type.dtype.newbyteorder("<" if self._byteorder == "little" else ">")
        if len(raw) < numel * dtype.itemsize:
            raise CheckpointError(
                f"{self._path}: storage `{entry}` has {len(raw)} bytes, fewer than the "
                f"{numel} x {dtype.itemsize} bytes its {storage_type!r} needs."
            )
        array = np.frombuffer(raw, dtype=dtype, count=numel).astype(dtype.newbyteorder("="))
        if storage_type.name == "BFloat16Storage":
            return bfloat16_bits_to_float32(array)
        if array.dtype.kind == "f":
            return array.astype(np.float32, copy=False)
        return array


def _archive_layout(path, archive):
    """Returns the archive's top-level folder name and byte order."""
    pickles = [name for name in archive.namelist() if name.endswith("/data.pkl") and name.count("/") == 1]
    if len(pickles) != 1:
        raise CheckpointError(
            f"{path}: expected exactly one `<name>/data.pkl` in the zip archive, found {len(pickles)}; "
            "this is not a torch.save file."
        )
    prefix = pickles[0][: -len("/data.pkl")]
    byteorder = "little"
    if f"{prefix}/byteorder" in archive.namelist():
        byteorder = archive.read(f"{prefix}/byteorder").decode("ascii", "replace").strip()
        if byteorder not in ("little", "big"):
            raise CheckpointError(f"{path}: unknown byte order {byteorder!r} in `{prefix}/byteorder`.")
    return prefix, byteorder


def read_torch_bin(path):
    """Reads a `pytorch_model.bin` state dict written by `torch.save`, without torch.

    Args:
        path: the `.bin` file (the zip format of `torch.save`, torch >= 1.6).

    Returns:
        A dict of key -> `np.ndarray` (a contiguous copy). Floating point tensors are float32.

    Raises:
        CheckpointError: the file is truncated or corrupt, is the legacy non-zip format, or its
            pickle references anything besides the globals needed to rebuild tensors.
    """
    path = os.fspath(path)
    if not zipfile.is_zipfile(path):
        raise CheckpointError(
            f"{path} is not a zip archive: either it is truncated or it uses the legacy (pre-1.6) "
            "torch.save pickle format, which is unsupported. Re-save it with a recent torch or as safetensors."
        )
    try:
        with zipfile.ZipFile(path) as archive:
            prefix, byteorder = _archive_layout(path, archive)
            with archive.open(f"{prefix}/data.pkl") as handle:
                state_dict = _Unpickler(handle, path, archive, prefix, byteorder).load()
    except CheckpointError:
        raise
    except (pickle.UnpicklingError, zipfile.BadZipFile, EOFError, ValueError, TypeError, AttributeError,
            IndexError, KeyError, OSError) as error:
        raise CheckpointError(f"{path}: corrupt PyTorch checkpoint ({type(error).__name__}: {error}).") from error
    if not isinstance(state_dict, dict):
        raise CheckpointError(f"{path}: holds a {type(state_dict).__name__}, not a state dict.")
    result = {}
    for key, value in state_dict.items():
        if not isinstance(value, np.ndarray):
            raise CheckpointError(f"{path}: entry `{key}` is a {type(value).__name__}, not a tensor.")
        result[str(key)] = np.array(value, order="C")
    return result
