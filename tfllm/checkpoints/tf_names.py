"""TensorFlow checkpoints from transformers: reading `tf_model.h5` and converting TF names to PyTorch.

transformers' TF models name their variables like `tfgpt2lm_head_model/transformer/h_._0/ln_1/gamma:0`.
They are stored in three shapes, all seen with transformers 4.57:

- `tf_model.h5` (Keras 2 HDF5): the root attribute `layer_names` lists groups (`transformer`); each
  group's `weight_names` attribute lists full names that start with the model scope
  (`tfgpt2lm_head_model/transformer/h_._0/attn/c_attn/weight:0`).
- sharded `tf_model-0000k-of-0000n.h5`: the root `layer_names` lists datasets whose paths are the
  names without the model scope (`transformer/wte/embeddings:0`).
- `model.safetensors` with metadata `format=tf`: names without the model scope
  (`transformer/h_._0/attn/c_attn/weight:0`).

`tf_to_pt_state_dict` then renames them the way `convert_tf_weight_name_to_pt_weight_name` does and
moves arrays into PyTorch layout.
"""

import os
import re

import h5py
import numpy as np

from tfllm.checkpoints.errors import CheckpointError
from tfllm.checkpoints.safetensors_io import to_float32_if_float

_LAST_COMPONENT_RENAMES = {"kernel": "weight", "embeddings": "weight", "gamma": "weight", "beta": "bias"}
# TF kernel layout -> PyTorch weight layout, by kernel rank (Dense, Conv1D, Conv2D).
_KERNEL_AXES = {2: (1, 0), 3: (2, 1, 0), 4: (3, 2, 0, 1)}


def looks_like_tf_names(names):
    """Returns True if any name uses TF scoping (`/`) or a TF variable suffix (`:0`)."""
    return any("/" in name or re.search(r":\d+$", name) for name in names)


def _decode(values):
    return [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in values]


def _read_h5_layers(handle):
    """Yields (name without model scope, array) for every weight in an open Keras 2 HDF5 file."""
    for layer_name in _decode(handle.attrs["layer_names"]):
        node = handle[layer_name]
        if isinstance(node, h5py.Dataset):
            # A transformers shard: the dataset path is already the name without the model scope.
            yield layer_name, node[()]
            continue
        for weight_name in _decode(node.attrs.get("weight_names", [])):
            parts = weight_name.split("/")
            # As transformers' `load_tf_weights_from_h5`: full names start with the model scope.
            yield ("/".join(parts[1:]) if len(parts) > 1 else weight_name), node[weight_name][()]


def read_tf_h5(path):
    """Reads the weights of a Keras 2 `tf_model.h5` (or one transformers shard of it).

    Args:
        path: the `.h5` file.

    Returns:
        A dict of TF weight name (without the model scope, e.g.
        `transformer/h_._0/attn/c_attn/weight:0`) -> `np.ndarray`, floats as float32.

    Raises:
        CheckpointError: the file is not a readable Keras HDF5 weights file.
    """
    path = os.fspath(path)
    try:
        with h5py.File(path, "r") as handle:
            if "layer_names" not in handle.attrs:
                raise CheckpointError(f"{path}: not a Keras HDF5 weights file (no `layer_names` attribute).")
            weights = {}
            for name, array in _read_h5_layers(handle):
                array = to_float32_if_float(np.asarray(array))
                # A head tied to the embeddings stores them again in its own group (TFBertForMaskedLM).
                if name in weights and not np.array_equal(weights[name], array):
                    raise CheckpointError(f"{path}: weight `{name}` appears twice with different values.")
                weights[name] = array
            return weights
    except CheckpointError:
        raise
    except (OSError, KeyError, ValueError, TypeError) as error:
        raise CheckpointError(f"{path}: unreadable HDF5 checkpoint ({type(error).__name__}: {error}).") from error


def tf_name_to_pt_name(tf_name):
    """Converts a TF weight name (without the model scope) to a PyTorch state dict key.

    Follows transformers' `convert_tf_weight_name_to_pt_weight_name`: drops the `:0` suffix, keeps
    only what follows `___` in a scope (`mlm___cls` -> `cls`), turns list scopes `h_._0` into `h.0`,
    `/` into `.`, and renames `kernel`, `embeddings`, `gamma`, `beta`.

    Args:
        tf_name: e.g. `transformer/h_._0/ln_1/gamma:0`.

    Returns:
        A tuple `(pt_name, transpose)`, e.g. `("transformer.h.0.ln_1.weight", False)`; `transpose`
        is True for kernels, whose TF layout is the transpose of PyTorch's.
    """
    name = re.sub(r":\d+$", "", tf_name)
    parts = [part for part in name.replace("_._", "/").split("/") if part]
    parts = [part.rsplit("___", 1)[-1] for part in parts[:-1]] + parts[-1:]
    transpose = parts[-1] == "kernel"
    parts[-1] = _LAST_COMPONENT_RENAMES.get(parts[-1], parts[-1])
    return ".".join(parts), transpose


def _to_pt_layout(source, tf_name, pt_name, array, transpose):
    if transpose:
        axes = _KERNEL_AXES.get(array.ndim)
        if axes is None:
            raise CheckpointError(f"{source}: kernel `{tf_name}` has rank {array.ndim}; expected 2, 3 or 4.")
        return np.ascontiguousarray(np.transpose(array, axes))
    is_bias = pt_name.rsplit(".", 1)[-1] == "bias"  # Not `final_logits_bias`, which is (1, n) in PyTorch too.
    if is_bias and array.ndim > 1 and all(d == 1 for d in array.shape[:-1]):
        # transformers' TFConv1D (GPT-2) stores its bias as (1, nf); PyTorch's Conv1D bias is (nf,).
        return array.reshape(array.shape[-1])
    return array


def tf_to_pt_state_dict(tf_weights, source):
    """Converts TF-named weights to PyTorch names and layouts.

    Args:
        tf_weights: dict of TF weight name (without the model scope) -> array.
        source: the file the weights came from, for error messages.

    Returns:
        A dict of PyTorch key -> array in PyTorch layout (kernels transposed, `(1, n)` biases
        flattened).

    Raises:
        CheckpointError: two TF names map to the same PyTorch key, or a kernel has an unknown rank.
    """
    converted = {}
    origin = {}
    for tf_name, array in tf_weights.items():
        pt_name, transpose = tf_name_to_pt_name(tf_name)
        if pt_name in converted:
            raise CheckpointError(
                f"{source}: TF weights `{origin[pt_name]}` and `{tf_name}` both map to PyTorch key `{pt_name}`."
            )
        converted[pt_name] = _to_pt_layout(source, tf_name, pt_name, array, transpose)
        origin[pt_name] = tf_name
    return converted
