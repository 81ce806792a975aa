"""Hostile requests to `tfllm serve` (issue 13), on loopback: each is refused quickly, with the right
status and no memory growth, and the server keeps serving. Prompts, bodies and protos are built here."""

import http.client
import json
import math
import socket
import threading
import time

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from tfllm.export import signatures as sig
from tfllm.serving import streaming_proto as sp

pytest.importorskip("tensorflow_text")

READ_TIMEOUT_MS = 1000
HEAD = b"POST /generate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"


@pytest.fixture(scope="module")
def app(exported_base, serving, tmp_path_factory):
    base = serving.copy_base(exported_base, tmp_path_factory.mktemp("hostile") / serving.MODEL_NAME)
    app = serving.launch(base, max_request_bytes=16 << 20, max_new_tokens_cap=32,
                         rest_api_read_timeout_in_ms=READ_TIMEOUT_MS)
    yield app
    app.stop(grace_seconds=5)


def post(port, path, body, timeout=30):
    """`(status, parsed JSON or raw text)` of one POST on a fresh connection."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request("POST", path, body=body if isinstance(body, bytes) else json.dumps(body).encode())
        response = connection.getresponse()
        raw = response.read()
        try:
            return response.status, json.loads(raw)
        except ValueError:
            return response.status, raw.decode("utf-8", "replace")
    finally:
        connection.close()


def raw_exchange(port, data, timeout=10):
    """The status line the server answers raw bytes with ("closed" when it just closes)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as connection:
        connection.sendall(data)
        answer = connection.recv(4096)
    return answer.split(b"\r\n")[0].decode() or "closed"


def peak_growth_mb(function):
    """`(result, growth of this process's peak RSS in MB)` (the server runs in this process)."""
    with open("/proc/self/clear_refs", "w") as file:
        file.write("5")  # resets VmHWM to the current RSS

    def status(key):
        with open("/proc/self/status") as file:
            return next(int(line.split()[1]) for line in file if line.startswith(key)) / 1024

    before = status("VmRSS")
    result = function()
    return result, status("VmHWM") - before


def predict_stub(app):
    channel = grpc.insecure_channel(f"127.0.0.1:{app.grpc_port}")
    return channel, prediction_service_pb2_grpc.PredictionServiceStub(channel)


def grpc_error(function, *args, **kwargs):
    with pytest.raises(grpc.RpcError) as caught:
        function(*args, **kwargs)
    return caught.value.code(), caught.value.details()


# === Connections ===


