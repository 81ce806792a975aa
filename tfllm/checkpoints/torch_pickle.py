"""Reads `pytorch_model.bin` files without importing torch and without running their code.

`torch.save` writes a zip archive: `<name>/data.pkl` holds a pickle of the state dict, each tensor
storage lives in `<name>/data/<key>`, and `<name>/byteorder` says how those bytes are ordered. A pickle
can call any importable function while it loads, so we unpickle with an allow-list: only the globals
needed to rebuild tensors are resolved, and each resolves to our own numpy code, never to torch.
"""

import collections
import math
import os
import pickle
import zipfile

import numpy as np

from tfllm.checkpoints.errors import CheckpointError
from tfllm.checkpoints.safetensors_io import bfloat16_bits_to_float32


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
# torch.save stores tensor bytes uncompressed; a compressed member may expand at most this much, which
# real weights never approach (deflate reaches ~1000x on zeros: a 2 MB member can claim gigabytes).
_MAX_COMPRESSION_RATIO = 16
_MAX_PICKLE_BYTES = 64 * 2**20  # data.pkl of a 70B model is ~100 KB
_READ_CHUNK_BYTES = 16 * 2**20
# Tensors may view overlapping bytes (a weight and its transpose), but all of them together may hold at most
# this many times the elements of all storages: a pickle can name one storage a thousand times for a few bytes.
_MAX_VIEW_RATIO = 2


class _Global:
    """An allow-listed global as one load sees it: made afresh for every load, immutable from the pickle.

    A pickle can set attributes of (BUILD) or items in (SETITEM) any object it holds; were the
    allow-listed objects shared between loads, one hostile file could change how every later file
    of the process loads. Each load therefore gets its own tokens, and every such change is refused.
    """

    __slots__ = ("_path", "qualname", "dtype", "_function")

    def __init__(self, path, qualname, dtype=None, function=None):
        for name, value in (("_path", path), ("qualname", qualname), ("dtype", dtype), ("_function", function)):
            object.__setattr__(self, name, value)

    def __call__(self, *args, **kwargs):
        if self._function is None:
            raise CheckpointError(f"{self._path}: the pickle calls `{self.qualname}`, which a state dict never does.")
        return self._function(*args, **kwargs)

    def _refuse_change(self, *_):
        raise CheckpointError(
            f"{self._path}: the pickle modifies the allow-listed global `{self.qualname}` (BUILD or SETITEM), "
            "which a state dict never does; the file is refused."
        )

    __setattr__ = __delattr__ = __setitem__ = __delitem__ = __setstate__ = _refuse_change

    def __repr__(self):
        return self.qualname


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None):
    del requires_grad, backward_hooks
    return data


def _rebuild_parameter_with_state(data, requires_grad=False, backward_hooks=None, state=None):
    del requires_grad, backward_hooks, state
    return data


def _is_count(value):
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


