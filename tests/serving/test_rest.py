"""The REST API of `tfllm serve` over real sockets on 127.0.0.1, with plain `http.client`: TF Serving's
predict (row and columnar), status, metadata, b64, its error statuses and texts, `/generate`,
`/generate_stream` (server-sent events), Prometheus metrics, body limits and graceful stop."""

import base64
import http.client
import json
import re
import socket
import threading
import time

import numpy as np
import pytest

from testing import keras_completions
from tfllm.export import signatures as sig
from tfllm.serving.server import json_tensors
from tfllm.serving.server.errors import ServingError
from tfllm.serving.server.rest import RestServer

pytest.importorskip("tensorflow_text")
pytest.importorskip("tensorflow_serving")

PROMPTS = ["The river", "héllo 🙂"]
MAX_BYTES = 64 * 1024


# === Helpers ===


def request(port, method, path, body=None, headers=None, timeout=120):
    """`(status, content type, parsed JSON or text)` of one request on a fresh connection."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        data = body if body is None or isinstance(body, bytes) else json.dumps(body).encode("utf-8")
        connection.request(method, path, body=data, headers=headers or {})
        response = connection.getresponse()
        raw = response.read()
        kind = response.getheader("Content-Type", "")
        return response.status, kind, (json.loads(raw) if kind.startswith("application/json") else raw.decode())
    finally:
        connection.close()


def events(response):
    """`(event, payload)` of each server-sent event of a streaming response, as they arrive."""
    event, data = "message", []
    while True:
        line = response.readline()
        if not line:
            return
        line = line.decode("utf-8").rstrip("\r\n")
        if line:
            field, _, value = line.partition(": ")
            event, data = (value, data) if field == "event" else (event, data + [value])
            continue
        if data:
            yield event, json.loads("\n".join(data))
        event, data = "message", []


def open_stream(port, body):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    connection.request("POST", "/generate_stream", body=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    return connection, connection.getresponse()


# === `tfllm serve`'s core on the conftest's exported model (version 1, labelled "stable") ===


@pytest.fixture(scope="module")
def served(tiny_lm, stream_base, tmp_path_factory):
    from tfllm.serving.server.core import ServingCore
    from tfllm.serving.server.metrics import Metrics
    from tfllm.serving.server.options import ServerOptions

    config = tmp_path_factory.mktemp("rest") / "models.config"
    config.write_text(
        f'model_config_list {{ config {{ name: "tiny" base_path: "{stream_base}" model_platform: "tensorflow" '
        'version_labels { key: "stable" value: 1 } } }\n'
    )
    options = ServerOptions(port=0, model_config_file=str(config), file_system_poll_wait_seconds=0,
                            max_request_bytes=MAX_BYTES, max_new_tokens_cap=16)
    metrics = Metrics()
    core = ServingCore(options, metrics=metrics).start()
    rest = RestServer(core, "127.0.0.1", 0, options, metrics=metrics).start()
    model, tokenizer = tiny_lm
    yield dict(port=rest.port, model=model, tokenizer=tokenizer, rest=rest)
    rest.stop(grace_seconds=5)
    core.stop(grace_seconds=5)


# === TF Serving's predict ===


def test_row_format_text_in_text_out_equals_local_generate(served):
    expected = keras_completions(served["model"], served["tokenizer"], PROMPTS, max_new_tokens=6)
    for instances in (PROMPTS, [{sig.TEXT: prompt} for prompt in PROMPTS]):
        status, kind, body = request(served["port"], "POST", "/v1/models/tiny:predict", {"instances": instances})
        assert (status, kind) == (200, "application/json"), body
        assert body == {"predictions": [{sig.COMPLETION: c, sig.GENERATED_TEXT: p + c} for p, c in zip(PROMPTS, expected)]}


def test_columnar_format_with_scalar_parameters_and_version_paths(served):
    expected = keras_completions(served["model"], served["tokenizer"], PROMPTS, max_new_tokens=3)
    request_body = {"signature_name": sig.SERVING_DEFAULT, "inputs": {sig.TEXT: PROMPTS, sig.MAX_NEW_TOKENS: 3}}
    for path in ("/v1/models/tiny:predict", "/v1/models/tiny/versions/1:predict", "/V1/Models/tiny/labels/stable:PREDICT"):
        status, _, body = request(served["port"], "POST", path, request_body)
        assert status == 200, body
        assert body == {"outputs": {sig.COMPLETION: expected, sig.GENERATED_TEXT: [p + c for p, c in zip(PROMPTS, expected)]}}


def test_b64_inputs_are_binary_strings(served):
    encoded = [{"b64": base64.b64encode(prompt.encode()).decode()} for prompt in PROMPTS]
    plain = request(served["port"], "POST", "/v1/models/tiny:predict", {"inputs": {sig.TEXT: PROMPTS}})
    status, _, body = request(served["port"], "POST", "/v1/models/tiny:predict", {"inputs": {sig.TEXT: encoded}})
    assert status == 200 and body == plain[2]
    status, _, body = request(served["port"], "POST", "/v1/models/tiny:predict", {"instances": encoded})
    assert status == 200 and [row[sig.GENERATED_TEXT] for row in body["predictions"]] == plain[2]["outputs"][sig.GENERATED_TEXT]


def test_ids_signature_returns_integer_tensors(served):
    model = served["model"]
    ids, mask = [[0, 5, 6, 7], [8, 9, 10, 11]], [[0, 1, 1, 1], [1, 1, 1, 1]]
    body = {"signature_name": sig.GENERATE_IDS, "inputs": {sig.INPUT_IDS: ids, sig.ATTENTION_MASK: mask, sig.MAX_NEW_TOKENS: 3}}
    status, _, answer = request(served["port"], "POST", "/v1/models/tiny:predict", body)
    expected = model.generate(np.array(ids), attention_mask=np.array(mask), max_new_tokens=3).numpy()
    assert status == 200 and answer == {"outputs": expected.tolist()}  # one output: given bare
    body = {"signature_name": sig.LOGITS, "instances": [{sig.INPUT_IDS: row, sig.ATTENTION_MASK: m} for row, m in zip(ids, mask)]}
    status, _, answer = request(served["port"], "POST", "/v1/models/tiny:predict", body)
    logits = model({sig.INPUT_IDS: np.array(ids), sig.ATTENTION_MASK: np.array(mask)}).numpy()
    assert status == 200
    np.testing.assert_allclose(np.array(answer["predictions"]), logits, atol=1e-4)


def test_status_and_metadata_json_as_tf_serving_prints_them(served):
    status, _, body = request(served["port"], "GET", "/v1/models/tiny")
    assert status == 200
    assert body == {"model_version_status": [{"version": "1", "state": "AVAILABLE",
                                              "status": {"error_code": "OK", "error_message": ""}}]}
    assert request(served["port"], "GET", "/v1/models/tiny/versions/1")[2] == body
    status, _, body = request(served["port"], "GET", "/v1/models/tiny/labels/stable/metadata")
    assert status == 200
    assert body["model_spec"] == {"name": "tiny", "version": "1", "signature_name": ""}
    signature = body["metadata"]["signature_def"]["signature_def"][sig.SERVING_DEFAULT]
    assert signature["method_name"] == "tensorflow/serving/predict"
    assert signature["inputs"][sig.TEXT]["dtype"] == "DT_STRING"
    assert signature["inputs"][sig.MAX_NEW_TOKENS]["tensor_shape"] == {"dim": [], "unknown_rank": False}
    assert set(signature["outputs"]) == {sig.GENERATED_TEXT, sig.COMPLETION}


# === Bad requests: TF Serving's status and words, and the server stays up ===

PREDICT = "/v1/models/tiny:predict"
BAD_REQUESTS = [
    ("POST", PREDICT, b'{"instances": [', 400, r"^JSON Parse error: Invalid value\. at offset: 15$"),
    ("POST", PREDICT, b'{"instances": ["a" "b"]}', 400,
     r"^JSON Parse error: Missing a comma or '\]' after an array element\. at offset: 19$"),
    ("POST", PREDICT, b'{"inputs" ["a"]}', 400, r"^JSON Parse error: Missing a colon after a name of object member\. at offset: 10$"),
    ("POST", PREDICT, b"", 400, r"^JSON Parse error: The document is empty$"),
    ("POST", PREDICT, b"[1]", 400, r"^JSON Value: \[\n    1\n\] Is not object$"),
    ("POST", PREDICT, {"instances": ["a"], "inputs": ["a"]}, 400,
     r"Not formatted correctly expecting only one of 'inputs' or 'instances' keys to exist $"),
    ("POST", PREDICT, {"signature_name": sig.SERVING_DEFAULT}, 400, r"^Missing 'inputs' or 'instances' key$"),
    ("POST", PREDICT, {"instances": "a"}, 400, r"Excepting 'instances' to be an list/array$"),
    ("POST", PREDICT, {"instances": []}, 400, r"No values in 'instances' array$"),
    ("POST", PREDICT, {"signature_name": 3, "inputs": ["a"]}, 400, r"'signature_name' key must be a string value\.$"),
    ("POST", PREDICT, {"signature_name": "nope", "inputs": ["a"]}, 400,
     r'^Serving signature name: "nope" not found in signature def$'),
    ("POST", PREDICT, {"inputs": {sig.TEXT: [1, 2]}}, 400, r"^JSON Value: 1 Type: Number is not of expected type: string$"),
    ("POST", PREDICT, {"inputs": {sig.TEXT: ["a"], sig.MAX_NEW_TOKENS: 2.5}}, 400,
     r"^JSON Value: 2\.5 Type: Number is not of expected type: int32$"),
    ("POST", PREDICT, {"inputs": {sig.TEXT: ["a"], sig.DO_SAMPLE: 1}}, 400,
     r"^JSON Value: 1 Type: Number is not of expected type: bool$"),
    ("POST", PREDICT, {"inputs": {sig.TEXT: [["a"], "b"]}}, 400,
     r'^JSON Value: "b" found at incorrect level: 2 in the JSON DOM\. Expected at level: 2$'),
    ("POST", PREDICT, {"inputs": {sig.TEXT: [["a"], ["b", "c"]]}}, 400,
     r"^Encountered list at unexpected size: 2 at level: 1 expected size: 1$"),
    ("POST", PREDICT, {"inputs": {sig.TEXT: [["a"]]}}, 400, r"shape"),  # rank 2 for a rank-1 input
    ("POST", PREDICT, {"signature_name": sig.LOGITS, "inputs": {sig.INPUT_IDS: [[1], [[2]]], sig.ATTENTION_MASK: [[1]]}},
     400, r"^Encountered list at unexpected level: 2 expected < 2$"),
    ("POST", PREDICT, {"inputs": {sig.TEXT: ["a"], sig.TEMPERATURE: 1e39}}, 400,
     r"^Cannot convert JSON value: 1e\+39 to float without loss of precision\.$"),
    ("POST", PREDICT, {"inputs": {sig.TEXT: [{"b64": "YQ==", "x": 1}]}}, 400,
     r'^JSON Value: \{\n    "b64": "YQ==",\n    "x": 1\n\} not formatted correctly for base64 data$'),
    ("POST", PREDICT, {"inputs": {sig.TEXT: ["a"], sig.MAX_NEW_TOKENS: {"b64": "AA=="}}}, 400,
     r'^JSON Value: \{\n    "b64": "AA=="\n\} Type: Object is not of expected type: int32$'),
    ("POST", PREDICT, {"signature_name": "__saved_model_init_op", "inputs": ["a"]}, 400,
     r"^Failed to get input map for signature: __saved_model_init_op$"),
    ("POST", PREDICT, {"inputs": {sig.MAX_NEW_TOKENS: 3}}, 400, r"^Missing named input: text in 'inputs' object\.$"),
    ("POST", PREDICT, {"inputs": {"text": [{"b64": "%%%"}]}}, 400, r"^Unable to base64 decode$"),
    ("POST", PREDICT, {"instances": [{sig.TEXT: "a", "foo": 1}]}, 400,
     r"^Failed to process element: 0 key: foo of 'instances' list\. Error: INVALID_ARGUMENT: "
     r"JSON object: does not have named input: foo$"),
    ("POST", PREDICT, {"instances": [{sig.MAX_NEW_TOKENS: 3}]}, 400,
     r"^Failed to process element: 0 of 'instances' list\. JSON object: .* keys must be equal to: max_new_tokens,text$"),
    ("POST", PREDICT, {"instances": [{sig.TEXT: "a"}, "b"]}, 400, r"^Expecting object but got list at item 1 of input list$"),
    ("POST", PREDICT, {"instances": ["a", {sig.TEXT: "b"}]}, 400,
     r"^Expecting value/list but got object at item 1 of input list$"),
    ("POST", PREDICT, {"instances": [{sig.TEXT: ["a"]}, {sig.TEXT: ["b", "c"]}]}, 400,
     r"^Failed to process element: 1 key: text of 'instances' list\. Error: INVALID_ARGUMENT: "
     r"Expecting tensor size: 1 but got: 2$"),
    ("POST", PREDICT, {"instances": [{sig.TEXT: "a"}, {sig.TEXT: ["b"]}]}, 400,
     r"^Failed to process element: 1 key: text of 'instances' list\. Error: INVALID_ARGUMENT: "
     r"Expecting shape \[\] but got: \[1\]$"),
    ("POST", "/v1/models/tiny/versions/1:predict", {"signature_name": sig.LOGITS, "instances": [[1, 2]]}, 400,
     r"^instances is a plain list, but expecting list of objects as multiple input tensors required as per tensorinfo_map$"),
    ("POST", PREDICT, {"inputs": {sig.TEXT: ["a"], sig.MAX_NEW_TOKENS: 17}}, 400, r"max_new_tokens"),
    ("POST", "/v1/models/nope:predict", {"inputs": ["a"]}, 404, r"^Servable not found for request: Latest\(nope\)$"),
    ("POST", "/v1/models/tiny/versions/7:predict", {"inputs": ["a"]}, 404,
     r"^Servable not found for request: Specific\(tiny, 7\)$"),
    ("POST", "/v1/models/tiny/versions/99999999999999999999:predict", {"inputs": ["a"]}, 400,
     r"^Failed to convert version: 99999999999999999999 to numeric\.$"),
    ("POST", "/v1/models/tiny:classify", {"examples": []}, 501, r"."),
    ("POST", "/v1/models/tiny:explode", {"inputs": ["a"]}, 400, r"^Malformed request: POST /v1/models/tiny:explode$"),
    ("GET", "/v1/models", None, 400, r"^Missing model name in request\.$"),
    ("GET", "/v1/models/nope", None, 404, r"^Could not find any versions of model nope$"),
    ("GET", "/v1/models/tiny/labels/canary/metadata", None, 400, r"^Unrecognized servable version label: canary$"),
    ("GET", "/v1/models/tiny/versions/7", None, 404, r"^Could not find version 7 of model tiny$"),
    ("GET", "/nope", None, 404, r"."),
    ("POST", "/generate", {"text": 3}, 400, r"^Invalid value for argument `text`\. Expected a string\. Received: text=3$"),
    ("POST", "/generate", {"text": "a", "temperature": "hot"}, 400,
     r"^Invalid value for argument `temperature`\. Expected a number\. Received: temperature='hot'$"),
    ("POST", "/generate", {"text": "a", "max_new_token": 3}, 400, r"^Invalid keys in the request: max_new_token\."),
    ("POST", "/generate", {"text": "a", "model": "nope"}, 404, r"Servable not found"),
    ("POST", "/generate", {"text": "a", "model": 3}, 400, r"^Invalid value for argument `model`\. Expected a model name\."),
    ("POST", "/generate", {"text": "a", "version": "x"}, 400, r"^Invalid value for argument `version`\."),
    ("POST", "/generate", {"text": "a", "label": 3}, 400, r"^Invalid value for argument `label`\."),
    ("POST", "/generate", {"text": "a", "seed": 2**40}, 400,
     r"^Invalid value for argument `seed`\. Expected an int32\. Received: seed=1099511627776$"),
    ("POST", "/generate", {"text": "a", "do_sample": 1}, 400,
     r"^Invalid value for argument `do_sample`\. Expected true or false\. Received: do_sample=1$"),
    ("POST", "/generate_stream", {"text": "a", "max_new_tokens": 17}, 400, r"max_new_tokens"),
    ("POST", "/generate_stream", b"{", 400, r"^JSON Parse error: "),
]


def test_bad_requests_get_tf_servings_status_and_message_then_a_good_one_succeeds(served):
    port = served["port"]
    for method, path, body, expected_status, pattern in BAD_REQUESTS:
        status, kind, answer = request(port, method, path, body)
        assert status == expected_status, (path, body, answer)
        assert kind == "application/json" and set(answer) == {"error"}, answer
        assert re.search(pattern, answer["error"], re.S), (path, body, answer["error"])
    status, _, answer = request(port, "POST", PREDICT, {"instances": ["The river"]})
    assert status == 200 and answer["predictions"][0][sig.GENERATED_TEXT].startswith("The river")


def test_oversized_bodies_get_413_without_being_read(served):
    port = served["port"]
    status, _, answer = request(port, "POST", PREDICT, b'{"inputs": ["' + b"x" * MAX_BYTES + b'"]}')
    assert status == 413 and "exceeds the maximum request size" in answer["error"]
    # A body declared as a gigabyte is refused at once, from its header.
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    start = time.monotonic()
    connection.putrequest("POST", PREDICT)
    connection.putheader("Content-Length", str(1 << 30))
    connection.endheaders(b'{"inputs": ["a"]}')
    response = connection.getresponse()
    assert response.status == 413 and response.getheader("Connection") == "close"
    assert time.monotonic() - start < 5
    connection.close()
    assert request(port, "GET", "/v1/models/tiny")[0] == 200


def test_keep_alive_connection_serves_several_requests(served):
    connection = http.client.HTTPConnection("127.0.0.1", served["port"], timeout=60)
    for _ in range(3):
        connection.request("GET", "/v1/models/tiny")
        response = connection.getresponse()
        assert response.status == 200 and json.loads(response.read())["model_version_status"]
    connection.request("POST", PREDICT, body=b"{bad")
    response = connection.getresponse()
    assert response.status == 400 and response.read()
    connection.request("POST", PREDICT, body=json.dumps({"instances": ["a"]}).encode())
    assert connection.getresponse().status == 200
    connection.close()


# === /generate and /generate_stream ===


def test_generate_equals_local_generation(served):
    expected = keras_completions(served["model"], served["tokenizer"], ["The river"], max_new_tokens=4)[0]
    status, _, body = request(served["port"], "POST", "/generate", {"text": "The river", "max_new_tokens": 4})
    assert (status, body) == (200, {sig.GENERATED_TEXT: "The river" + expected})
    status, _, body = request(served["port"], "POST", "/generate", {"text": "The river", "model": "tiny", "version": 1,
                                                                     "do_sample": False, "top_k": 0, "seed": 3})
    assert status == 200 and body[sig.GENERATED_TEXT].startswith("The river")


def test_generate_stream_pieces_are_separate_events_that_join_to_the_generated_text(served):
    body = {"text": "The river", "max_new_tokens": 5}
    whole = request(served["port"], "POST", "/generate", body)[2][sig.GENERATED_TEXT]
    connection, response = open_stream(served["port"], body)
    assert response.status == 200 and response.getheader("Content-Type").startswith("text/event-stream")
    received = list(events(response))
    connection.close()
    pieces = [payload["text"] for event, payload in received[:-1]]
    assert len(pieces) >= 2 and all(event == "message" for event, _ in received)
    assert received[-1][1] == {"done": True, sig.GENERATED_TEXT: whole}
    assert "The river" + "".join(pieces) == whole


# === Metrics ===


def test_prometheus_metrics_count_requests_and_errors(served):
    port = served["port"]
    before = _samples(request(port, "GET", "/monitoring/prometheus/metrics")[2])
    request(port, "POST", PREDICT, {"instances": ["a"]})
    request(port, "POST", PREDICT, {"inputs": {sig.TEXT: [1]}})
    request(port, "POST", "/v1/models/nope:predict", {"inputs": ["a"]})
    status, kind, text = request(port, "GET", "/monitoring/prometheus/metrics")
    assert status == 200 and kind.startswith("text/plain")
    after = _samples(text)

    def delta(name, **labels):
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0) - before.get(key, 0)

    assert delta(":tensorflow:serving:request_count", model_name="tiny", status="OK") == 1
    assert delta(":tensorflow:serving:request_count", model_name="tiny", status="INVALID_ARGUMENT") == 1
    assert delta(":tensorflow:serving:request_count", model_name="nope", status="NOT_FOUND") == 1
    assert delta(":tfllm:serving:request_count", model_name="tiny", version="1", API="predict", entrypoint="REST",
                 status="OK") == 1
    latency = dict(model_name="tiny", API="predict", entrypoint="REST")
    assert delta(":tensorflow:serving:request_latency_count", **latency) == 2
    assert after[(":tensorflow:serving:request_latency_bucket", tuple(sorted({**latency, "le": "+Inf"}.items())))] == \
        after[(":tensorflow:serving:request_latency_count", tuple(sorted(latency.items())))]


def _samples(text):
    """`{(name, sorted labels): value}` of a Prometheus text page; every line must parse."""
    samples = {}
    for line in text.splitlines():
        if line.startswith("#"):
            assert re.fullmatch(r"# TYPE [a-zA-Z_:][a-zA-Z0-9_:]* (counter|histogram|gauge|untyped)", line), line
            continue
        match = re.fullmatch(r'([a-zA-Z_:][a-zA-Z0-9_:]*)\{(.*)\} (\S+)', line)
        assert match, line
        labels = tuple(sorted(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"', match.group(2))))
        samples[(match.group(1), labels)] = float(match.group(3))
    return samples


# === Encoding details (no server) ===


def test_output_encoding_follows_tf_serving():
    outputs = {"image_bytes": np.array([b"\x00\xff"], object), "text": np.array([b"\xff\xfe", "ok".encode()], object)}
    with pytest.raises(ServingError, match="inconsistent batch size: 2 expecting: 1"):
        json_tensors.predict_response(outputs, json_tensors.ROW)
    text = json_tensors.predict_response(outputs, json_tensors.COLUMNAR)
    assert json.loads(text) == {"outputs": {"image_bytes": [{"b64": "AP8="}], "text": [{"b64": "//4="}, "ok"]}}
    floats = {"x": np.array([[0.2, 1.0, 9e6, np.nan, -np.inf, 1 / 3]], np.float32)}
    assert json_tensors.predict_response(floats, json_tensors.ROW).split("[", 2)[2].startswith(
        "0.2, 1.0, 9e+06, NaN, -Infinity, 0.333333343]")
    with pytest.raises(ServingError, match="Tensor name: x has no shape information"):
        json_tensors.predict_response({"x": np.float32(1)}, json_tensors.ROW)
    with pytest.raises(ServingError, match="Cannot convert empty tensor map to JSON"):
        json_tensors.predict_response({}, json_tensors.ROW)
    with pytest.raises(ServingError, match="Failed to write JSON value for tensor type: complex64"):
        json_tensors.predict_response({"x": np.ones([1], np.complex64)}, json_tensors.COLUMNAR)


def test_inputs_of_types_json_cannot_carry_are_unimplemented():
    with pytest.raises(ServingError, match=r"^Conversion of JSON Value: 1\.5 to type: half$") as caught:
        json_tensors.predict_inputs({"inputs": [1.5]}, {"x": "DT_HALF"})
    assert caught.value.code == "UNIMPLEMENTED"
    inputs, request_format = json_tensors.predict_inputs({"inputs": [[1, 2]]}, {"x": "DT_INT64"})
    assert request_format == json_tensors.COLUMNAR and inputs["x"].dtype == np.int64 and inputs["x"].shape == (1, 2)


def test_metadata_without_signature_defs_is_an_internal_error():
    from tensorflow_serving.apis import get_model_metadata_pb2

    with pytest.raises(ServingError, match="Failed to find 'signature_def' key") as caught:
        json_tensors.model_metadata_json(get_model_metadata_pb2.GetModelMetadataResponse())
    assert caught.value.code == "INTERNAL"


# === Streaming, disconnects and shutdown, with a scripted core (no model) ===


class ScriptedCore:
    """Streams pieces as the test allows, and answers /generate when the test says so."""

    def __init__(self):
        from tfllm.serving.server.options import ServerOptions

        self.options = ServerOptions(max_request_bytes=MAX_BYTES)
        self.release, self.closed, self.entered = threading.Event(), threading.Event(), threading.Event()
        self.yielded = 0

    def model_names(self):
        return ["scripted"]

    def stream_generate(self, model_name, text, params, version=None, version_label=None):
        try:
            self.yielded = 1
            yield "first"
            assert self.release.wait(10), "the test never released the stream"
            for index in range(200):
                time.sleep(0.005)
                self.yielded += 1
                yield f" {index}"
            raise ServingError("DEADLINE_EXCEEDED", "out of time")
        finally:
            self.closed.set()

    def predict(self, model_name, inputs, signature_name=None, version=None, version_label=None,
                output_filter=None, deadline=None, cancellation=None):
        self.entered.set()
        assert self.release.wait(10), "the test never released the request"
        return 3, {sig.GENERATED_TEXT: np.array([inputs[sig.TEXT][0] + b"!"], object)}


@pytest.fixture()
def scripted():
    core = ScriptedCore()
    rest = RestServer(core, "127.0.0.1", 0).start()
    yield core, rest
    core.release.set()
    rest.stop(grace_seconds=5)


def test_events_are_flushed_as_produced_and_an_error_ends_the_stream(scripted):
    core, rest = scripted
    connection, response = open_stream(rest.port, {"text": "x"})
    stream = events(response)
    assert next(stream) == ("message", {"text": "first"})  # while the core is still blocked
    assert core.yielded == 1 and not core.release.is_set()
    core.release.set()
    rest_of_it = list(stream)
    connection.close()
    assert [payload["text"] for _, payload in rest_of_it[:-1]] == [f" {i}" for i in range(200)]
    assert rest_of_it[-1] == ("error", {"error": "out of time", "code": "DEADLINE_EXCEEDED"})
    status, _, text = request(rest.port, "GET", "/monitoring/prometheus/metrics")
    assert ':tensorflow:serving:request_count{model_name="scripted",status="DEADLINE_EXCEEDED"} 1' in text


def test_a_client_that_goes_away_stops_the_generation(scripted):
    core, rest = scripted
    connection, response = open_stream(rest.port, {"text": "x"})
    assert next(events(response)) == ("message", {"text": "first"})
    connection.close()
    response.close()
    core.release.set()
    assert core.closed.wait(10)
    assert core.yielded < 200


def test_stop_lets_requests_in_flight_finish(scripted):
    core, rest = scripted
    port, answers = rest.port, []
    client = threading.Thread(target=lambda: answers.append(request(port, "POST", "/generate", {"text": "hi"})))
    client.start()
    assert core.entered.wait(10)
    stopper = threading.Thread(target=rest.stop)
    stopper.start()
    time.sleep(0.3)
    assert stopper.is_alive() and not answers  # stop waits for the request
    with pytest.raises(ConnectionRefusedError):  # but takes no new connection meanwhile
        request(port, "GET", "/v1/models/scripted", timeout=2)
    core.release.set()
    client.join(10)
    stopper.join(10)
    assert answers == [(200, "application/json", {sig.GENERATED_TEXT: "hi!"})]
    with pytest.raises(OSError):
        request(port, "GET", "/v1/models/scripted", timeout=2)


def test_chunked_bodies_and_expect_100_continue(scripted):
    core, rest = scripted
    core.release.set()
    connection = http.client.HTTPConnection("127.0.0.1", rest.port, timeout=30)
    connection.request("POST", "/generate", body=iter([b'{"text": ', b'"hi"}']), encode_chunked=True,
                       headers={"Transfer-Encoding": "chunked"})
    response = connection.getresponse()
    assert (response.status, json.loads(response.read())) == (200, {sig.GENERATED_TEXT: "hi!"})
    connection.request("POST", "/generate", body=iter([b"x" * MAX_BYTES, b"x" * 16]), encode_chunked=True,
                       headers={"Transfer-Encoding": "chunked"})
    response = connection.getresponse()
    assert response.status == 413 and "exceeds the maximum request size" in json.loads(response.read())["error"]
    connection.close()
    with socket.create_connection(("127.0.0.1", rest.port), timeout=10) as raw:
        raw.sendall(b"POST /generate HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n")
        answer = _read_until_closed_or(raw, b"Malformed chunked request body")
        assert answer.startswith(b"HTTP/1.1 400 ") and b"Malformed chunked request body" in answer
    # A client that asks first is refused before it sends the body.
    with socket.create_connection(("127.0.0.1", rest.port), timeout=10) as raw:
        raw.sendall(b"POST /generate HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000000\r\nExpect: 100-continue\r\n\r\n")
        assert raw.recv(1024).startswith(b"HTTP/1.1 413 ")


def _read_until_closed_or(raw, marker, limit=65536):
    """Reads a raw socket until `marker` arrives, the peer closes, or `limit` bytes (headers and body
    may come in separate packets)."""
    answer = b""
    while marker not in answer and len(answer) < limit:
        chunk = raw.recv(4096)
        if not chunk:
            break
        answer += chunk
    return answer


class BrokenCore:
    """Every call fails with a bug (not a ServingError)."""

    def model_names(self):
        return ["broken"]

    def predict(self, *args, **kwargs):
        raise RuntimeError("boom")

    status = predict

    def stream_generate(self, *args, **kwargs):
        yield "a"
        raise RuntimeError("boom")


def test_a_failing_core_gives_internal_errors_and_the_server_stays_up():
    rest = RestServer(BrokenCore(), "127.0.0.1", 0).start()
    try:
        assert request(rest.port, "POST", "/generate", {"text": "x"})[::2] == (500, {"error": "RuntimeError: boom"})
        assert request(rest.port, "GET", "/v1/models/broken")[::2] == (500, {"error": "RuntimeError: boom"})
        connection, response = open_stream(rest.port, {"text": "x"})
        assert list(events(response)) == [("message", {"text": "a"}),
                                          ("error", {"error": "RuntimeError: boom", "code": "INTERNAL"})]
        connection.close()
        status, kind, page = request(rest.port, "GET", "/")
        assert status == 200 and kind.startswith("text/html") and 'content="[&quot;broken&quot;]"' in page
        metrics = request(rest.port, "GET", "/monitoring/prometheus/metrics")[2]
        assert ':tensorflow:serving:request_count{model_name="broken",status="INTERNAL"} 3' in metrics
    finally:
        rest.stop()


def test_a_monitoring_config_moves_or_disables_the_metrics_page(tmp_path):
    from tfllm.serving.server.options import ServerOptions

    config = tmp_path / "monitoring.config"
    for text, served_at, missing_at in (
        ('prometheus_config { enable: true path: "/metrics" }', "/metrics", "/monitoring/prometheus/metrics"),
        ("prometheus_config { enable: false }", None, "/monitoring/prometheus/metrics"),
    ):
        config.write_text(text)
        rest = RestServer(BrokenCore(), "127.0.0.1", 0, ServerOptions(monitoring_config_file=str(config))).start()
        try:
            if served_at:
                assert request(rest.port, "GET", served_at)[0] == 200
            assert request(rest.port, "GET", missing_at)[0] == 404
        finally:
            rest.stop()


def test_grpc_requests_show_on_the_rest_metrics_page(running_server):
    import grpc
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    _, grpc_port, rest_port = running_server
    predict = predict_pb2.PredictRequest()
    predict.model_spec.name = "tiny"
    predict.inputs[sig.TEXT].CopyFrom(tf.make_tensor_proto(["The river"]))
    with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
        prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(predict, timeout=60)
    assert request(rest_port, "POST", PREDICT, {"instances": ["The river"]})[0] == 200
    text = request(rest_port, "GET", "/monitoring/prometheus/metrics")[2]
    for entrypoint in ("GRPC", "REST"):
        assert (f':tfllm:serving:request_count{{model_name="tiny",version="1",API="predict",entrypoint="{entrypoint}",'
                'status="OK"} 1') in text
    assert ':tensorflow:serving:request_count{model_name="tiny",status="OK"} 2' in text
