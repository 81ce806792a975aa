"""Atomic writes of exports: a version folder (TF Serving layout) or a single file appears whole or not at all."""

import contextlib
import logging
import os
import shutil
import tempfile
from pathlib import Path

from tfllm.errors import check_int
from tfllm.files import umask_permissions

logger = logging.getLogger(__name__)


def versions(export_base):
    """The numeric version folders under `export_base`, sorted (TF Serving ignores other names)."""
    base = Path(export_base)
    if not base.is_dir():
        return []
    return sorted(int(p.name) for p in base.iterdir() if p.is_dir() and p.name.isdigit())


def next_version(export_base):
    existing = versions(export_base)
    return existing[-1] + 1 if existing else 1


@contextlib.contextmanager
def atomic_version(export_base, version=None, overwrite=False):
    """Yields `(folder_to_write, version)`; on success the folder becomes `export_base/<version>`.

    The folder is built under a hidden temporary name inside `export_base` (same file system, and a
    name TF Serving's version poller skips), then renamed. On any error nothing new is left behind
    and an existing version is untouched.

    Args:
        export_base: the model's folder (`saved_models/NAME`).
        version: the version number to write; defaults to one past the highest existing.
        overwrite: replace an existing `version` instead of refusing.
    """
    base = Path(export_base)
    version = next_version(base) if version is None else check_int("version", version, minimum=1)
    final = base / str(version)
    if final.exists() and not overwrite:
        raise FileExistsError(
            f"Invalid value for argument `version`. Expected a version that does not exist yet under {base} "
            f"(or overwrite=True / --overwrite). Received: version={version}, and {final} exists"
        )
    with atomic_folder(final, overwrite=True) as folder:
        yield folder, version


@contextlib.contextmanager
def atomic_folder(path, overwrite=True):
    """Yields an empty temporary folder next to `path`; on success it replaces `path` in one rename.

    The temporary name is hidden and not a number, so TF Serving's version poller skips it.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(
            f"Invalid value for argument `path`. Expected a folder that does not exist yet (or overwrite=True / "
            f"--overwrite). Received: path={str(path)!r}, which exists"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        target = staging / "export"
        target.mkdir()
        yield target
        if path.exists():
            os.rename(path, staging / "replaced")
        os.rename(target, path)
        logger.info("Wrote %s", path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


@contextlib.contextmanager
def atomic_file(path, overwrite=True):
    """Yields a temporary path next to `path`; on success it replaces `path` in one rename."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(
            f"Invalid value for argument `path`. Expected a file that does not exist yet (or overwrite=True / "
            f"--overwrite). Received: path={str(path)!r}, which exists"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    try:
        yield Path(temporary)
        umask_permissions(temporary)  # mkstemp's 0600 would make the published file private
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)
