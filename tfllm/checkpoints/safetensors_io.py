"""A strict reader for the safetensors format.

The file is an 8-byte little-endian header length, a JSON header mapping each tensor name to
`{"dtype", "shape", "data_offsets"}`, then the raw bytes. We parse it ourselves rather than through
`safetensors.numpy` because numpy has no bfloat16, and so that a truncated or corrupt file gives a
`CheckpointError` naming the file instead of a crash deep inside a Rust extension.
"""

import math
import mmap
import os
import struct

import numpy as np

from tfllm.checkpoints.errors import CheckpointError
from tfllm.model_files import parse_json

# safetensors dtype -> numpy dtype of the stored bytes (little-endian).
_DTYPES = {
    "F64": np.dtype("<f8"),
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "BF16": np.dtype("<u2"),
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
    "I16": np.dtype("<i2"),
    "I8": np.dtype("i1"),
    "U64": np.dtype("<u8"),
    "U32": np.dtype("<u4"),
    "U16": np.dtype("<u2"),
    "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
}

_HEADER_LENGTH_BYTES = 8
_MAX_HEADER_BYTES = 100_000_000  # the `safetensors` library's limit

try:  # TensorFlow depends on ml_dtypes; it gives numpy a real bfloat16.
    from ml_dtypes import bfloat16 as _BFLOAT16
except ImportError:  # pragma: no cover
    _BFLOAT16 = None


def bfloat16_bits_to_float32(bits):
    """Widens bfloat16 values, given as their uint16 bit patterns, to float32 exactly.

    bfloat16 is the upper half of a float32, so shifting the bits left by 16 is exact.
    """
    return (np.asarray(bits, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)


def to_float32_if_float(array):
    """Returns a float32 copy of a floating point array; other arrays are returned unchanged."""
    if np.issubdtype(array.dtype, np.floating):
        return np.array(array, dtype=np.float32, order="C")
    return array


def _read_header(path, mapped, file_size):
    if file_size < _HEADER_LENGTH_BYTES:
        raise CheckpointError(
            f"Corrupt safetensors file {path}: it has {file_size} bytes, fewer than the "
            f"{_HEADER_LENGTH_BYTES}-byte header length."
        )
    (header_length,) = struct.unpack("<Q", mapped[:_HEADER_LENGTH_BYTES])
    # The length is never quoted: in a file that is not safetensors (a link to /etc/passwd) it is its first bytes.
    if header_length > min(file_size - _HEADER_LENGTH_BYTES, _MAX_HEADER_BYTES):
        raise CheckpointError(
            f"Corrupt or truncated safetensors file {path}: the header length field is not plausible "
            f"(the file is {file_size} bytes)."
        )
    raw = mapped[_HEADER_LENGTH_BYTES : _HEADER_LENGTH_BYTES + header_length]
    if not raw.startswith(b"{"):
        raise CheckpointError(f"Corrupt safetensors file {path}: the header is not a JSON object.")
    header = parse_json(raw, f"Corrupt safetensors file {path}: the header")
    if not isinstance(header, dict):
        raise CheckpointError(f"Corrupt safetensors file {path}: the header is not a JSON object.")
    return header, _HEADER_LENGTH_BYTES + header_length


def _check_entry(path, name, entry, data_size):
    """Validates one header entry and returns (numpy dtype, shape, begin, end)."""
    if not isinstance(entry, dict) or not {"dtype", "shape", "data_offsets"} <= set(entry):
        raise CheckpointError(f"Corrupt safetensors file {path}: the header entry of `{name}` is malformed.")
    dtype = _DTYPES.get(entry["dtype"])
    if dtype is None:
        raise CheckpointError(
            f"Unsupported dtype {entry['dtype']!r} for tensor `{name}` in safetensors file {path}. "
            f"Supported: {', '.join(sorted(_DTYPES))}."
        )
    shape = entry["shape"]
    offsets = entry["data_offsets"]
    valid_shape = isinstance(shape, list) and all(isinstance(d, int) and d >= 0 for d in shape)
    valid_offsets = (
        isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(o, int) for o in offsets)
    )
    if not (valid_shape and valid_offsets) or not 0 <= offsets[0] <= offsets[1]:
        raise CheckpointError(f"Corrupt safetensors file {path}: the header entry of `{name}` is malformed.")
    begin, end = offsets
    if end > data_size:
        raise CheckpointError(
            f"Corrupt or truncated safetensors file {path}: tensor `{name}` ends at data byte {end} "
            f"but the file holds only {data_size} data bytes."
        )
    expected_bytes = math.prod(shape) * dtype.itemsize
    if end - begin != expected_bytes:
        raise CheckpointError(
            f"Corrupt safetensors file {path}: tensor `{name}` of dtype {entry['dtype']} and shape "
            f"{tuple(shape)} needs {expected_bytes} bytes but its data offsets span {end - begin}."
        )
    return dtype, tuple(shape), begin, end


def _check_layout(path, entries, data_size):
    """As the `safetensors` library does: in offset order, the tensors' bytes tile the data exactly.

    So no two tensors share bytes (an overlap would load one tensor's values into another) and
    no byte lies between or after them.
    """
    position = 0
    for name, (_, _, _, begin, end) in sorted(entries.items(), key=lambda item: item[1][3:]):
        if begin != position:
            raise CheckpointError(
                f"Corrupt safetensors file {path}: invalid offset for tensor `{name}`: its data starts at byte "
                f"{begin}, but the tensors before it end at byte {position} (tensors may not overlap or leave gaps)."
            )
        position = end
    if position != data_size:
        raise CheckpointError(
            f"Corrupt safetensors file {path}: its tensors cover {position} of its {data_size} data bytes."
        )


