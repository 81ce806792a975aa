"""`tfllm.serving.Client` over gRPC and REST against fake TF Serving endpoints on 127.0.0.1: requests in
TF Serving's wire format, retries on UNAVAILABLE / 503 / refused connections, errors with the server's
status, deadlines, and server-sent-event streams."""

import base64
import http.server
import json
import socket
import threading
import time
from concurrent import futures

import grpc
import numpy as np
import pytest
import tensorflow as tf
from google.protobuf import json_format
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from tfllm.serving import Client, ServingClientError

METADATA = {"signature_def": {"serving_default": {
    "inputs": {"text": {"dtype": "DT_STRING", "name": "serving_default_text:0"}},
    "outputs": {"generated_text": {"dtype": "DT_STRING", "name": "StatefulPartitionedCall:0"}},
    "method_name": "tensorflow/serving/predict",
}}}
STATUS = {"model_version_status": [{"version": "1", "state": "AVAILABLE",
                                    "status": {"error_code": "OK", "error_message": ""}}]}
NOT_FOUND = "Servable not found for request: Latest(missing)"


class FakeTFServing(prediction_service_pb2_grpc.PredictionServiceServicer, model_service_pb2_grpc.ModelServiceServicer):
    """PredictionService + ModelService: `unavailable` first calls fail, "missing" is NOT_FOUND,
    "slow" takes 2 s, anything else appends " world" to each `text`."""

    def __init__(self, unavailable=0):
        self.unavailable, self.calls, self.requests = unavailable, 0, []

    def _gate(self, model, context):
        self.calls += 1
        if self.calls <= self.unavailable:
            context.abort(grpc.StatusCode.UNAVAILABLE, "loading")
        if model == "missing":
            context.abort(grpc.StatusCode.NOT_FOUND, NOT_FOUND)
        if model == "slow":
            time.sleep(2)

    def Predict(self, request, context):
        self._gate(request.model_spec.name, context)
        self.requests.append(request)
        texts = tf.make_ndarray(request.inputs["text"])
        response = predict_pb2.PredictResponse()
        response.outputs["generated_text"].CopyFrom(tf.make_tensor_proto([t + b" world" for t in texts]))
        return response

    def GetModelMetadata(self, request, context):
        self._gate(request.model_spec.name, context)
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        response.model_spec.name, response.model_spec.version.value = request.model_spec.name, 1
        response.metadata["signature_def"].Pack(json_format.ParseDict(METADATA, get_model_metadata_pb2.SignatureDefMap()))
        return response

    def GetModelStatus(self, request, context):
        self._gate(request.model_spec.name, context)
        return json_format.ParseDict(STATUS, get_model_status_pb2.GetModelStatusResponse())


@pytest.fixture
def fake_grpc():
    def start(unavailable=0):
        service = FakeTFServing(unavailable)
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(service, server)
        model_service_pb2_grpc.add_ModelServiceServicer_to_server(service, server)
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        servers.append(server)
        return service, f"127.0.0.1:{port}"

    servers = []
    yield start
    for server in servers:
        server.stop(grace=None)


