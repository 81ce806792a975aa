import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from tfllm.training import STRATEGY_NAMES, check_batch_size, get_strategy

WORKER = Path(__file__).with_name("strategy_worker.py")


def test_unknown_name_is_rejected():
    with pytest.raises(ValueError, match=r"Invalid value for argument `strategy`\. Expected one of"):
        get_strategy("horovod")
    with pytest.raises(ValueError, match="Received: strategy='horovod'"):
        get_strategy("horovod")


def test_auto_is_default_strategy_on_this_machine(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert not tf.config.list_logical_devices("GPU")
    strategy = get_strategy("auto")
    assert strategy is tf.distribute.get_strategy()
    assert strategy.num_replicas_in_sync == 1


def test_auto_ignores_a_single_worker_tf_config(monkeypatch):
    monkeypatch.setenv("TF_CONFIG", '{"cluster": {"worker": ["localhost:12345"]}, "task": {}}')
    assert get_strategy("auto") is tf.distribute.get_strategy()


def test_default_and_one_device():
    assert get_strategy("default").num_replicas_in_sync == 1
    one = get_strategy("one_device")
    assert isinstance(one, tf.distribute.OneDeviceStrategy)
    assert "CPU" in one.extended.worker_devices[0].upper()


def test_tpu_without_a_tpu_raises_a_clear_error():
    with pytest.raises(RuntimeError, match="no TPU was found"):
        get_strategy("tpu")


def test_all_names_are_listed():
    assert STRATEGY_NAMES == ("auto", "default", "one_device", "mirrored", "multi_worker", "tpu")


class _FakeStrategy:
    num_replicas_in_sync = 3


def test_check_batch_size():
    check_batch_size(9, _FakeStrategy())
    check_batch_size(7, tf.distribute.get_strategy())
    with pytest.raises(ValueError, match=r"number of replicas \(3\)\. Received: batch_size=8"):
        check_batch_size(8, _FakeStrategy())
    with pytest.raises(ValueError, match="Received: batch_size=0"):
        check_batch_size(0, _FakeStrategy())


def _train(name, path):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    env.pop("TF_CONFIG", None)
    result = subprocess.run(
        [sys.executable, str(WORKER), name, str(path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return np.load(path)


def test_mirrored_on_two_cpus_matches_default_strategy(tmp_path):
    mirrored = _train("mirrored", tmp_path / "mirrored.npz")
    default = _train("default", tmp_path / "default.npz")
    assert int(mirrored["replicas"]) == 2
    assert int(default["replicas"]) == 1
    names = sorted(key for key in default.files if key.startswith("w_"))
    assert names and names == sorted(key for key in mirrored.files if key.startswith("w_"))
    for name in names:
        np.testing.assert_allclose(mirrored[name], default[name], atol=1e-5, err_msg=name)
    for losses in (mirrored["losses"], default["losses"]):
        assert losses[1] < losses[0]
