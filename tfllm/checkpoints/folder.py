"""Writing a Hugging Face model folder atomically."""

import json
import logging
import os

import numpy as np
import safetensors.numpy

from tfllm.errors import invalid_argument
from tfllm.files import atomic_folder, umask_permissions

logger = logging.getLogger(__name__)

_RESERVED = ("config.json", "model.safetensors")


def _check_file_name(name):
    normalized = os.path.normpath(name) if isinstance(name, str) else None
    if (
        normalized is None
        or os.path.isabs(name)
        or normalized.startswith("..")
        or normalized in (".", *_RESERVED)
    ):
        raise invalid_argument(
            "files", "relative file names inside the folder, other than config.json and model.safetensors", name
        )
    return normalized


def _write_contents(folder, config, state_dict, files, metadata):
    with open(os.path.join(folder, "config.json"), "w", encoding="utf-8") as handle:
        json.dump(config, handle, indent=2, sort_keys=True)
        handle.write("\n")
    # safetensors refuses non-contiguous arrays and arrays that share memory.
    tensors = {key: np.array(value, order="C", copy=True) for key, value in state_dict.items()}
    safetensors.numpy.save_file(tensors, os.path.join(folder, "model.safetensors"), metadata=metadata)
    umask_permissions(os.path.join(folder, "model.safetensors"))  # safetensors writes it 0600
    for name, content in files.items():
        path = os.path.join(folder, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        mode, encoding = ("w", "utf-8") if isinstance(content, str) else ("wb", None)
        with open(path, mode, encoding=encoding) as handle:
            handle.write(content)


def save_folder(folder, *, config, state_dict, files=None, metadata=None):
    """Writes a Hugging Face model folder: `config.json`, `model.safetensors` and extra files.

    Everything is written to a temporary sibling folder that then replaces `folder`
    (`tfllm.files.atomic_folder`), so a failure part-way leaves an existing `folder` untouched and no
    partial folder behind.

    Args:
        folder: the folder to write; replaced if it exists.
        config: the `config.json` content (written with indent 2, sorted keys).
        state_dict: HF key -> array, written to `model.safetensors`.
        files: optional extra files, relative name -> `str` (UTF-8 text) or `bytes`, e.g.
            `{"tokenizer.json": text}`.
        metadata: the safetensors `__metadata__` (string values); default `{"format": "pt"}`,
            which transformers expects of PyTorch-named weights.

    Example:

    ```python
    save_folder("out/gpt2", config=config, state_dict=export_weights(entries))
    ```
    """
    if not isinstance(config, dict):
        raise invalid_argument("config", "a dict", type(config).__name__)
    if not isinstance(state_dict, dict):
        raise invalid_argument("state_dict", "a dict of name -> array", type(state_dict).__name__)
    files = {_check_file_name(name): content for name, content in (files or {}).items()}
    for name, content in files.items():
        if not isinstance(content, (str, bytes)):
            raise invalid_argument(f"files[{name!r}]", "str or bytes", type(content).__name__)
    metadata = {"format": "pt"} if metadata is None else metadata
    folder = os.path.abspath(os.fspath(folder))
    with atomic_folder(folder) as temporary:
        _write_contents(temporary, config, state_dict, files, metadata)
    logger.info("Saved %d tensors and %d extra files to %s.", len(state_dict), len(files), folder)
