"""`tfllm serve` over real gRPC sockets on 127.0.0.1 with the raw `tensorflow_serving.apis` stubs:
Predict equal to local generation, metadata, status, TF Serving's error statuses (the server stays
up), HandleReloadConfigRequest, a version dropped in under load with zero failed requests, graceful
stop, and the `tfllm serve` command ending on SIGTERM."""

import os
import signal
import subprocess
import sys
import threading
import time

import grpc
import numpy as np
import pytest
import tensorflow as tf
from google.protobuf import text_format
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    inference_pb2,
    model_management_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)
from tensorflow_serving.config import model_server_config_pb2

from tfllm.export import signatures as sig

TIMEOUT = 60


class Stubs:
    def __init__(self, port):
        self.channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        self.predictions = prediction_service_pb2_grpc.PredictionServiceStub(self.channel)
        self.models = model_service_pb2_grpc.ModelServiceStub(self.channel)

    def predict(self, model="tiny", inputs=None, signature="", version=None, label=None, output_filter=()):
        request = predict_pb2.PredictRequest(output_filter=list(output_filter))
        request.model_spec.name, request.model_spec.signature_name = model, signature
        if version is not None:
            request.model_spec.version.value = version
        if label is not None:
            request.model_spec.version_label = label
        for name, value in (inputs or {}).items():
            request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
        return self.predictions.Predict(request, timeout=TIMEOUT)

    def status(self, model="tiny", version=None):
        request = get_model_status_pb2.GetModelStatusRequest()
        request.model_spec.name = model
        if version is not None:
            request.model_spec.version.value = version
        return self.models.GetModelStatus(request, timeout=TIMEOUT)

    def states(self, model="tiny"):
        return {s.version: get_model_status_pb2.ModelVersionStatus.State.Name(s.state)
                for s in self.status(model).model_version_status}

    def close(self):
        self.channel.close()


def texts(*values):
    return np.array([v.encode() for v in values], object)


def rpc_error(function, *args, **kwargs):
    with pytest.raises(grpc.RpcError) as error:
        function(*args, **kwargs)
    return error.value.code().name, error.value.details()


@pytest.fixture(scope="module")
def server(running_server):
    core, grpc_port, _ = running_server
    stubs = Stubs(grpc_port)
    yield core, stubs
    stubs.close()


def test_predict_text_in_text_out_equals_local_generate(server, tiny_lm, serving):
    _, stubs = server
    response = stubs.predict(inputs={sig.TEXT: texts(*serving.PROMPTS), sig.MAX_NEW_TOKENS: np.int32(8)})
    expected = serving.local_completions(*tiny_lm, serving.PROMPTS, max_new_tokens=8)
    assert [c.decode() for c in tf.make_ndarray(response.outputs[sig.COMPLETION])] == expected
    assert [g.decode() for g in tf.make_ndarray(response.outputs[sig.GENERATED_TEXT])] == [
        p + c for p, c in zip(serving.PROMPTS, expected)]
    assert (response.model_spec.name, response.model_spec.version.value, response.model_spec.signature_name) == (
        "tiny", 1, "serving_default")
    ids = stubs.predict(inputs={sig.INPUT_IDS: np.array([[5, 6, 7]], np.int32), sig.ATTENTION_MASK: np.ones([1, 3], np.int32),
                                sig.MAX_NEW_TOKENS: np.int32(3)}, signature=sig.GENERATE_IDS, version=1,
                        output_filter=[sig.OUTPUT_IDS])
    model = tiny_lm[0]
    local = model.generate(np.array([[5, 6, 7]]), attention_mask=np.ones([1, 3], np.int32), max_new_tokens=3).numpy()
    np.testing.assert_array_equal(tf.make_ndarray(ids.outputs[sig.OUTPUT_IDS]), local)


def test_metadata_lists_the_exported_signatures(server):
    _, stubs = server
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    request.model_spec.name = "tiny"
    response = stubs.predictions.GetModelMetadata(request, timeout=TIMEOUT)
    signatures = get_model_metadata_pb2.SignatureDefMap()
    assert response.metadata["signature_def"].Unpack(signatures)
    assert response.model_spec.version.value == 1
    for signature in sig.saved_model_signatures("causal_lm"):
        definition = signatures.signature_def[signature.name]
        assert set(definition.inputs) == {t.name for t in signature.inputs}
        assert set(definition.outputs) == {t.name for t in signature.outputs}
    assert signatures.signature_def[sig.SERVING_DEFAULT].inputs[sig.TEXT].dtype == tf.string.as_datatype_enum


