"""Finding and reading the weights of a Hugging Face model folder.

`read_state_dict` accepts every layout transformers writes (safetensors, sharded or not, with
PyTorch or TF names; `tf_model.h5`; `pytorch_model.bin`, sharded or not) and always returns
PyTorch-style keys in PyTorch layout, so a family's weight table is written once.
"""

import logging
import os

from tfllm.checkpoints.errors import CheckpointError
from tfllm.checkpoints.safetensors_io import map_safetensors, read_safetensors
from tfllm.checkpoints.tf_names import looks_like_tf_names, read_tf_h5, tf_to_pt_state_dict
from tfllm.checkpoints.torch_pickle import read_torch_bin
from tfllm.model_files import folder_file, read_json

logger = logging.getLogger(__name__)

SAFETENSORS = "safetensors"
TF_H5 = "tf_h5"
PYTORCH_BIN = "pytorch_bin"

# (file name, format, is an index of shards), in order of preference.
_CANDIDATES = (
    ("model.safetensors.index.json", SAFETENSORS, True),
    ("model.safetensors", SAFETENSORS, False),
    ("tf_model.h5", TF_H5, False),
    ("tf_model.h5.index.json", TF_H5, True),
    ("pytorch_model.bin.index.json", PYTORCH_BIN, True),
    ("pytorch_model.bin", PYTORCH_BIN, False),
)


class StateDict(dict):
    """A state dict, key -> array, that also knows the file each key was read from (`files`), for messages."""

    def __init__(self, items=(), files=None):
        super().__init__(items)
        self.files = dict(files or {})

    def renamed(self, rename):
        """A copy with every key `k` renamed to `rename(k)`, files included."""
        return StateDict(
            ((rename(key), value) for key, value in self.items()),
            files={rename(key): path for key, path in self.files.items()},
        )


def _check_folder(folder):
    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"Model folder not found: {folder}")
    return folder


def load_config(folder):
    """Reads a model folder's `config.json`.

    Args:
        folder: a Hugging Face model folder.

    Returns:
        The config as a dict.

    Raises:
        FileNotFoundError: the folder or its `config.json` does not exist.
        CheckpointError: `config.json` is not a JSON object, or leads out of the folder.

    Example:

    ```python
    config = load_config("gpt2")
    config["n_layer"]  # 12
    ```
    """
    folder = _check_folder(folder)
    path = os.path.join(folder, "config.json")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"No config.json in model folder {folder}: {path} does not exist.")
    config = read_json(folder_file(folder, "config.json"))
    if not isinstance(config, dict):
        raise CheckpointError(f"{path}: expected a JSON object, got a {type(config).__name__}.")
    return config


def read_weight_map(index_path):
    """Reads the `weight_map` (key -> shard file name) of a sharded checkpoint index."""
    index = read_json(index_path)
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
        raise CheckpointError(f"{index_path}: no `weight_map` object mapping keys to shard file names.")
    return weight_map


def _shard_files(folder, index_path):
    shards = []
    for shard in sorted(set(read_weight_map(index_path).values())):
        if os.path.basename(shard) != shard or shard in ("", ".", ".."):
            raise CheckpointError(f"{index_path}: shard name {shard!r} is not a plain file name.")
        if not os.path.isfile(os.path.join(folder, shard)):
            raise CheckpointError(f"{index_path}: shard {shard} is missing from {folder}.")
        shards.append(folder_file(folder, shard))
    return shards


def find_weight_files(folder):
    """Finds the weight files of a model folder.

    Looks, in order, for `model.safetensors.index.json`, `model.safetensors`, `tf_model.h5`,
    `tf_model.h5.index.json`, `pytorch_model.bin.index.json` and `pytorch_model.bin`.

    Args:
        folder: a Hugging Face model folder.

    Returns:
        A tuple `(format, files)`: `format` is one of "safetensors", "tf_h5", "pytorch_bin";
        `files` are the paths to read (the shards named by an index, or the single file).

    Raises:
        FileNotFoundError: the folder does not exist or holds none of those files.
        CheckpointError: an index is invalid or names a missing shard, or a file leads out of the
            folder (see `tfllm.model_files.folder_file`).
    """
    folder = _check_folder(folder)
    for name, weight_format, is_index in _CANDIDATES:
        if os.path.isfile(os.path.join(folder, name)):
            path = folder_file(folder, name)
            return weight_format, (_shard_files(folder, path) if is_index else [path])
    names = ", ".join(name for name, _, _ in _CANDIDATES)
    raise FileNotFoundError(f"No weights found in {folder}: looked for {names}.")