class FakeRest(http.server.BaseHTTPRequestHandler):
    """TF Serving's REST API the same way, plus `/generate_stream` (server-sent events)."""

    state = None  # {"unavailable": n, "calls": n, "bodies": [...], "release": Event}

    def log_message(self, *args):
        pass

    def _reply(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        try:
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):  # the client's deadline passed first
            pass

    def _gate(self):
        self.state["calls"] += 1
        if self.state["calls"] <= self.state["unavailable"]:
            return self._reply(503, {"error": "loading"}) or True
        if "/models/missing" in self.path:
            return self._reply(404, {"error": NOT_FOUND}) or True
        if "/models/slow" in self.path:
            time.sleep(2)
        return False

    def do_GET(self):
        if not self._gate():
            self._reply(200, {"model_spec": {"name": "m", "version": "1"}, "metadata": {"signature_def": METADATA}}
                        if self.path.endswith("/metadata") else STATUS)

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.state["bodies"].append((self.path, body))
        if self.path == "/generate_stream":
            return self._stream(body)
        if self._gate():
            return
        texts = [base64.b64decode(t["b64"]).decode() if isinstance(t, dict) else t for t in body["inputs"]["text"]]
        outputs = [t + " world" for t in texts]
        if "/models/multi" in self.path:
            self._reply(200, {"outputs": {"generated_text": outputs, "raw_bytes": [{"b64": "AAE="}], "score": [[0.5]]}})
        else:  # one output: TF Serving leaves its name out
            self._reply(200, {"outputs": outputs})

    def _stream(self, body):
        if body["model"] == "missing":
            return self._reply(404, {"error": NOT_FOUND})
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        self.wfile.write(b": a comment line\n\n")
        for piece in (" one", " two"):
            self.wfile.write(f"data: {json.dumps({'text': piece})}\n\n".encode())
            self.wfile.flush()
            self.state["release"].wait(10)
        if body["model"] == "broken":
            self.wfile.write(b'event: error\ndata: {"error": "generation failed", "code": "INTERNAL"}\n\n')
            return
        self.wfile.write(f"data: {json.dumps({'done': True, 'generated_text': body['text'] + ' one two'})}\n\n".encode())


@pytest.fixture
def fake_rest():
    def start(unavailable=0):
        state = {"unavailable": unavailable, "calls": 0, "bodies": [], "release": threading.Event()}
        handler = type("Handler", (FakeRest,), {"state": state})
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        servers.append(server)
        return state, f"127.0.0.1:{server.server_address[1]}"

    servers = []
    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def _free_port():
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# === gRPC ===

def test_grpc_generate_sends_typed_scalars_and_only_the_given_parameters(fake_grpc):
    service, target = fake_grpc()
    with Client(target) as client:
        assert client.generate("tiny", ["a", "héllo"], version=2, max_new_tokens=4, do_sample=True, top_p=0.9,
                               seed=None) == ["a world", "héllo world"]
    (request,) = service.requests
    assert (request.model_spec.name, request.model_spec.version.value, request.model_spec.signature_name) == (
        "tiny", 2, "serving_default")
    dtypes = {name: tf.dtypes.as_dtype(tensor.dtype).name for name, tensor in request.inputs.items()}
    assert dtypes == {"text": "string", "max_new_tokens": "int32", "do_sample": "bool", "top_p": "float32"}
    assert request.inputs["max_new_tokens"].tensor_shape.dim == []  # a scalar, as the signature declares


def test_grpc_retries_unavailable_then_succeeds(fake_grpc):
    service, target = fake_grpc(unavailable=2)
    with Client(target, retries=3, backoff=0.01) as client:
        outputs = client.predict("tiny", {"text": np.array([b"x"], dtype=object)}, label="stable")
    assert service.calls == 3
    assert outputs["generated_text"].tolist() == [b"x world"]
    assert service.requests[0].model_spec.version_label == "stable"


def test_grpc_gives_up_after_the_retries(fake_grpc):
    service, target = fake_grpc(unavailable=5)
    with Client(target, retries=1, backoff=0.01) as client, pytest.raises(ServingClientError) as raised:
        client.status("tiny")
    assert (raised.value.code, raised.value.message, service.calls) == ("UNAVAILABLE", "loading", 2)


def test_grpc_errors_carry_the_server_status_and_are_not_retried(fake_grpc):
    service, target = fake_grpc()
    with Client(target, backoff=0.01) as client, pytest.raises(ServingClientError) as raised:
        client.predict("missing", {"text": ["x"]})
    assert (raised.value.code, raised.value.message, service.calls) == ("NOT_FOUND", NOT_FOUND, 1)
    assert str(raised.value) == f"NOT_FOUND: {NOT_FOUND}"


def test_grpc_deadline(fake_grpc):
    _, target = fake_grpc()
    start = time.monotonic()
    with Client(target, timeout=0.3) as client, pytest.raises(ServingClientError) as raised:
        client.generate("slow", "x")
    assert raised.value.code == "DEADLINE_EXCEEDED"
    assert time.monotonic() - start < 1.5


