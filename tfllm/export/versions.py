"""Atomic writes of export versions: a version folder (TF Serving layout) appears whole or not at all.

A version is staged like any folder tfllm writes (`tfllm.files.staged_folder`: a hidden name that is
not a number, so TF Serving's version poller and `tfllm serve` skip it, and that names its owner, so
a killed export's staging is removed by the next one). Concurrent exports to one base path each claim
their own version number with a rename that fails when the number is taken.
"""

import contextlib
import dataclasses
import errno
import logging
import os
from pathlib import Path

from tfllm.errors import check_int
from tfllm.files import atomic_file, atomic_folder, remove_stale_staging, replace_folder, staged_folder, sync_folder

logger = logging.getLogger(__name__)

_TAKEN = (errno.EEXIST, errno.ENOTEMPTY)
_CLAIM_ATTEMPTS = 1000

# `atomic_file`, `atomic_folder` and `remove_stale_staging` live in tfllm.files (every writer shares them);
# they stay importable from here, where exports have always found them.
__all__ = ["StagedVersion", "atomic_file", "atomic_folder", "atomic_version", "next_version",
           "remove_stale_staging", "versions"]


def versions(export_base):
    """The numeric version folders under `export_base`, sorted (TF Serving ignores other names)."""
    base = Path(export_base)
    if not base.is_dir():
        return []
    return sorted(int(p.name) for p in base.iterdir() if p.is_dir() and p.name.isdigit())


def next_version(export_base):
    existing = versions(export_base)
    return existing[-1] + 1 if existing else 1


# === Versions ===


@dataclasses.dataclass
class StagedVersion:
    """What `atomic_version` yields.

    Attributes:
        folder: the folder to write the version into.
        version: the version number: the one asked for, else `None` until the version is published
            (the number is claimed at the rename, so concurrent exports each get their own).
    """

    folder: Path
    version: int | None


@contextlib.contextmanager
def atomic_version(export_base, version=None, overwrite=False):
    """Yields a `StagedVersion`; on success its folder becomes `export_base/<version>`.

    The folder is built under a hidden staging name inside `export_base` (same file system, and a
    name TF Serving's version poller skips), then renamed. On any error nothing new is left behind
    and an existing version is untouched. Without `version`, the number is claimed by the rename:
    one past the highest existing, or the next free one when another export took it meanwhile, so
    two exports to the same base never replace each other.

    Args:
        export_base: the model's folder (`saved_models/NAME`).
        version: the version number to write; defaults to one past the highest existing at the end.
        overwrite: replace an existing `version` instead of refusing.
    """
    base = Path(export_base)
    if version is not None:
        version = check_int("version", version, minimum=1)
        _refuse_existing(base, version, overwrite)
    name = str(version or next_version(base))
    with staged_folder(base, name, r"\d+") as (staging, target):
        staged = StagedVersion(target, version)
        yield staged
        sync_folder(target)
        if version is None:
            staged.version = _claim_next_version(base, target)
        else:
            _publish_version(base, target, version, overwrite, staging)
        logger.info("Wrote %s", base / str(staged.version))


def _refuse_existing(base, version, overwrite, meanwhile=""):
    final = base / str(version)
    if final.exists() and not overwrite:
        raise FileExistsError(
            f"Invalid value for argument `version`. Expected a version that does not exist yet under {base} "
            f"(or overwrite=True / --overwrite). Received: version={version}, and {final} exists{meanwhile}"
        )


def _claim_next_version(base, target):
    """Renames `target` to the next free version folder; returns its number."""
    version = next_version(base)
    for _ in range(_CLAIM_ATTEMPTS):
        try:
            os.rename(target, base / str(version))
            return version
        except OSError as e:
            if e.errno not in _TAKEN:
                raise
        logger.info("Version %d of %s was written by another export meanwhile; trying the next", version, base)
        version = max(version + 1, next_version(base))
    raise FileExistsError(f"Could not claim a free version number under {base} in {_CLAIM_ATTEMPTS} attempts")


def _publish_version(base, target, version, overwrite, staging):
    try:
        replace_folder(target, base / str(version), staging, replace=overwrite)
    except OSError as e:
        if e.errno not in _TAKEN:
            raise
        _refuse_existing(base, version, False, " (written by another export meanwhile)")
        raise
