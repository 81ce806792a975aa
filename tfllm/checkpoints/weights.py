"""Loading a weight table exactly, or not at all.

A family describes its checkpoint as a list of `WeightEntry(variable, hf_keys, transform)`.
`load_weights` checks the whole table against a state dict (every key present, every shape right,
no key left unused) before it assigns a single variable, so a bad checkpoint is never half-loaded.
"""

import dataclasses
import logging
import re
from typing import Any

import keras
import numpy as np

from tfllm.checkpoints.errors import CheckpointError
from tfllm.checkpoints.safetensors_io import is_mapped, release_mapped_pages
from tfllm.checkpoints.transforms import IDENTITY, Transform
from tfllm.errors import invalid_argument

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class WeightEntry:
    """One row of a weight table: a tfllm variable and the HF key(s) that feed it.

    Args:
        variable: the `keras.Variable` to load.
        hf_keys: the HF state dict key(s), in the order `transform.to_tfllm` takes them.
        transform: how the HF array(s) become the variable's value.

    Example:

    ```python
    WeightEntry(layer.kernel, ("h.0.mlp.c_fc.weight",))  # Conv1D weights are already (in, out).
    WeightEntry(dense.kernel, ("encoder.layer.0.output.dense.weight",), TRANSPOSE)
    ```
    """

    variable: Any
    hf_keys: tuple
    transform: Transform = IDENTITY

    def __post_init__(self):
        keys = (self.hf_keys,) if isinstance(self.hf_keys, str) else tuple(self.hf_keys)
        if not keys or not all(isinstance(k, str) for k in keys):
            raise invalid_argument("hf_keys", "a non-empty tuple of strings", self.hf_keys)
        if not isinstance(self.transform, Transform):
            raise invalid_argument("transform", "a Transform", self.transform)
        if len(keys) != self.transform.num_inputs:
            raise invalid_argument(
                "hf_keys", f"{self.transform.num_inputs} key(s) for transform {self.transform.name}", keys
            )
        object.__setattr__(self, "hf_keys", keys)


def _check_entries(entries):
    entries = list(entries)
    seen = {}
    for entry in entries:
        if not isinstance(entry, WeightEntry):
            raise invalid_argument("entries", "a list of WeightEntry", entry)
        if id(entry.variable) in seen:
            raise invalid_argument(
                "entries", "each variable at most once", f"{entry.hf_keys} and {seen[id(entry.variable)]}"
            )
        seen[id(entry.variable)] = entry.hf_keys
    return entries


def _compile_patterns(ignorable):
    if isinstance(ignorable, str):
        ignorable = (ignorable,)
    try:
        return [re.compile(pattern) for pattern in ignorable]
    except (re.error, TypeError) as error:
        raise invalid_argument("ignorable", "a list of regular expressions", ignorable) from error


def _holds_floats(array):
    return array.dtype.kind == "f" or array.dtype.name == "bfloat16"  # ml_dtypes' bfloat16 is kind "V"


def _check_float_sources(entry, hf_arrays, state_dict, source):
    """Refuses integer or bool tensors for a float variable: an F32 tensor relabelled I32 loads as huge numbers."""
    if "float" not in str(entry.variable.dtype):
        return
    for key, array in zip(entry.hf_keys, hf_arrays):
        if not _holds_floats(array):
            path = getattr(state_dict, "files", {}).get(key, source)
            raise CheckpointError(
                f"{path}: tensor `{key}` is stored as {array.dtype.name}, which cannot hold the floating point "
                f"weights of `{entry.variable.path}`; refused."
            )


def _convert(entry, state_dict):
    """Returns (HF arrays, transformed array or None, error message or None) for one entry."""
    hf_arrays = [np.asarray(state_dict[key]) for key in entry.hf_keys]
    received = ", ".join(f"`{k}` {a.shape}" for k, a in zip(entry.hf_keys, hf_arrays))
    expected = tuple(entry.variable.shape)
    try:
        array = entry.transform.to_tfllm(*hf_arrays)
    except ValueError as error:
        return hf_arrays, None, f"{received}: transform {entry.transform.name} failed ({error}); expected {expected}"
    if array.shape != expected:
        return hf_arrays, array, (
            f"{received}: expected shape {expected} after {entry.transform.name}, received {array.shape}"
        )
    return hf_arrays, array, None


def _converted_arrays(entries, state_dict, source):
    """Applies every transform and checks every shape, without assigning.

    Returns one array per entry, or None where the entry reads memory-mapped tensors and its
    transform copied them (a concat): that array is made again when it is assigned, so at most
    one such copy exists at a time. Views of a mapped file (identity, transpose, reshape) cost
    nothing to keep: no byte of the file is read until assignment.
    """
    arrays, problems = [], []
    for entry in entries:
        _check_float_sources(entry, [np.asarray(state_dict[key]) for key in entry.hf_keys], state_dict, source)
        hf_arrays, array, problem = _convert(entry, state_dict)
        if problem:
            problems.append(problem)
        mapped = [a for a in hf_arrays if is_mapped(a)]
        if mapped and array is not None and not is_mapped(array):
            array = None
            for hf_array in mapped:
                release_mapped_pages(hf_array)
        arrays.append(array)
    if problems:
        raise CheckpointError(f"Shape mismatch loading {source}: " + "; ".join(problems))
    return arrays


