"""File helpers shared by every writer of models, tokenizers, checkpoints and exports.

`atomic_file` and `atomic_folder` are the one way tfllm publishes a file or a folder: everything is
written under a hidden staging name next to its target, `.<name>.<host>.<pid>.<random>.tmp`, flushed
to disk, then renamed over the target, so a reader sees the old content or the new, never a part.
The staging name is not a number, so TF Serving's version poller (and `tfllm serve`) skips it, and it
names its owner, so the next write to the same place removes the staging left by a killed process
(see `remove_stale_staging`).
"""

import contextlib
import logging
import os
import re
import shutil
import socket
import tempfile
import time
from pathlib import Path

logger = logging.getLogger(__name__)

STALE_AFTER_S = 24 * 3600  # staging whose owner cannot be checked (another host, an older tfllm) is stale after this


def umask_permissions(path, mode=0o666):
    """Sets `path`'s permissions to `mode` less the process umask, as a plain `open` would have made them.

    Writers that go through `tempfile.mkstemp` (or libraries such as safetensors) create files 0600;
    a published model file must be readable by the server that loads it.
    """
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, mode & ~umask)


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


# === Flushing to disk ===


def _fsync(path, directory=False):
    handle = os.open(path, os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0))
    try:
        os.fsync(handle)
    except OSError:  # some file systems cannot fsync a folder; the rename is still atomic
        if not directory:
            raise
    finally:
        os.close(handle)


def sync_folder(folder):
    """Flushes every file under `folder`, then the folders themselves, so a rename publishes data on disk."""
    for root, _, names in os.walk(folder):
        for name in names:
            if not os.path.islink(os.path.join(root, name)):
                _fsync(os.path.join(root, name))
        _fsync(root, directory=True)


def _refuse_existing(path, overwrite, what):
    if path.exists() and not overwrite:
        raise FileExistsError(
            f"Invalid value for argument `path`. Expected a {what} that does not exist yet (or overwrite=True / "
            f"--overwrite). Received: path={str(path)!r}, which exists"
        )


# === Atomic writers ===


@contextlib.contextmanager
def staged_folder(parent, name, name_pattern):
    """Yields `(staging, target)`: a new staging folder in `parent` for the target `name` (stale
    staging of targets matching `name_pattern` removed first) and an empty folder in it to write.

    The caller publishes `target` inside the `with`: `sync_folder(target)`, then a rename
    (`replace_folder`). The staging folder and whatever is left in it go afterwards. This is the
    building block of `atomic_folder` and of export version folders.
    """
    parent = Path(parent)
    parent.mkdir(parents=True, exist_ok=True)
    remove_stale_staging(parent, name_pattern)
    staging = Path(tempfile.mkdtemp(prefix=_staging_prefix(name), suffix=".tmp", dir=parent))
    try:
        target = staging / "export"
        target.mkdir()
        yield staging, target
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def replace_folder(target, path, staging, replace=True):
    """Renames the folder `target` to `path`. With `replace`, an existing `path` is moved into
    `staging` first and put back if the rename fails, so it is never lost."""
    aside = staging / "replaced"
    replacing = replace and path.exists()
    if replacing:
        os.rename(path, aside)
    try:
        os.rename(target, path)
    except OSError:
        if replacing:
            os.rename(aside, path)
        raise
    _fsync(path.parent, directory=True)


@contextlib.contextmanager
def atomic_folder(path, overwrite=True):
    """Yields an empty folder next to `path` to write; on success it replaces `path` in one rename.

    The files are flushed to disk before the rename; on any error nothing new is left behind and an
    existing `path` is untouched.

    Args:
        path: the folder to write.
        overwrite: replace an existing `path` instead of raising `FileExistsError`.
    """
    path = Path(path)
    _refuse_existing(path, overwrite, "folder")
    with staged_folder(path.parent, path.name, re.escape(path.name)) as (staging, target):
        yield target
        sync_folder(target)
        replace_folder(target, path, staging)
        logger.info("Wrote %s", path)


@contextlib.contextmanager
def atomic_file(path, overwrite=True):
    """Yields a temporary path next to `path` to write; on success it replaces `path` in one rename.

    The file gets the permissions a plain `open` would give it and is flushed to disk before the
    rename; on any error the temporary file is removed and an existing `path` is untouched.

    Args:
        path: the file to write.
        overwrite: replace an existing `path` instead of raising `FileExistsError`.
    """
    path = Path(path)
    _refuse_existing(path, overwrite, "file")
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_staging(path.parent, re.escape(path.name))
    handle, temporary = tempfile.mkstemp(prefix=_staging_prefix(path.name), suffix=".tmp", dir=path.parent)
    os.close(handle)
    try:
        yield Path(temporary)
        umask_permissions(temporary)  # mkstemp's 0600 would make the published file private
        _fsync(temporary)
        os.replace(temporary, path)
        _fsync(path.parent, directory=True)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)