def test_grpc_connection_refused_is_retried_then_unavailable():
    start = time.monotonic()
    with Client(f"127.0.0.1:{_free_port()}", retries=2, backoff=0.05, timeout=10) as client:
        with pytest.raises(ServingClientError) as raised:
            client.status("tiny")
    assert raised.value.code == "UNAVAILABLE"
    assert time.monotonic() - start >= 0.05 + 0.1  # two backoffs


def test_grpc_metadata_and_status_have_the_rest_api_shape(fake_grpc):
    _, target = fake_grpc()
    with Client(target) as client:
        metadata = client.metadata("tiny")
        status = client.status("tiny", version=1)
    assert metadata["model_spec"] == {"name": "tiny", "version": "1"}
    assert metadata["metadata"]["signature_def"] == METADATA
    assert status == STATUS


# === REST ===

def test_rest_predict_is_columnar_with_b64_bytes_and_names_a_single_output(fake_rest):
    state, target = fake_rest()
    with Client(target, protocol="rest") as client:
        outputs = client.predict("tiny", {"text": [b"caf\xc3\xa9", "x"]}, version=3)
        assert client.generate("tiny", "p", max_new_tokens=2, temperature=0.7) == ["p world"]
    assert outputs["generated_text"].tolist() == ["café world".encode(), b"x world"]
    path, body = state["bodies"][0]
    assert path == "/v1/models/tiny/versions/3:predict"
    assert body == {"signature_name": "serving_default", "inputs": {"text": [{"b64": "Y2Fmw6k="}, "x"]}}
    assert state["bodies"][1][1]["inputs"] == {"text": ["p"], "max_new_tokens": 2, "temperature": pytest.approx(0.7)}


def test_rest_outputs_by_name_with_b64_and_numbers(fake_rest):
    _, target = fake_rest()
    with Client(target, protocol="rest") as client:
        outputs = client.predict("multi", {"text": ["x"]}, label="canary")
    assert outputs["generated_text"].tolist() == [b"x world"]
    assert outputs["raw_bytes"].tolist() == [b"\x00\x01"]
    np.testing.assert_allclose(outputs["score"], [[0.5]])


def test_rest_retries_503_then_succeeds(fake_rest):
    state, target = fake_rest(unavailable=2)
    with Client(target, protocol="rest", backoff=0.01) as client:
        assert client.status("tiny") == STATUS
        assert client.metadata("tiny", label="stable")["metadata"]["signature_def"] == METADATA
    assert state["calls"] == 4


def test_rest_errors_carry_status_and_message(fake_rest):
    state, target = fake_rest()
    with Client(target, protocol="rest", backoff=0.01) as client, pytest.raises(ServingClientError) as raised:
        client.predict("missing", {"text": ["x"]})
    assert (raised.value.code, raised.value.message, raised.value.http_status) == ("NOT_FOUND", NOT_FOUND, 404)
    assert state["calls"] == 1


def test_rest_deadline(fake_rest):
    _, target = fake_rest()
    start = time.monotonic()
    with Client(target, protocol="rest", timeout=0.3) as client, pytest.raises(ServingClientError) as raised:
        client.status("slow")
    assert raised.value.code == "DEADLINE_EXCEEDED"
    assert time.monotonic() - start < 1.5


def test_rest_connection_refused_is_retried_then_unavailable():
    start = time.monotonic()
    with Client(f"127.0.0.1:{_free_port()}", protocol="rest", retries=2, backoff=0.05) as client:
        with pytest.raises(ServingClientError) as raised:
            client.generate("tiny", "x")
    assert raised.value.code == "UNAVAILABLE"
    assert time.monotonic() - start >= 0.05 + 0.1


def test_rest_stream_reads_server_sent_events_as_they_come(fake_rest):
    state, target = fake_rest()
    with Client(target, protocol="rest", timeout=20) as client:
        pieces = client.stream("tiny", "Count:", label="stable", max_new_tokens=2)
        assert next(pieces) == " one"  # the server holds the rest until the test releases it
        state["release"].set()
        assert list(pieces) == [" two"]
        assert state["bodies"][0] == ("/generate_stream", {"model": "tiny", "text": "Count:", "max_new_tokens": 2,
                                                           "label": "stable"})
        with pytest.raises(ServingClientError) as raised:
            list(client.stream("broken", "x"))
        assert (raised.value.code, raised.value.message) == ("INTERNAL", "generation failed")
        with pytest.raises(ServingClientError) as raised:
            client.stream("missing", "x")
        assert raised.value.code == "NOT_FOUND"


