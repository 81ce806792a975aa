"""Concurrent exports to one base path, and the staging a killed export leaves behind."""

import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from testing import make_tiny_lm_folder

from tfllm import files as files_lib
from tfllm.export.versions import atomic_version
from tfllm.files import atomic_file, atomic_folder, remove_stale_staging
from tfllm.serving.server.config import version_folders

ROOT = Path(__file__).resolve().parents[2]


def dead_pid():
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def staging(parent, name, host=None, pid=None, age_s=0.0):
    """A staging folder as `atomic_version` names it (or, without host and pid, as older tfllm named it)."""
    owner = "" if pid is None else f"{host or files_lib._host()}.{pid}."
    path = parent / f".{name}.{owner}k3j_x9.tmp"
    (path / "export").mkdir(parents=True)
    (path / "export" / "saved_model.pb").write_bytes(b"partial")
    if age_s:
        past = time.time() - age_s
        os.utime(path, (past, past))
    return path


def test_concurrent_exports_each_claim_their_own_version(tmp_path):
    writers = 6
    barrier = threading.Barrier(writers)
    results, errors = {}, []

    def export(index):
        try:
            with atomic_version(tmp_path) as staged:
                (staged.folder / "writer.txt").write_text(str(index))
                barrier.wait(timeout=30)  # every writer staged before any publishes
            results[index] = staged.version
        except Exception as e:  # noqa: BLE001 - reported by the assertion below
            errors.append(e)

    threads = [threading.Thread(target=export, args=(i,)) for i in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert sorted(results.values()) == list(range(1, writers + 1))
    for index, version in results.items():  # nothing replaced: each version holds its writer's files
        assert (tmp_path / str(version) / "writer.txt").read_text() == str(index)
    assert sorted(os.listdir(tmp_path)) == [str(v) for v in range(1, writers + 1)]  # no staging left


def test_the_same_explicit_version_twice_at_once_fails_the_second_clearly(tmp_path):
    barrier = threading.Barrier(2)
    outcomes = []

    def export(index):
        try:
            with atomic_version(tmp_path, version=3) as staged:
                (staged.folder / "writer.txt").write_text(str(index))
                barrier.wait(timeout=30)
            outcomes.append(("ok", index))
        except FileExistsError as e:
            outcomes.append(("refused", str(e)))

    threads = [threading.Thread(target=export, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    kinds = sorted(kind for kind, _ in outcomes)
    assert kinds == ["ok", "refused"]
    winner = next(value for kind, value in outcomes if kind == "ok")
    message = next(value for kind, value in outcomes if kind == "refused")
    assert "version=3" in message and "another export meanwhile" in message
    assert (tmp_path / "3" / "writer.txt").read_text() == str(winner)
    assert os.listdir(tmp_path) == ["3"]


def test_stale_staging_is_removed_and_live_staging_is_left(tmp_path, caplog):
    dead = staging(tmp_path, "1", pid=dead_pid())
    live = staging(tmp_path, "1", pid=os.getpid())
    old_unnamed = staging(tmp_path, "2", age_s=files_lib.STALE_AFTER_S + 60)  # an older tfllm's name
    fresh_other_host = staging(tmp_path, "2", host="elsewhere", pid=1)
    old_other_host = staging(tmp_path, "3", host="elsewhere", pid=1, age_s=files_lib.STALE_AFTER_S + 60)
    assert version_folders(str(tmp_path)) == {}  # the server never takes staging for a version
    with caplog.at_level(logging.INFO, logger="tfllm.export.versions"):
        with atomic_version(tmp_path) as staged:
            (staged.folder / "saved_model.pb").write_bytes(b"complete")
    assert staged.version == 1
    assert not dead.exists() and not old_unnamed.exists() and not old_other_host.exists()
    assert live.exists() and fresh_other_host.exists()
    removed = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(removed) == 3 and any(str(dead) in m and "no longer running" in m for m in removed)
    assert sorted(version_folders(str(tmp_path))) == [1]


def test_single_files_and_folders_clean_their_own_stale_staging(tmp_path):
    pid = dead_pid()
    stale_file = tmp_path / f".m.tflite.{files_lib._host()}.{pid}.ab12_c.tmp"
    stale_file.write_bytes(b"partial")
    other_target = tmp_path / f".other.tflite.{files_lib._host()}.{pid}.ab12_c.tmp"
    other_target.write_bytes(b"partial")
    stale_folder = staging(tmp_path, "m_onnx", pid=pid)
    with atomic_file(tmp_path / "m.tflite") as temporary:
        assert temporary.name.startswith(f".m.tflite.{files_lib._host()}.{os.getpid()}.")
        temporary.write_bytes(b"model")
    with atomic_folder(tmp_path / "m_onnx") as folder:
        (folder / "model.onnx").write_bytes(b"model")
    assert not stale_file.exists() and not stale_folder.exists()
    assert other_target.exists()  # another target's staging: not this write's business
    assert remove_stale_staging(tmp_path, r"other\.tflite") == [other_target]


def test_an_existing_version_is_refused_up_front_and_kept(tmp_path):
    (tmp_path / "1").mkdir()
    (tmp_path / "1" / "saved_model.pb").write_bytes(b"v1")
    with pytest.raises(FileExistsError, match=r"Received: version=1"):
        with atomic_version(tmp_path, version=1):
            pytest.fail("must not start")
    with atomic_version(tmp_path, version=1, overwrite=True) as staged:
        (staged.folder / "saved_model.pb").write_bytes(b"v1 again")
    assert (tmp_path / "1" / "saved_model.pb").read_bytes() == b"v1 again"
    assert os.listdir(tmp_path) == ["1"]


@pytest.mark.slow
def test_two_export_processes_to_one_base_path_write_two_versions(tmp_path):
    pytest.importorskip("tensorflow_text")
    folder = make_tiny_lm_folder(tmp_path / "tiny_hf", ["The river ran fast under the bridge."] * 20)
    base = tmp_path / "saved_models" / "tiny"
    command = [sys.executable, "-m", "tfllm.cli", "export", str(folder), "--output", str(base), "--max-new-tokens", "2"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    processes = [subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  text=True) for _ in range(2)]
    outputs = [process.communicate(timeout=600)[0] for process in processes]
    assert [process.returncode for process in processes] == [0, 0], outputs
    assert sorted(os.listdir(base)) == ["1", "2"]  # neither replaced the other, no staging left
    printed = [{v for v in ("1", "2") if f"wrote {os.path.join(str(base), v)}" in output} for output in outputs]
    assert sorted(map(sorted, printed)) == [["1"], ["2"]], outputs  # each says which version it wrote