def test_a_burst_of_200_connections_is_queued_not_reset(app):
    assert app.rest_server._httpd.request_queue_size >= 1024
    barrier, statuses = threading.Barrier(200), []

    def client():
        connection = http.client.HTTPConnection("127.0.0.1", app.rest_port, timeout=60)
        barrier.wait()
        try:
            connection.request("GET", "/v1/models/tiny")
            statuses.append(connection.getresponse().status)
        except OSError as error:
            statuses.append(type(error).__name__)
        finally:
            connection.close()

    threads = [threading.Thread(target=client) for _ in range(200)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(90)
    assert statuses == [200] * 200


def test_a_client_sending_a_byte_a_second_is_cut_off_after_the_read_timeout(app):
    request = HEAD + b"Content-Length: 13\r\n\r\n" + b'{"text": "a"}'  # 7 s at one byte per 0.1 s
    start, answer = time.monotonic(), None
    with socket.create_connection(("127.0.0.1", app.rest_port), timeout=10) as connection:
        for byte in request:
            try:
                connection.sendall(bytes([byte]))
                time.sleep(0.1)
                if time.monotonic() - start > READ_TIMEOUT_MS / 1000 + 0.5:
                    answer = connection.recv(4096)
                    break
            except OSError:  # the server closed the connection: a write after its 408 is reset
                answer = b"reset"
                break
    assert answer is not None and (answer.startswith(b"HTTP/1.1 408") or answer in (b"", b"reset")), answer
    assert time.monotonic() - start < READ_TIMEOUT_MS / 1000 + 3


def test_a_body_shorter_than_its_content_length_is_answered_408_after_the_read_timeout(app):
    start = time.monotonic()
    status = raw_exchange(app.rest_port, HEAD + b"Content-Length: 100\r\n\r\n" + b'{"text": "a"}')
    assert status.startswith("HTTP/1.1 408") and time.monotonic() - start < READ_TIMEOUT_MS / 1000 + 2


@pytest.mark.parametrize("headers", [
    b"Content-Length: 13\r\nContent-Length: 5\r\n",
    b"Content-Length: 13, 5\r\n",
    b"Content-Length: 13\r\nTransfer-Encoding: chunked\r\n",
    b"Content-Length: thirteen\r\n",
    b"Transfer-Encoding: gzip\r\n",
], ids=["two-lengths", "length-list", "length-and-chunked", "not-a-number", "not-chunked"])
def test_ambiguous_body_framing_is_refused_400(app, headers):
    assert raw_exchange(app.rest_port, HEAD + headers + b"\r\n" + b'{"text": "a"}').startswith("HTTP/1.1 400")
    assert post(app.rest_port, "/generate", {"text": "The river", "max_new_tokens": 2})[0] == 200


# === Bodies that are client errors ===


@pytest.mark.parametrize("path, body", [
    ("/generate", b'{"text": "\\ud800"}'),
    ("/v1/models/tiny:predict", b'{"instances": ["\\udfff x"]}'),
    ("/v1/models/tiny:predict", b'{"instances": ' + b"[" * 900 + b"]" * 900 + b"}"),
    ("/v1/models/tiny:predict", b'{"inputs": {"text": ' + b"[" * 300 + b'"a"' + b"]" * 300 + b"}}"),
], ids=["lone-surrogate-generate", "lone-surrogate-predict", "900-nested-instances", "rank-300-input"])
def test_malformed_bodies_are_400_not_500(app, path, body):
    status, answer = post(app.rest_port, path, body)
    assert status == 400, answer
    assert post(app.rest_port, "/generate", {"text": "The river", "max_new_tokens": 2})[0] == 200


# === Prompt length ===


def test_a_10_mb_prompt_is_refused_from_its_size_in_under_a_second_without_memory_growth(app):
    body = json.dumps({"text": "a " * (5 << 20)}).encode()
    start = time.monotonic()
    (status, answer), growth = peak_growth_mb(lambda: post(app.rest_port, "/generate", body))
    seconds = time.monotonic() - start
    assert status == 400 and "Invalid value for argument `text`" in answer["error"] and "bytes" in answer["error"]
    assert seconds < 1.0 and growth < 200, (seconds, growth)


def test_a_prompt_within_the_byte_bound_is_refused_by_its_exact_token_count(app, tiny_lm):
    _, tokenizer = tiny_lm
    text = " ".join(str(i) for i in range(30))  # short in bytes, but more tokens than 64 positions hold
    assert len(tokenizer.encode(text)) + 6 > 64
    status, answer = post(app.rest_port, "/generate", {"text": text, "max_new_tokens": 6})
    assert status == 400 and "tokens" in answer["error"] and "64 positions" in answer["error"], answer
    status, answer = post(app.rest_port, "/v1/models/tiny:predict", {"inputs": {"text": [text]}})
    assert status == 400 and "Invalid value for argument `text`" in answer["error"]


def test_a_1_mb_prompt_does_not_stall_other_clients(app):
    results = {}
    one_mb = {"text": "ab " * 350000}
    big = threading.Thread(target=lambda: results.update(big=post(app.rest_port, "/generate", one_mb)))
    big.start()
    start = time.monotonic()
    status, _ = post(app.rest_port, "/generate", {"text": "The river", "max_new_tokens": 2})
    seconds = time.monotonic() - start
    big.join(60)
    assert status == 200 and results["big"][0] == 400 and seconds < 3, seconds


# === One validation for every route ===

BAD = [
    ({sig.DO_SAMPLE: True, sig.TEMPERATURE: 0.0}, sig.TEMPERATURE),
    ({sig.DO_SAMPLE: True, sig.TEMPERATURE: -1.0}, sig.TEMPERATURE),
    ({sig.DO_SAMPLE: True, sig.TEMPERATURE: math.nan}, sig.TEMPERATURE),
    ({sig.DO_SAMPLE: True, sig.TEMPERATURE: math.inf}, sig.TEMPERATURE),
    ({sig.TEMPERATURE: math.nan}, sig.TEMPERATURE),
    ({sig.DO_SAMPLE: True, sig.TOP_P: 0.0}, sig.TOP_P),
    ({sig.DO_SAMPLE: True, sig.TOP_P: 1.5}, sig.TOP_P),
    ({sig.TOP_K: -1}, sig.TOP_K),
    ({sig.MAX_NEW_TOKENS: 0}, sig.MAX_NEW_TOKENS),
    ({sig.MAX_NEW_TOKENS: -3}, sig.MAX_NEW_TOKENS),
]
ROUTES = ["generate", "predict", "generate_stream", "grpc_predict", "grpc_stream"]


def ask(app, route, text, params):
    """`(ok, message)` of one generation request on a route."""
    if route in ("generate", "generate_stream", "predict"):
        body = {sig.TEXT: text, **params} if route != "predict" else {"inputs": {sig.TEXT: [text], **params}}
        status, answer = post(app.rest_port, "/v1/models/tiny:predict" if route == "predict" else f"/{route}",
                              json.dumps(body).encode())
        return status, answer["error"] if status != 200 else ""
    channel, stub = predict_stub(app)
    try:
        if route == "grpc_predict":
            request = predict_pb2.PredictRequest()
            request.model_spec.name = "tiny"
            request.inputs[sig.TEXT].CopyFrom(tf.make_tensor_proto([text.encode()]))
            dtypes = {sig.DO_SAMPLE: np.bool_, sig.TEMPERATURE: np.float32, sig.TOP_P: np.float32}
            for key, value in params.items():
                request.inputs[key].CopyFrom(tf.make_tensor_proto(np.asarray(value, dtypes.get(key, np.int32))))
            stub.Predict(request, timeout=30)
        else:
            call = channel.unary_stream(sp.FULL_METHOD, request_serializer=sp.GenerateRequest.SerializeToString,
                                        response_deserializer=sp.GenerateResponse.FromString)
            request = sp.GenerateRequest(text=text, **params)
            request.model_spec.name = "tiny"
            list(call(request, timeout=30))
        return 200, ""
    except grpc.RpcError as error:
        return {grpc.StatusCode.INVALID_ARGUMENT: 400}.get(error.code(), error.code()), error.details()
    finally:
        channel.close()


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("params, name", BAD, ids=[f"{k}={v}" for p, _ in BAD for k, v in list(p.items())[-1:]])
def test_out_of_range_generation_parameters_are_refused_naming_the_argument(app, route, params, name):
    status, message = ask(app, route, "The river", params)
    assert status == 400 and f"Invalid value for argument `{name}`" in message, (status, message)


@pytest.mark.parametrize("route", ROUTES)
def test_an_empty_prompt_is_refused_not_a_graph_error(app, route):
    status, message = ask(app, route, "", {})
    assert status == 400 and "Invalid value for argument `text`" in message and "Graph" not in message


@pytest.mark.parametrize("route", ROUTES)
def test_greedy_decoding_accepts_temperature_0_as_transformers_does(app, route):
    assert ask(app, route, "The river", {sig.TEMPERATURE: 0.0, sig.MAX_NEW_TOKENS: 2}) == (200, "")


# === gRPC TensorProtos ===


@pytest.mark.parametrize("size", [300_000_000, 10**12])
def test_a_tensor_proto_declaring_far_more_values_than_sent_is_refused_before_allocating(app, size):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "tiny"
    tensor = request.inputs[sig.TEXT]
    tensor.dtype = tf.string.as_datatype_enum
    tensor.tensor_shape.dim.add(size=size)
    tensor.string_val.append(b"x")
    channel, stub = predict_stub(app)
    start = time.monotonic()
    (code, details), growth = peak_growth_mb(lambda: grpc_error(stub.Predict, request, timeout=30))
    channel.close()
    assert code == grpc.StatusCode.INVALID_ARGUMENT and f"[{size}]" in details, details
    assert time.monotonic() - start < 1.0 and growth < 100


def test_a_short_tensor_proto_filled_by_repetition_within_the_request_limit_still_works(app):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "tiny"
    tensor = request.inputs[sig.TEXT]
    tensor.dtype = tf.string.as_datatype_enum
    tensor.tensor_shape.dim.add(size=2)
    tensor.string_val.append(b"The river")  # TensorFlow repeats the last value
    request.inputs[sig.MAX_NEW_TOKENS].CopyFrom(tf.make_tensor_proto(np.int32(2)))
    channel, stub = predict_stub(app)
    outputs = stub.Predict(request, timeout=30).outputs
    channel.close()
    completions = tf.make_ndarray(outputs[sig.COMPLETION])
    assert completions.shape == (2,) and completions[0] == completions[1]