# Arrays are written into their variable's own buffer in slices of about this many bytes, so a
# conversion never holds a whole extra copy of a big tensor (the embedding is ~150 MB in GPT-2)
# and no variable buffer is reallocated.
_CHUNK_BYTES = 4 * 2**20


def _backend_variable(variable):
    """The tf.Variable under a keras.Variable, if the backend is TensorFlow; else None."""
    if keras.backend.backend() != "tensorflow":
        return None
    import tensorflow as tf

    value = getattr(variable, "value", None)
    return value if isinstance(value, tf.Variable) else None


def _assign(variable, array):
    """Copies `array` into `variable` in place, slice by slice, dropping mapped pages as it goes.

    The numpy copy before the cast matters: TensorFlow may share an aligned numpy buffer, and a
    variable must never end up backed by a read-only mapped file.
    """
    tf_variable = _backend_variable(variable)
    if tf_variable is None or array.ndim == 0 or array.size == 0:
        variable.assign(keras.ops.cast(np.array(array, order="C", copy=True), variable.dtype))
        release_mapped_pages(array)
        return
    import tensorflow as tf

    rows = array.shape[0]
    step = max(1, _CHUNK_BYTES // (array.nbytes // rows))
    for start in range(0, rows, step):
        chunk = array[start : start + step]
        value = keras.ops.cast(np.array(chunk, order="C", copy=True), variable.dtype)
        # The raw op, not `tf_variable[a:b].assign`: slicing the variable reads it first, and that
        # live read makes TensorFlow copy the whole buffer before writing the slice.
        tf.raw_ops.ResourceStridedSliceAssign(
            ref=tf_variable.handle, begin=[start], end=[start + chunk.shape[0]], strides=[1], value=value
        )
        release_mapped_pages(chunk)
    release_mapped_pages(array)


def load_weights(entries, state_dict, *, source, ignorable=()):
    """Loads a weight table from a state dict, exactly or not at all.

    Nothing is assigned until every check has passed:

    1. every HF key of every entry is in `state_dict`;
    2. every transformed array has its variable's shape;
    3. every key of `state_dict` is used by an entry or matches an `ignorable` pattern.

    Args:
        entries: the family's list of `WeightEntry`.
        state_dict: HF key -> array, e.g. from `read_state_dict`, or from `open_state_dict`
            (memory-mapped views: each tensor is copied into its variable and its pages dropped
            in turn, so the whole file is never resident at once).
        source: the checkpoint's folder or file name, for messages.
        ignorable: regular expressions (matched with `re.fullmatch`) for keys that may be present
            and unused, e.g. `r"h\\.\\d+\\.attn\\.bias"` or `r"lm_head\\.weight"`.

    Raises:
        CheckpointError: keys are missing, shapes do not match, keys are unused, or a float
            variable's tensor is stored as integers or bools; the message lists every offending key
            (and its file, when `state_dict` is a `StateDict`).

    Example:

    ```python
    load_weights(entries, read_state_dict(folder), source=folder, ignorable=[r"lm_head\\.weight"])
    ```
    """
    entries = _check_entries(entries)
    patterns = _compile_patterns(ignorable)
    used = {key for entry in entries for key in entry.hf_keys}
    missing = sorted(used - set(state_dict))
    if missing:
        raise CheckpointError(f"Keys missing from {source}: " + ", ".join(f"`{k}`" for k in missing))
    arrays = _converted_arrays(entries, state_dict, source)
    unused = sorted(key for key in state_dict if key not in used)
    ignored = [key for key in unused if any(p.fullmatch(key) for p in patterns)]
    unexpected = sorted(set(unused) - set(ignored))
    if unexpected:
        raise CheckpointError(
            f"Keys in {source} that no weight is loaded from: "
            + ", ".join(f"`{k}`" for k in unexpected)
            + ". Load them, or list them as ignorable if the model does not need them."
        )
    for entry, array in zip(entries, arrays):
        if array is None:
            hf_arrays, array, _ = _convert(entry, state_dict)
        else:
            hf_arrays = [np.asarray(state_dict[key]) for key in entry.hf_keys]
        _assign(entry.variable, array)
        for hf_array in hf_arrays:
            release_mapped_pages(hf_array)
    logger.info(
        "Loaded %d tensors into %d variables from %s; ignored %d keys%s",
        len(used), len(entries), source, len(ignored), (": " + ", ".join(ignored)) if ignored else ".",
    )


def export_weights(entries):
    """Exports a weight table back to an HF state dict: the inverse of `load_weights`.

    Args:
        entries: the family's list of `WeightEntry`.

    Returns:
        A dict of HF key -> contiguous array that owns its memory (float variables as float32),
        ready for `safetensors.numpy.save_file`.

    Raises:
        ValueError: two entries export different values for the same HF key.
    """
    state_dict = {}
    for entry in _check_entries(entries):
        value = keras.ops.convert_to_numpy(entry.variable.value)
        if "float" in str(entry.variable.dtype):
            value = value.astype(np.float32)
        for key, array in zip(entry.hf_keys, entry.transform.to_hf(value)):
            array = np.array(array, order="C", copy=True)
            if key in state_dict and not np.array_equal(state_dict[key], array):
                raise invalid_argument("entries", f"one value per HF key; `{key}` gets two different values", key)
            state_dict.setdefault(key, array)
    return state_dict
