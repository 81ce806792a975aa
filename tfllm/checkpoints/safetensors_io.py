"""A strict reader for the safetensors format.

The file is an 8-byte little-endian header length, a JSON header mapping each tensor name to
`{"dtype", "shape", "data_offsets"}`, then the raw bytes. We parse it ourselves rather than through
`safetensors.numpy` because numpy has no bfloat16, and so that a truncated or corrupt file gives a
`CheckpointError` naming the file instead of a crash deep inside a Rust extension.
"""

import json
import math
import mmap
import os
import struct

import numpy as np

from tfllm.checkpoints.errors import CheckpointError

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
    if header_length > file_size - _HEADER_LENGTH_BYTES:
        raise CheckpointError(
            f"Corrupt or truncated safetensors file {path}: the header claims {header_length} bytes "
            f"but the file has only {file_size} bytes."
        )
    raw = mapped[_HEADER_LENGTH_BYTES : _HEADER_LENGTH_BYTES + header_length]
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(f"Corrupt safetensors file {path}: the header is not valid JSON ({error}).") from error
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
    path = os.fspath(path)
    file_size = os.path.getsize(path)
    with open(path, "rb") as handle:
        if file_size == 0:
            raise CheckpointError(f"Corrupt safetensors file {path}: the file is empty.")
        with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
            header, data_start = _read_header(path, mapped, file_size)
            metadata = header.pop("__metadata__", None) or {}
            if not isinstance(metadata, dict):
                raise CheckpointError(f"Corrupt safetensors file {path}: `__metadata__` is not a JSON object.")
            tensors = {}
            for name, entry in header.items():
                dtype, shape, begin, _ = _check_entry(path, name, entry, file_size - data_start)
                flat = np.frombuffer(mapped, dtype=dtype, count=math.prod(shape), offset=data_start + begin)
                if entry["dtype"] == "BF16":
                    array = bfloat16_bits_to_float32(flat)
                else:
                    array = to_float32_if_float(flat) if flat.dtype.kind == "f" else flat.copy()
                tensors[name] = array.reshape(shape)
                del flat  # Release the mmap export before the mapping closes.
    return tensors, metadata