def _read_safetensors_file(path, mapped=False):
    tensors, metadata = (map_safetensors if mapped else read_safetensors)(path)
    weight_format = metadata.get("format")
    if weight_format == "flax":
        raise CheckpointError(f"{path}: Flax safetensors (metadata format=flax) are unsupported.")
    if weight_format == "tf" or looks_like_tf_names(tensors):
        # TF kernels are renamed and re-laid out; the eager reader widens them as before.
        return tf_to_pt_state_dict(read_safetensors(path)[0] if mapped else tensors, path)
    return tensors


def _read_file(weight_format, path, mapped=False):
    if weight_format == SAFETENSORS:
        return _read_safetensors_file(path, mapped)
    if weight_format == TF_H5:
        return tf_to_pt_state_dict(read_tf_h5(path), path)
    return read_torch_bin(path)


def _read_all(folder, mapped):
    weight_format, files = find_weight_files(folder)
    state_dict = StateDict()
    for path in files:
        for key, array in _read_file(weight_format, path, mapped).items():
            if key in state_dict:
                raise CheckpointError(f"Key `{key}` appears in both {state_dict.files[key]} and {path}.")
            state_dict[key] = array
            state_dict.files[key] = path
    _check_index_keys(folder, weight_format, state_dict)
    logger.info("Read %d tensors (%s) from %s.", len(state_dict), weight_format, folder)
    return state_dict


def read_state_dict(folder):
    """Reads all weights of a model folder as a PyTorch-style state dict.

    TF weights (`tf_model.h5`, TF-named safetensors) are renamed and transposed into PyTorch
    keys and layouts (`transformer/h_._0/ln_1/gamma:0` -> `transformer.h.0.ln_1.weight`).

    Args:
        folder: a Hugging Face model folder.

    Returns:
        A `StateDict` (a dict) of PyTorch key -> `np.ndarray`; its `files` names each key's file.
        Floating point arrays are float32 (float16 and bfloat16 are widened); integer arrays keep
        their dtype.

    Raises:
        FileNotFoundError: no weights file was found.
        CheckpointError: a file is corrupt, an index names a missing shard or a key missing
            from its shard, or two files hold the same key.

    Example:

    ```python
    state_dict = read_state_dict("gpt2")
    state_dict["transformer.wte.weight"].shape  # (50257, 768)
    ```
    """
    return _read_all(folder, mapped=False)


def open_state_dict(folder):
    """Like `read_state_dict`, but PyTorch-named safetensors are memory-mapped, not read.

    Their tensors are read-only views over the mapped files, in the stored dtype (float16 and
    bfloat16 are not widened), and cost no memory until read; `load_weights` copies them into
    variables one at a time. Every file's header and the index are checked up front, exactly as
    `read_state_dict` does, so a corrupt or incomplete checkpoint is refused before any tensor
    is used. Other formats (`tf_model.h5`, `pytorch_model.bin`, TF-named safetensors) are read
    as by `read_state_dict`.

    Args:
        folder: a Hugging Face model folder.

    Returns:
        A dict of PyTorch key -> `np.ndarray`.

    Raises:
        FileNotFoundError, CheckpointError: as `read_state_dict`.
    """
    return _read_all(folder, mapped=True)


def _check_index_keys(folder, weight_format, state_dict):
    """Checks that every key a PyTorch-named index lists was found in its shard."""
    index_name = {SAFETENSORS: "model.safetensors.index.json", PYTORCH_BIN: "pytorch_model.bin.index.json"}
    if weight_format not in index_name:
        # A TF index lists names with the model scope, which its shards do not store.
        return
    # `find_weight_files` prefers an index, so an index that exists is the one that was read.
    index_path = os.path.join(os.fspath(folder), index_name[weight_format])
    if not os.path.isfile(index_path):
        return
    weight_map = read_weight_map(index_path)
    if looks_like_tf_names(weight_map):
        return
    missing = sorted(key for key in weight_map if key not in state_dict)
    if missing:
        raise CheckpointError(
            f"{index_path}: keys listed in the index are missing from their shards: "
            + ", ".join(f"`{key}` ({weight_map[key]})" for key in missing)
        )