class _Unpickler(pickle.Unpickler):
    """Unpickles a torch state dict, resolving only allow-listed globals, each to a fresh `_Global`.

    Every size the pickle declares is checked against the archive before memory is allocated: a
    storage against its member's real size, a tensor against its storage, and all tensors together
    against all storages (tensors that view the same bytes, such as tied weights, share one array).
    """

    def __init__(self, handle, path, archive, prefix, byteorder):
        super().__init__(handle)
        self._path = path
        self._archive = archive
        self._prefix = prefix
        self._byteorder = byteorder
        self._storages = {}
        self._tensors = {}  # (storage key, offset, size, stride) -> array
        self._storage_elements = 0
        self._tensor_elements = 0
        functions = {
            ("collections", "OrderedDict"): collections.OrderedDict,
            ("torch._utils", "_rebuild_tensor_v2"): self._rebuild_tensor_v2,
            ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
            ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter_with_state,
        }
        self._globals = {
            **{key: _Global(path, ".".join(key), function=value) for key, value in functions.items()},
            **{("torch", n): _Global(path, f"torch.{n}", dtype=np.dtype(d)) for n, d in _STORAGE_DTYPES.items()},
            **{("torch", name): _Global(path, f"torch.{name}") for name in _TORCH_DTYPES},
        }

    def find_class(self, module, name):
        allowed = self._globals.get((module, name))
        if allowed is None:
            raise CheckpointError(
                f"{self._path}: refuses to unpickle global `{module}.{name}`; a PyTorch state dict only "
                "needs tensor-rebuilding globals, so this file may run arbitrary code. Convert it to "
                "safetensors with trusted tools instead."
            )
        return allowed

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise CheckpointError(f"{self._path}: unsupported persistent id in the pickle (not a tensor storage).")
        _, storage_type, key, _, numel = pid
        if not isinstance(storage_type, _Global) or storage_type.dtype is None:
            kind = storage_type if isinstance(storage_type, _Global) else f"a {type(storage_type).__name__}"
            raise CheckpointError(f"{self._path}: unsupported storage type {kind!s} in a storage reference.")
        if not (isinstance(key, str) and _is_count(numel)):
            raise CheckpointError(f"{self._path}: malformed storage reference in the pickle.")
        if key not in self._storages:
            self._storages[key] = self._read_storage(storage_type, key, numel)
            self._storage_elements += numel
        return self._storages[key]

    def _member(self, entry, needed):
        """The archive member `entry`, once its declared sizes are shown to hold `needed` real bytes."""
        try:
            info = self._archive.getinfo(entry)
        except KeyError as error:
            raise CheckpointError(f"{self._path}: storage `{entry}` is missing from the archive.") from error
        if info.file_size < needed:
            raise CheckpointError(
                f"{self._path}: storage `{entry}` has {info.file_size} bytes, fewer than the {needed} bytes "
                "its tensors need."
            )
        archive_bytes = os.path.getsize(self._path)
        stored = info.compress_type == zipfile.ZIP_STORED
        if info.compress_size > archive_bytes or needed > info.compress_size * (1 if stored else _MAX_COMPRESSION_RATIO):
            raise CheckpointError(
                f"{self._path}: storage `{entry}` declares {needed} bytes but the archive ({archive_bytes} bytes) "
                f"holds {info.compress_size} for it{'' if stored else ' compressed'}; refused before allocating "
                "(torch.save stores tensors uncompressed)."
            )
        return info

    def _read_storage(self, storage_type, key, numel):
        entry = f"{self._prefix}/data/{key}"
        dtype = storage_type.dtype.newbyteorder("<" if self._byteorder == "little" else ">")
        info = self._member(entry, numel * dtype.itemsize)
        array = np.empty(numel, dtype=dtype)
        buffer = memoryview(array).cast("B")
        with self._archive.open(info) as handle:
            for start in range(0, len(buffer), _READ_CHUNK_BYTES):
                chunk = handle.read(min(_READ_CHUNK_BYTES, len(buffer) - start))
                if len(chunk) != min(_READ_CHUNK_BYTES, len(buffer) - start):
                    raise CheckpointError(f"{self._path}: storage `{entry}` is truncated.")
                buffer[start : start + len(chunk)] = chunk
        array = array.astype(dtype.newbyteorder("="), copy=False)
        if storage_type.qualname == "torch.BFloat16Storage":
            return bfloat16_bits_to_float32(array)
        if array.dtype.kind == "f":
            return array.astype(np.float32, copy=False)
        return array

    def _rebuild_tensor_v2(self, storage, storage_offset, size, stride, requires_grad=False,
                           backward_hooks=None, metadata=None):
        """Rebuilds a tensor as a contiguous copy of its storage's bytes (shared by identical views)."""
        del requires_grad, backward_hooks, metadata  # Training-only state.
        size, stride = tuple(size), tuple(stride)
        geometry = f"size {size}, stride {stride} and offset {storage_offset}"
        if not (isinstance(storage, np.ndarray) and len(size) == len(stride)
                and all(_is_count(n) for n in (storage_offset, *size, *stride))):
            raise CheckpointError(f"{self._path}: invalid tensor geometry: {geometry}.")
        numel = math.prod(size)
        if numel and storage_offset + sum((n - 1) * s for n, s in zip(size, stride)) >= storage.size:
            raise CheckpointError(
                f"{self._path}: a tensor of {geometry} reads past the end of a storage of {storage.size} elements."
            )
        memo = (id(storage), storage_offset, size, stride)
        if memo in self._tensors:
            return self._tensors[memo]
        if numel > storage.size:
            raise CheckpointError(
                f"{self._path}: a tensor of {geometry} has {numel} elements, more than its storage holds "
                f"({storage.size}); refused before allocating."
            )
        self._tensor_elements += numel
        itemsize = storage.dtype.itemsize
        # A view allocates nothing; `check_total` bounds all of them before `read_torch_bin` copies them.
        self._tensors[memo] = np.lib.stride_tricks.as_strided(
            storage[storage_offset:], shape=size, strides=[s * itemsize for s in stride], writeable=False
        )
        return self._tensors[memo]

    def check_total(self):
        """Refuses tensors that together hold far more elements than the storages they view."""
        if self._tensor_elements > _MAX_VIEW_RATIO * self._storage_elements:
            raise CheckpointError(
                f"{self._path}: its tensors hold {self._tensor_elements} elements, more than {_MAX_VIEW_RATIO} x "
                f"the {self._storage_elements} of its storages; refused before allocating."
            )


