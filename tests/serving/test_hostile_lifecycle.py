"""Hostile timing for `tfllm serve` (issue 13): a client that goes away mid-request stops its work, and a
restart while the newest version is half copied serves the newest complete one until the copy ends."""

import logging
import os
import shutil
import socket
import time

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from tfllm.serving.server import config as config_lib

STEPS = 10**9  # minutes of work unless it is stopped


def export_spin_model(base, version=1):
    """A version whose `serving_default` spins `steps` times before echoing `text` (a long generation)."""
    module = tf.Module()

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text"),
                                  tf.TensorSpec([], tf.int32, name="steps")])
    def spin(text, steps):
        _, total = tf.while_loop(lambda i, x: i < steps, lambda i, x: (i + 1, x + tf.sin(x + 1.0)), [0, 0.0])
        return {"completion": tf.strings.join([text, tf.fill(tf.shape(text), tf.strings.as_string(total))])}

    module.spin = spin
    folder = os.path.join(base, str(version))
    tf.saved_model.save(module, folder, signatures={"serving_default": spin})
    return folder


def wait_until(condition, seconds):
    """How long `condition()` took to become true (None if it did not within `seconds`)."""
    start = time.monotonic()
    while time.monotonic() - start < seconds:
        if condition():
            return time.monotonic() - start
        time.sleep(0.05)
    return None


@pytest.fixture
def spin_app(serving, start_server, tmp_path):
    export_spin_model(tmp_path / "tiny")
    return start_server(tmp_path / "tiny", file_system_poll_wait_seconds=0)


def test_a_cancelled_grpc_predict_stops_running(spin_app):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "tiny"
    request.inputs["text"].CopyFrom(tf.make_tensor_proto([b"a"]))
    request.inputs["steps"].CopyFrom(tf.make_tensor_proto(np.int32(STEPS)))
    channel = grpc.insecure_channel(f"127.0.0.1:{spin_app.grpc_port}")
    future = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict.future(request, timeout=600)
    assert wait_until(lambda: spin_app.core._in_flight == 1, 10) is not None
    time.sleep(0.5)
    future.cancel()
    stopped = wait_until(lambda: spin_app.core._in_flight == 0, 10)
    channel.close()
    assert stopped is not None and stopped < 3, stopped


def test_a_rest_client_that_disconnects_stops_its_request(spin_app):
    body = b'{"inputs": {"text": ["a"], "steps": %d}}' % STEPS
    with socket.create_connection(("127.0.0.1", spin_app.rest_port), timeout=10) as connection:
        connection.sendall(b"POST /v1/models/tiny:predict HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s"
                           % (len(body), body))
        assert wait_until(lambda: spin_app.core._in_flight == 1, 10) is not None
        time.sleep(0.5)
    stopped = wait_until(lambda: spin_app.core._in_flight == 0, 10)
    assert stopped is not None and stopped < 3, stopped


def test_a_restart_while_the_newest_version_is_half_copied_serves_the_newest_complete_one(
        serving, start_server, tmp_path, caplog):
    base, staging = tmp_path / "tiny", tmp_path / "staging"
    serving.export_echo_model(base, 1)
    complete = serving.export_echo_model(staging, 2)
    os.makedirs(base / "2")
    graph = open(os.path.join(complete, "saved_model.pb"), "rb").read()
    (base / "2" / "saved_model.pb").write_bytes(graph[: len(graph) // 2])  # the copy has got this far
    caplog.set_level(logging.INFO, logger="tfllm.serving.server.manager")
    app = start_server(base, file_system_poll_wait_seconds=0.2)

    version, outputs = app.core.predict("tiny", {"text": np.array([b"hi"], dtype=object)})
    assert version == 1 and outputs["completion"].tolist() == [b"hi"]
    time.sleep(1.5)  # several polls retry version 2
    failures = [r for r in caplog.records if r.levelno >= logging.ERROR and "version: 2" in r.getMessage()]
    assert len(failures) == 1, [r.getMessage() for r in failures]

    shutil.copytree(complete, base / "2", dirs_exist_ok=True)  # the copy finishes
    assert wait_until(lambda: app.core.predict("tiny", {"text": np.array([b"hi"], dtype=object)})[0] == 2, 20)
    assert wait_until(lambda: set(app.core.models["tiny"]) == {2}, 10) is not None


def test_a_version_folder_missing_files_the_shard_names_announce_is_not_a_version(serving, tmp_path):
    folder = serving.export_echo_model(tmp_path / "tiny", 1, warmup=False)
    assert config_lib.looks_complete(folder)
    variables = os.path.join(folder, "variables")
    os.rename(os.path.join(variables, "variables.index"), os.path.join(tmp_path, "index"))
    assert not config_lib.looks_complete(folder) and config_lib.version_folders(tmp_path / "tiny") == {}
    os.rename(os.path.join(tmp_path, "index"), os.path.join(variables, "variables.index"))
    shard = next(name for name in os.listdir(variables) if name.startswith("variables.data-"))
    os.remove(os.path.join(variables, shard))
    assert not config_lib.looks_complete(folder)
