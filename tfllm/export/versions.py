"""Atomic writes of exports: a version folder (TF Serving layout) or a single file appears whole or not at all.

Everything is written under a hidden staging name next to its target, `.<name>.<host>.<pid>.<random>.tmp`:
not a number, so TF Serving's version poller (and `tfllm serve`) skips it, and named after its owner,
so the next write to the same place removes the staging left by a killed process (see
`remove_stale_staging`). Concurrent exports to one base path each claim their own version number
with a rename that fails when the number is taken.
"""

import contextlib
import dataclasses
import errno
import logging
import os
import re
import shutil
import socket
import tempfile
import time
from pathlib import Path

from tfllm.errors import check_int
from tfllm.files import umask_permissions

logger = logging.getLogger(__name__)

STALE_AFTER_S = 24 * 3600  # staging whose owner cannot be checked (another host, an older tfllm) is stale after this
_TAKEN = (errno.EEXIST, errno.ENOTEMPTY)
_CLAIM_ATTEMPTS = 1000


def versions(export_base):
    """The numeric version folders under `export_base`, sorted (TF Serving ignores other names)."""
    base = Path(export_base)
    if not base.is_dir():
        return []
    return sorted(int(p.name) for p in base.iterdir() if p.is_dir() and p.name.isdigit())


def next_version(export_base):
    existing = versions(export_base)
    return existing[-1] + 1 if existing else 1


# === Staging names and stale staging ===


def _host():
    return re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname()) or "host"


def _staging_prefix(name):
    """`.<name>.<host>.<pid>.`: hidden, not a number, and names the process that owns it."""
    return f".{name}.{_host()}.{os.getpid()}."


def _process_running(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: it exists
        return True
    return True


def _stale_reason(path, host, pid):
    """Why the staging entry `path` is stale, or `None` while its owner may still be writing it."""
    if host == _host() and pid is not None:
        return None if _process_running(int(pid)) else f"process {pid} on this host is no longer running"
    age = time.time() - path.lstat().st_mtime
    if age < STALE_AFTER_S:
        return None
    owner = f"process {pid} on host {host}" if pid is not None else "an unnamed process"
    return f"left by {owner}, {age / 3600:.0f} h old"


def remove_stale_staging(parent, name_pattern):
    """Removes the staging entries in `parent` of targets whose name matches `name_pattern` (a regex)
    and whose writer is gone: its process on this host no longer runs, or (another host, or a name
    without an owner) it is older than `STALE_AFTER_S`. Logs each entry removed or left in place.

    Returns:
        The paths removed.
    """
    staging = re.compile(rf"\.(?:{name_pattern})\.(?:(?P<host>[A-Za-z0-9-]+)\.(?P<pid>\d+)\.)?[a-z0-9_]+\.tmp")
    parent, removed = Path(parent), []
    for path in sorted(parent.iterdir()) if parent.is_dir() else []:
        match = staging.fullmatch(path.name)
        if match is None:
            continue
        try:
            reason = _stale_reason(path, match["host"], match["pid"])
        except FileNotFoundError:  # its owner finished meanwhile
            continue
        if reason is None:
            logger.info("Left staging %s in place: its writer may still be running", path)
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        logger.warning("Removed stale staging %s (%s)", path, reason)
        removed.append(path)
    return removed


@contextlib.contextmanager
def _staging_folder(parent, name, name_pattern):
    """Yields `(staging, target)`: a new staging folder in `parent` (stale ones removed first) and an
    empty folder in it to write; the staging folder and whatever is left in it go afterwards."""
    parent.mkdir(parents=True, exist_ok=True)
    remove_stale_staging(parent, name_pattern)
    staging = Path(tempfile.mkdtemp(prefix=_staging_prefix(name), suffix=".tmp", dir=parent))
    try:
        target = staging / "export"
        target.mkdir()
        yield staging, target
    finally:
        shutil.rmtree(staging, ignore_errors=True)


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
    with _staging_folder(base, name, r"\d+") as (staging, target):
        staged = StagedVersion(target, version)
        yield staged
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
    final = base / str(version)
    if final.exists() and overwrite:
        os.rename(final, staging / "replaced")
    try:
        os.rename(target, final)
    except OSError as e:
        if e.errno not in _TAKEN:
            raise
        _refuse_existing(base, version, False, " (written by another export meanwhile)")
        raise


# === Single folders and files ===


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
    with _staging_folder(path.parent, path.name, re.escape(path.name)) as (staging, target):
        yield target
        if path.exists():
            os.rename(path, staging / "replaced")
        os.rename(target, path)
        logger.info("Wrote %s", path)


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
    remove_stale_staging(path.parent, re.escape(path.name))
    handle, temporary = tempfile.mkstemp(prefix=_staging_prefix(path.name), suffix=".tmp", dir=path.parent)
    os.close(handle)
    try:
        yield Path(temporary)
        umask_permissions(temporary)  # mkstemp's 0600 would make the published file private
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)