def _stored_dtype(entry_dtype, dtype):
    """The dtype a mapped view of a tensor has: bfloat16 through ml_dtypes when it is installed."""
    if entry_dtype == "BF16" and _BFLOAT16 is not None:
        return _BFLOAT16
    return dtype


class _MappedFile:
    """A validated, memory-mapped safetensors file: header checked, data not read."""

    def __init__(self, path):
        self.path = os.fspath(path)
        file_size = os.path.getsize(self.path)
        with open(self.path, "rb") as handle:
            if file_size == 0:
                raise CheckpointError(f"Corrupt safetensors file {self.path}: the file is empty.")
            # The mapping keeps its own duplicate of the descriptor, so the file can close now.
            self.mapped = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
        try:
            header, self.data_start = _read_header(self.path, self.mapped, file_size)
            metadata = header.pop("__metadata__", None) or {}
            if not isinstance(metadata, dict):
                raise CheckpointError(f"Corrupt safetensors file {self.path}: `__metadata__` is not a JSON object.")
            # Every entry is checked before any tensor is handed out, so a corrupt file is refused whole.
            self.entries = {
                name: (entry["dtype"], *_check_entry(self.path, name, entry, file_size - self.data_start))
                for name, entry in header.items()
            }
            _check_layout(self.path, self.entries, file_size - self.data_start)
        except BaseException:
            self.mapped.close()
            raise
        self.metadata = metadata

    def view(self, name):
        """A read-only array over the tensor's mapped bytes; reading it pages the bytes in."""
        entry_dtype, dtype, shape, begin, _ = self.entries[name]
        dtype = _stored_dtype(entry_dtype, dtype)
        flat = np.frombuffer(self.mapped, dtype=dtype, count=math.prod(shape), offset=self.data_start + begin)
        return flat.reshape(shape)

    def widened(self, name):
        """An owned copy of the tensor; floating point tensors as float32."""
        entry_dtype, dtype, shape, begin, _ = self.entries[name]
        flat = np.frombuffer(self.mapped, dtype=dtype, count=math.prod(shape), offset=self.data_start + begin)
        if entry_dtype == "BF16":
            return bfloat16_bits_to_float32(flat).reshape(shape)
        return (to_float32_if_float(flat) if flat.dtype.kind == "f" else flat.copy()).reshape(shape)


def read_safetensors(path):
    """Reads every tensor of a safetensors file.

    Floating point tensors come back as float32 (float16 and bfloat16 are widened exactly);
    integer and bool tensors keep their dtype. The file is memory-mapped, so each tensor's
    bytes are read once, straight into its returned array.

    Args:
        path: the `.safetensors` file.

    Returns:
        A tuple `(tensors, metadata)`: a dict of name -> `np.ndarray`, and the header's
        `__metadata__` dict (empty if absent).

    Raises:
        CheckpointError: the file is truncated or corrupt, or holds an unsupported dtype.
    """
    mapped_file = _MappedFile(path)
    tensors = {name: mapped_file.widened(name) for name in mapped_file.entries}
    mapped_file.mapped.close()  # Every returned array owns its memory.
    return tensors, mapped_file.metadata


def map_safetensors(path):
    """Memory-maps a safetensors file and returns views of its tensors, without reading them.

    The whole header is validated first, so a truncated or corrupt file is refused before any
    tensor is handed out. Each tensor is a read-only array over the mapped file, in its stored
    dtype (bfloat16 as `ml_dtypes.bfloat16`, or widened to float32 if ml_dtypes is missing):
    nothing is read from disk until the array is, and the mapping lives as long as any view.
    Pass a view to `release_mapped_pages` once it has been copied, to drop its pages from the
    process's resident memory.

    Args:
        path: the `.safetensors` file.

    Returns:
        A tuple `(tensors, metadata)` as `read_safetensors`.

    Raises:
        CheckpointError: the file is truncated or corrupt, or holds an unsupported dtype.
    """
    mapped_file = _MappedFile(path)
    tensors = {}
    for name, (entry_dtype, _, _, _, _) in mapped_file.entries.items():
        if entry_dtype == "BF16" and _BFLOAT16 is None:
            tensors[name] = mapped_file.widened(name)
        else:
            tensors[name] = mapped_file.view(name)
    return tensors, mapped_file.metadata


def _mapping_of(array):
    base = array
    while isinstance(base, np.ndarray):
        base = base.base
    if isinstance(base, memoryview):  # numpy's frombuffer keeps a memoryview of the mmap
        base = base.obj
    return base if isinstance(base, mmap.mmap) else None


def is_mapped(array):
    """Whether `array` is a view over a memory-mapped file (from `map_safetensors`)."""
    return isinstance(array, np.ndarray) and _mapping_of(array) is not None


def release_mapped_pages(array):
    """Drops the resident pages under a contiguous view of a mapped file; other arrays are ignored.

    The view stays valid: reading it again pages the bytes back in from the file. This keeps the
    process's resident memory to about one tensor of file pages while a checkpoint is copied
    into variables, instead of the whole file.

    Returns:
        True if pages were released.
    """
    mapping = _mapping_of(array) if isinstance(array, np.ndarray) else None
    contiguous = mapping is not None and (array.flags.c_contiguous or array.flags.f_contiguous)
    if not contiguous or not hasattr(mmap, "MADV_DONTNEED") or mapping.closed or array.nbytes == 0:
        return False
    whole = np.frombuffer(mapping, dtype=np.uint8)
    offset = array.ctypes.data - whole.ctypes.data
    del whole
    page = mmap.PAGESIZE
    begin = -(-offset // page) * page  # Only whole pages inside the view: neighbours may be in use.
    end = (offset + array.nbytes) // page * page
    if end <= begin:
        return False
    mapping.madvise(mmap.MADV_DONTNEED, begin, end - begin)
    return True
