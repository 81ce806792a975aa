"""The one atomic file and folder writer: flushed before the rename, nothing partial left, the old kept."""

import os

import pytest

from tfllm import files
from tfllm.files import atomic_file, atomic_folder


def test_a_failed_file_write_leaves_the_old_file_and_no_staging(tmp_path):
    path = tmp_path / "model.tflite"
    path.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_file(path) as temporary:
            temporary.write_bytes(b"half")
            raise RuntimeError("boom")
    assert path.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["model.tflite"]


def test_a_failed_folder_write_leaves_the_old_folder_and_no_staging(tmp_path):
    path = tmp_path / "model"
    path.mkdir()
    (path / "weights").write_bytes(b"old")
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_folder(path) as folder:
            (folder / "weights").write_bytes(b"half")
            raise RuntimeError("boom")
    assert (path / "weights").read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["model"]


def test_a_failed_rename_puts_the_old_folder_back(tmp_path, monkeypatch):
    path = tmp_path / "model"
    path.mkdir()
    (path / "weights").write_bytes(b"old")
    rename = os.rename

    def failing_publish(source, destination):
        if os.path.basename(source) == "export":  # moving the old folder aside works; publishing the new fails
            raise OSError("disk gone")
        rename(source, destination)

    monkeypatch.setattr(os, "rename", failing_publish)
    with pytest.raises(OSError, match="disk gone"):
        with atomic_folder(path) as folder:
            (folder / "weights").write_bytes(b"new")
    assert (path / "weights").read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["model"]


def test_files_are_flushed_to_disk_before_they_are_published(tmp_path, monkeypatch):
    synced = []
    fsync = os.fsync

    def recording_fsync(handle):
        synced.append(os.readlink(f"/proc/self/fd/{handle}"))
        fsync(handle)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    with atomic_file(tmp_path / "a.txt") as temporary:
        temporary.write_text("a")
    with atomic_folder(tmp_path / "b") as folder:
        (folder / "c.txt").write_text("c")
    assert any(".a.txt." in name for name in synced)  # the staged file, before its rename
    assert any(name.endswith(os.path.join("export", "c.txt")) for name in synced)
    assert (tmp_path / "a.txt").read_text() == "a" and (tmp_path / "b" / "c.txt").read_text() == "c"


def test_an_existing_target_is_refused_without_overwrite(tmp_path):
    (tmp_path / "a.txt").write_text("a")
    with pytest.raises(FileExistsError, match=r"Invalid value for argument `path`. Expected a file"):
        with atomic_file(tmp_path / "a.txt", overwrite=False):
            pytest.fail("must not start")
    assert files.STALE_AFTER_S > 0 and os.listdir(tmp_path) == ["a.txt"]