def test_status_is_available(server):
    _, stubs = server
    response = stubs.status()
    assert [(s.version, s.state, s.status.error_code) for s in response.model_version_status] == [
        (1, get_model_status_pb2.ModelVersionStatus.AVAILABLE, 0)]
    assert stubs.status(version=1).model_version_status[0].version == 1


def test_bad_requests_get_tf_servings_statuses_and_the_server_stays_up(server):
    core, stubs = server
    good = {sig.TEXT: texts("The river"), sig.MAX_NEW_TOKENS: np.int32(3)}
    limit = core.options.max_request_bytes
    cases = [
        (lambda: stubs.predict("nope", good), "NOT_FOUND", r"^Servable not found for request: Latest\(nope\)$"),
        (lambda: stubs.predict(inputs=good, version=7), "NOT_FOUND", r"^Servable not found for request: Specific\(tiny, 7\)$"),
        (lambda: stubs.predict(inputs=good, label="canary"), "INVALID_ARGUMENT", "^Unrecognized servable version label: canary$"),
        (lambda: stubs.predict("", good), "INVALID_ARGUMENT", "^ModelSpec has no name specified.$"),
        (lambda: stubs.predict(inputs={sig.TEXT: np.array([1, 2], np.int32)}), "INVALID_ARGUMENT",
         r"^Expects arg\[text\] to be string but int32 is provided$"),
        (lambda: stubs.predict(inputs={sig.TEXT: texts("a"), sig.MAX_NEW_TOKENS: np.float32(3)}), "INVALID_ARGUMENT",
         r"^Expects arg\[max_new_tokens\] to be int32 but float is provided$"),
        (lambda: stubs.predict(inputs={sig.TEXT: texts("a"), sig.MAX_NEW_TOKENS: np.int64(3)}), "INVALID_ARGUMENT",
         r"^Expects arg\[max_new_tokens\] to be int32 but int64 is provided$"),
        (lambda: stubs.predict(inputs={sig.TEXT: np.array(b"a", object)}), "INVALID_ARGUMENT", "Input text has shape"),
        (lambda: stubs.predict(inputs={sig.TEXT: texts("a"), sig.MAX_NEW_TOKENS: np.array([3, 4], np.int32)}),
         "INVALID_ARGUMENT", "Input max_new_tokens has shape"),
        (lambda: stubs.predict(inputs={sig.MAX_NEW_TOKENS: np.int32(3)}), "INVALID_ARGUMENT", r"Missing but required: \{text\}"),
        (lambda: stubs.predict(inputs={**good, "bogus": np.int32(1)}), "INVALID_ARGUMENT", r"Sent extra: \{bogus\}"),
        (lambda: stubs.predict(inputs=good, signature="nope"), "FAILED_PRECONDITION", 'Serving signature key "nope" not found'),
        (lambda: stubs.predict(inputs=good, output_filter=["nope"]), "INVALID_ARGUMENT", "output tensor alias not found"),
        (lambda: stubs.predict(inputs={sig.TEXT: texts("a"), sig.MAX_NEW_TOKENS: np.int32(10_000)}), "INVALID_ARGUMENT",
         r"max_new_tokens \(10000\) exceeds this server's cap"),
        (lambda: stubs.predict(inputs={sig.TEXT: texts("x" * limit)}), "RESOURCE_EXHAUSTED", "Received message larger than max"),
        (lambda: stubs.predictions.GetModelMetadata(get_model_metadata_pb2.GetModelMetadataRequest(
            model_spec={"name": "tiny"}), timeout=TIMEOUT), "INVALID_ARGUMENT",
         "^GetModelMetadataRequest must specify at least one metadata_field$"),
        (lambda: stubs.predictions.GetModelMetadata(get_model_metadata_pb2.GetModelMetadataRequest(
            model_spec={"name": "tiny"}, metadata_field=["graph"]), timeout=TIMEOUT), "INVALID_ARGUMENT",
         "^Metadata field graph is not supported$"),
        (lambda: stubs.status("nope"), "NOT_FOUND", "^Could not find any versions of model nope$"),
        (lambda: stubs.status(version=5), "NOT_FOUND", "^Could not find version 5 of model tiny$"),
        (lambda: stubs.predictions.Classify(classification_pb2.ClassificationRequest(model_spec={"name": "tiny"}),
                                            timeout=TIMEOUT), "UNIMPLEMENTED", "Classify"),
        (lambda: stubs.predictions.Regress(regression_pb2.RegressionRequest(model_spec={"name": "tiny"}), timeout=TIMEOUT),
         "UNIMPLEMENTED", "Regress"),
        (lambda: stubs.predictions.MultiInference(inference_pb2.MultiInferenceRequest(), timeout=TIMEOUT),
         "UNIMPLEMENTED", "MultiInference"),
    ]
    import re

    for index, (call, code, message) in enumerate(cases):
        try:
            call()
            raise AssertionError(f"case {index} ({code} {message}) did not fail")
        except grpc.RpcError as error:
            got_code, got_message = error.code().name, error.details()
        assert got_code == code and re.search(message, got_message), (code, message, got_code, got_message)
    response = stubs.predict(inputs=good)
    assert tf.make_ndarray(response.outputs[sig.COMPLETION]).shape == (1,)
    if core.metrics is not None:  # gRPC calls are counted with TF Serving's labels
        assert core.metrics.counter(":tensorflow:serving:request_count", model_name="nope", status="NOT_FOUND") >= 1


