"""Opening the files of a model folder without trusting them: shared by checkpoint and tokenizer readers.

A model folder comes from elsewhere, so its files are read under three rules:

1. A file may not lead out of its folder. Its real path (every symlink resolved) must lie inside the
   folder's real path, or, for a Hugging Face hub cache snapshot (`.../models--ORG--NAME/snapshots/REV`,
   whose files are symlinks to `../../blobs/HASH`), inside that repository's `blobs` folder. The target
   must be a regular file. So a `model.safetensors` linked to `/etc/passwd` is refused, and cache
   snapshots load as they are.
2. JSON that nests deeper than Python can parse is refused like any other malformed JSON.
3. Messages name the file and say what is wrong with it, but never quote its bytes: a file read by
   mistake (through a link, or a secret passed as a model) must not leak into logs or responses.
"""

import json
import os

# Folder-name prefixes of repositories in the Hugging Face hub cache (`huggingface_hub` constants).
_HUB_CACHE_REPO_PREFIXES = ("models--", "datasets--", "spaces--")


class CheckpointError(ValueError):
    """A checkpoint is corrupt, unreadable or does not match the model.

    The message always names the file or the key(s) at fault, so a user can tell
    which download or which weight table entry to look at.

    Example:

    ```python
    try:
        state_dict = read_state_dict("path/to/folder")
    except CheckpointError as error:
        logging.error("Cannot load: %s", error)
    ```
    """


def _inside(path, root):
    return os.path.commonpath([path, root]) == root


def _allowed_roots(folder):
    """The real folders a file of `folder` may resolve into: the folder, and its hub cache blobs if any."""
    root = os.path.realpath(folder)
    roots = [root]
    snapshots, repository = os.path.dirname(root), os.path.dirname(os.path.dirname(root))
    if os.path.basename(snapshots) == "snapshots" and os.path.basename(repository).startswith(
        _HUB_CACHE_REPO_PREFIXES
    ):
        roots.append(os.path.join(repository, "blobs"))
    return roots


def folder_file(folder, name):
    """Returns the path of the file `name` of `folder` once it is shown not to lead out of the folder.

    Args:
        folder: a model folder.
        name: a path relative to `folder` (e.g. "config.json", "1_Pooling/config.json").

    Returns:
        `os.path.join(folder, name)`.

    Raises:
        CheckpointError: the file resolves (through symlinks) outside the folder and outside a hub
            cache repository's `blobs`, or is not a regular file.
    """
    path = os.path.join(os.fspath(folder), name)
    target = os.path.realpath(path)
    if not any(_inside(target, root) for root in _allowed_roots(folder)):
        raise CheckpointError(
            f"{path} resolves to {target}, outside the model folder {folder}; refused. Copy the file into "
            "the folder (or link the whole folder) if it is meant to be read."
        )
    if not os.path.isfile(target):
        raise CheckpointError(f"{path} is not a regular file; refused.")
    return path


def parse_json(raw, source):
    """Parses the UTF-8 JSON bytes `raw` read from `source`; any failure is a CheckpointError naming it.

    Messages give positions, never the bytes at them, and JSON nested deeper than Python's parser
    can follow (e.g. 100000 `[`) is refused instead of escaping as a RecursionError.
    """
    try:
        return json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as error:
        raise CheckpointError(f"{source}: not UTF-8 text (invalid byte at offset {error.start}).") from error
    except json.JSONDecodeError as error:
        raise CheckpointError(
            f"{source}: not valid JSON ({error.msg} at line {error.lineno}, column {error.colno})."
        ) from error
    except RecursionError as error:
        raise CheckpointError(f"{source}: JSON nested too deeply to parse; refused.") from error


def read_json(path):
    """Reads a JSON file; malformed, non-UTF-8 or too deeply nested content is a CheckpointError naming it."""
    with open(path, "rb") as handle:
        return parse_json(handle.read(), path)
