"""MultiWorkerMirroredStrategy: two worker processes on 127.0.0.1 against one process.

Each run is a subprocess of `multi_worker_worker.py` (a process can hold one cluster only). The
two workers form a cluster through `TF_CONFIG`; a third process trains the same tiny GPT-2 on the
same global batches with the default strategy.
"""

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

WORKER = Path(__file__).with_name("strategy_worker.py")
TIMEOUT_S = 240  # a hung collective must fail the test, never hang CI
GRACE_S = 30  # how long the others may run on after one process failed


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:  # all bound at once, so the ports differ
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _environment(tf_config=None):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
    env.pop("TF_CONFIG", None)
    if tf_config is not None:
        env["TF_CONFIG"] = json.dumps(tf_config)
    return env


def _run_together(jobs, folder):
    """Starts every `(args, env)` job at once; returns `[(returncode, stderr)]` in job order.

    A worker whose peer died waits on its collectives: once one process fails, the others get
    `GRACE_S` more seconds, then are killed (return code -9). When none has failed by `TIMEOUT_S`,
    all are killed and the test fails with their stderr.
    """
    processes, logs = [], []
    try:
        for index, (args, env) in enumerate(jobs):
            logs.append(open(folder / f"stderr_{index}.txt", "w+"))
            processes.append(
                subprocess.Popen(
                    [sys.executable, str(WORKER), *args], env=env, stdout=subprocess.DEVNULL, stderr=logs[-1]
                )
            )
        deadline = time.monotonic() + TIMEOUT_S
        while any(process.poll() is None for process in processes) and time.monotonic() < deadline:
            if any(process.poll() for process in processes):
                deadline = min(deadline, time.monotonic() + GRACE_S)
            time.sleep(0.2)
        failed = any(process.poll() for process in processes)  # a non-zero exit; None is running
        running = any(process.poll() is None for process in processes)
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
    if running and not failed:
        pytest.fail(f"workers still running after {TIMEOUT_S} s:\n" + _tails(logs))
    results = []
    for process, log in zip(processes, logs):
        log.seek(0)
        results.append((process.returncode, log.read()))
        log.close()
    return results


def _tails(logs):
    text = []
    for index, log in enumerate(logs):
        log.seek(0)
        text.append(f"--- process {index} ---\n{log.read()[-3000:]}")
    return "\n".join(text)


def _cluster_jobs(folder, *extra):
    ports = _free_ports(2)
    workers = [f"127.0.0.1:{port}" for port in ports]
    return [
        (
            ["multi_worker", str(folder / f"worker_{index}.npz"), *extra],
            _environment({"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}),
        )
        for index in range(2)
    ]


def _weights(npz):
    return {key: npz[key] for key in npz.files if key.startswith("w_")}


def test_two_workers_match_each_other_and_a_single_process(tmp_path):
    jobs = _cluster_jobs(tmp_path) + [(["default", str(tmp_path / "single.npz")], _environment())]
    results = _run_together(jobs, tmp_path)
    for index, (returncode, stderr) in enumerate(results):
        assert returncode == 0, f"process {index} failed:\n{stderr[-4000:]}"

    first, second = (np.load(tmp_path / f"worker_{index}.npz") for index in range(2))
    single = np.load(tmp_path / "single.npz")
    assert int(first["replicas"]) == int(second["replicas"]) == 2
    assert int(single["replicas"]) == 1
    names = sorted(_weights(single))
    assert names and names == sorted(_weights(first)) == sorted(_weights(second))

    for name in names:  # the all-reduce hands both workers the same update
        np.testing.assert_array_equal(first[name], second[name], err_msg=name)
    max_diff = max(float(np.abs(first[name] - single[name]).max()) for name in names)
    moved = max(float(np.abs(single[name] - single[f"initial_{name}"]).max()) for name in names)
    assert moved > 1e-2, f"training barely moved the weights ({moved:.3g})"  # else 1e-5 proves little
    assert max_diff < 1e-5, f"max |multi-worker - single process| = {max_diff:.3g}"  # measured: 2.2e-8
    np.testing.assert_allclose(first["losses"], single["losses"], rtol=1e-5)
    assert first["losses"][1] < first["losses"][0]


def test_batch_size_not_divisible_by_the_replicas_stops_both_workers(tmp_path):
    results = _run_together(_cluster_jobs(tmp_path, "3"), tmp_path)
    for returncode, stderr in results:
        assert returncode != 0
        assert (
            "Invalid value for argument `batch_size`. Expected a positive multiple of the number "
            "of replicas (2). Received: batch_size=3"
        ) in stderr