def test_rest_front_end_serves_the_same_core(running_server):
    import http.client
    import json

    _, _, rest_port = running_server
    if rest_port is None:
        pytest.skip("no REST front end (tfllm.serving.server.rest) in this checkout")
    connection = http.client.HTTPConnection("127.0.0.1", rest_port, timeout=TIMEOUT)
    try:
        connection.request("GET", "/v1/models/tiny")
        response = connection.getresponse()
        body = json.loads(response.read())
    finally:
        connection.close()
    assert response.status == 200 and body["model_version_status"][0]["state"] == "AVAILABLE", body


def test_streaming_service_is_served_next_to_tf_servings(server):
    streaming = pytest.importorskip("tfllm.serving.streaming_proto")
    pytest.importorskip("tfllm.serving.server.streaming_service")
    _, stubs = server
    call = stubs.channel.unary_stream(streaming.FULL_METHOD, request_serializer=streaming.GenerateRequest.SerializeToString,
                                      response_deserializer=streaming.GenerateResponse.FromString)
    request = streaming.GenerateRequest(text="The river", max_new_tokens=10)
    request.model_spec.name = "tiny"
    responses = list(call(request, timeout=TIMEOUT))
    completion = tf.make_ndarray(stubs.predict(inputs={sig.TEXT: texts("The river"), sig.MAX_NEW_TOKENS: np.int32(10)})
                                 .outputs[sig.COMPLETION])[0].decode()
    assert len(responses) > 2 and "".join(r.text for r in responses) == completion and responses[-1].done


def test_handle_reload_config_request_adds_and_removes_a_model(server, serving, tmp_path):
    core, stubs = server
    serving.export_echo_model(tmp_path / "echo", 1)
    tiny_base = core.manager._models["tiny"].config.base_path

    def reload(*models, labels=""):
        text = "model_config_list {" + "".join(
            f' config {{ name: "{name}" base_path: "{base}" model_platform: "tensorflow" {labels} }}' for name, base in models
        ) + "}"
        request = model_management_pb2.ReloadConfigRequest(
            config=text_format.Parse(text, model_server_config_pb2.ModelServerConfig()))
        return stubs.models.HandleReloadConfigRequest(request, timeout=TIMEOUT)

    assert reload(("tiny", tiny_base), ("echo", tmp_path / "echo")).status.error_code == 0
    assert stubs.states("echo") == {1: "AVAILABLE"}
    assert tf.make_ndarray(stubs.predict("echo", {sig.TEXT: texts("hi")}).outputs["completion"]).tolist() == [b"hi"]
    code, message = rpc_error(reload, ("tiny", tiny_base), labels='version_labels { key: "x" value: 3 }')
    assert code == "FAILED_PRECONDITION" and "Request to assign label to version 3 of model tiny" in message
    assert reload(("tiny", tiny_base)).status.error_code == 0
    assert rpc_error(stubs.predict, "echo", {sig.TEXT: texts("hi")})[0] == "NOT_FOUND"
    assert stubs.states("tiny") == {1: "AVAILABLE"}  # untouched by the reloads