# === Arguments ===

@pytest.mark.parametrize("kwargs, message", [
    (dict(target="localhost"), 'Invalid value for argument `target`. Expected a string "host:port". Received: target=\'localhost\''),
    (dict(protocol="http"), "Invalid value for argument `protocol`. Expected one of ('grpc', 'rest'). Received: protocol='http'"),
    (dict(timeout=0), "Invalid value for argument `timeout`. Expected a number in (0, inf]. Received: timeout=0.0"),
    (dict(retries=-1), "Invalid value for argument `retries`. Expected an integer >= 0. Received: retries=-1"),
])
def test_invalid_constructor_arguments(kwargs, message):
    with pytest.raises(ValueError) as raised:
        Client(**{"target": "127.0.0.1:1", "protocol": "rest", **kwargs})
    assert str(raised.value) == message


def test_invalid_call_arguments():
    client = Client("127.0.0.1:1", protocol="rest")
    with pytest.raises(ValueError, match="Expected None when a version is given"):
        client.status("tiny", version=1, label="stable")
    with pytest.raises(TypeError, match=r"Received: params=\['top_kk'\]"):
        client.generate("tiny", "x", top_kk=3)
    with pytest.raises(ValueError, match="Expected a non-empty dict"):
        client.predict("tiny", [1, 2])
    with pytest.raises(ValueError, match="argument `prompt`"):
        client.stream("tiny", ["a", "b"])


# === Against `tfllm serve` (the serving conftest's `running_server`: a tiny GPT-2 exported by the export code) ===

@pytest.mark.parametrize("protocol", ["grpc", "rest"])
def test_tfllm_serve_text_in_text_out_equals_local_generation(running_server, tiny_lm, serving, protocol):
    _, grpc_port, rest_port = running_server
    port = grpc_port if protocol == "grpc" else rest_port
    prompts = serving.PROMPTS
    expected = [p + c for p, c in zip(prompts, serving.local_completions(*tiny_lm, prompts, max_new_tokens=5))]
    with Client(f"127.0.0.1:{port}", protocol=protocol, timeout=120) as client:
        assert client.generate(serving.MODEL_NAME, prompts, max_new_tokens=5) == expected
        outputs = client.predict(serving.MODEL_NAME, {"text": prompts, "max_new_tokens": 5}, version=1)
        assert [text.decode() for text in outputs["generated_text"]] == expected
        streamed = "".join(client.stream(serving.MODEL_NAME, prompts[0], max_new_tokens=5))
        assert prompts[0] + streamed == expected[0]


@pytest.mark.parametrize("protocol", ["grpc", "rest"])
def test_tfllm_serve_status_metadata_and_errors(running_server, serving, protocol):
    _, grpc_port, rest_port = running_server
    port = grpc_port if protocol == "grpc" else rest_port
    with Client(f"127.0.0.1:{port}", protocol=protocol, timeout=120) as client:
        status = client.status(serving.MODEL_NAME)
        assert status["model_version_status"][0]["version"] == "1"
        assert status["model_version_status"][0]["state"] == "AVAILABLE"
        signatures = client.metadata(serving.MODEL_NAME)["metadata"]["signature_def"]["signature_def"]
        assert set(signatures["serving_default"]["outputs"]) == {"generated_text", "completion"}
        for call, code in [
            (lambda: client.generate("missing", "x"), "NOT_FOUND"),
            (lambda: client.status(serving.MODEL_NAME, version=7), "NOT_FOUND"),
            (lambda: client.predict(serving.MODEL_NAME, {"txt": ["x"]}), "INVALID_ARGUMENT"),
            (lambda: list(client.stream("missing", "x")), "NOT_FOUND"),
        ]:
            with pytest.raises(ServingClientError) as raised:
                call()
            assert raised.value.code == code, raised.value
            assert raised.value.message
        assert client.generate(serving.MODEL_NAME, "still up", max_new_tokens=2)[0].startswith("still up")