def _archive_layout(path, archive):
    """Returns the archive's top-level folder name and byte order."""
    pickles = [name for name in archive.namelist() if name.endswith("/data.pkl") and name.count("/") == 1]
    if len(pickles) != 1:
        raise CheckpointError(
            f"{path}: expected exactly one `<name>/data.pkl` in the zip archive, found {len(pickles)}; "
            "this is not a torch.save file."
        )
    prefix = pickles[0][: -len("/data.pkl")]
    if archive.getinfo(pickles[0]).file_size > _MAX_PICKLE_BYTES:
        raise CheckpointError(f"{path}: `{pickles[0]}` declares more than {_MAX_PICKLE_BYTES} bytes; a state dict's is small.")
    byteorder = "little"
    if f"{prefix}/byteorder" in archive.namelist():
        with archive.open(f"{prefix}/byteorder") as handle:
            byteorder = handle.read(16).decode("ascii", "replace").strip()
        if byteorder not in ("little", "big"):
            raise CheckpointError(f"{path}: `{prefix}/byteorder` holds neither 'little' nor 'big'.")
    return prefix, byteorder


def read_torch_bin(path):
    """Reads a `pytorch_model.bin` state dict written by `torch.save`, without torch.

    Args:
        path: the `.bin` file (the zip format of `torch.save`, torch >= 1.6).

    Returns:
        A dict of key -> `np.ndarray` (a contiguous copy; keys that view the same bytes, such as
        tied weights, share one). Floating point tensors are float32.

    Raises:
        CheckpointError: the file is truncated or corrupt, is the legacy non-zip format, its
            pickle references anything besides the globals needed to rebuild tensors or modifies
            one, or it declares sizes its bytes cannot hold (checked before allocating).
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
                unpickler = _Unpickler(handle, path, archive, prefix, byteorder)
                state_dict = unpickler.load()
            unpickler.check_total()
    except CheckpointError:
        raise
    except (pickle.UnpicklingError, zipfile.BadZipFile, EOFError, ValueError, TypeError, AttributeError,
            IndexError, KeyError, OSError) as error:
        # The error's own text is left out of the message: it may quote bytes of the file.
        raise CheckpointError(f"{path}: corrupt PyTorch checkpoint ({type(error).__name__}).") from error
    if not isinstance(state_dict, dict):
        raise CheckpointError(f"{path}: holds a {type(state_dict).__name__}, not a state dict.")
    for key, value in state_dict.items():
        if not isinstance(value, np.ndarray):
            raise CheckpointError(f"{path}: entry `{key}` is a {type(value).__name__}, not a tensor.")
    copies = {}  # Tensors that view the same bytes (tied weights) share one copy.
    for value in state_dict.values():
        if id(value) not in copies:
            copies[id(value)] = np.array(value, order="C")
    return {str(key): copies[id(value)] for key, value in state_dict.items()}