@pytest.mark.slow
def test_a_version_dropped_in_under_load_is_served_with_zero_failed_requests(exported_base, serving, start_server, tmp_path):
    base = serving.copy_base(exported_base, tmp_path / "tiny")
    app = start_server(base, file_system_poll_wait_seconds=0.3, rest_api_port=0)
    stubs = Stubs(app.grpc_port)
    failures, versions, stop = [], {}, threading.Event()

    def load():
        while not stop.is_set():
            try:
                response = stubs.predict(inputs={sig.TEXT: texts("The river"), sig.MAX_NEW_TOKENS: np.int32(3)})
                versions[response.model_spec.version.value] = versions.get(response.model_spec.version.value, 0) + 1
            except grpc.RpcError as error:
                failures.append((error.code(), error.details()))

    clients = [threading.Thread(target=load) for _ in range(2)]
    for client in clients:
        client.start()
    try:
        time.sleep(0.5)
        serving.add_version(base, 2)
        end = time.monotonic() + 120
        while time.monotonic() < end and not (stubs.states() == {2: "AVAILABLE", 1: "END"} and versions.get(2, 0) >= 3):
            time.sleep(0.2)
    finally:
        stop.set()
        for client in clients:
            client.join(TIMEOUT)
    assert failures == []
    assert stubs.states() == {2: "AVAILABLE", 1: "END"} and versions.get(1, 0) > 0 and versions.get(2, 0) >= 3, versions
    stubs.close()


def test_stop_finishes_an_in_flight_request_then_refuses_connections(serving, start_server, tmp_path):
    serving.export_echo_model(tmp_path / "echo", 1)
    app = start_server(tmp_path / "echo", model_name="echo")
    servable, call, started = app.core.servable("echo"), None, threading.Event()
    call = servable.call

    def slow_call(signature, feed, cancellation=None):
        started.set()
        time.sleep(1.5)
        return call(signature, feed)

    servable.call = slow_call
    stubs, result = Stubs(app.grpc_port), {}
    worker = threading.Thread(target=lambda: result.update(r=stubs.predict("echo", {sig.TEXT: texts("in flight")})))
    worker.start()
    assert started.wait(TIMEOUT)
    app.stop(grace_seconds=30)
    worker.join(TIMEOUT)
    assert tf.make_ndarray(result["r"].outputs["completion"]).tolist() == [b"in flight"]
    assert rpc_error(stubs.predict, "echo", {sig.TEXT: texts("late")})[0] == "UNAVAILABLE"
    stubs.close()


def test_tfllm_serve_command_serves_and_stops_on_sigterm(serving, tmp_path):
    serving.export_echo_model(tmp_path / "echo", 1)
    port = serving.free_port()
    command = [sys.executable, "-m", "tfllm.cli", "serve", f"--port={port}", "--grpc_bind_host", "127.0.0.1",
               "--model_name", "echo", "--model_base_path", str(tmp_path / "echo"), "--file_system_poll_wait_seconds", "0"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    try:
        ready = []
        reader = threading.Thread(target=lambda: ready.append(process.stdout.readline()), daemon=True)
        reader.start()
        reader.join(120)
        assert ready and f"gRPC on 127.0.0.1:{port}" in ready[0] and "models: echo" in ready[0], ready
        stubs = Stubs(port)
        assert tf.make_ndarray(stubs.predict("echo", {sig.TEXT: texts("hi")}).outputs["completion"]).tolist() == [b"hi"]
        stubs.close()
        process.send_signal(signal.SIGTERM)
        assert process.wait(60) == 0, process.stderr.read()[-2000:]
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
