"""A client for any TF Serving endpoint (stock `tensorflow_model_server` or `tfllm serve`), over gRPC or REST.

gRPC uses the `tensorflow_serving.apis` stubs; REST uses TF Serving's documented JSON API with
columnar `inputs` and `{"b64": ...}` for binary strings. Both return the same shapes of results,
so code can switch protocol by changing one argument. Streaming (`Client.stream`) is a `tfllm
serve` addition: server-sent events on REST, `tfllm.serving.TextGenerationStream` on gRPC.
"""

import base64
import json
import logging
import time
import urllib.error
import urllib.parse
import urllib.request

import numpy as np

from tfllm.errors import check_float, check_int, invalid_argument
from tfllm.export import signatures as sig

logger = logging.getLogger(__name__)

PROTOCOLS = ("grpc", "rest")
# TF Serving's REST front end answers a canonical code with these HTTP statuses (413 is our
# front end's answer to an oversized body); a client maps them back.
_CODE_OF_HTTP_STATUS = {
    400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
    409: "ABORTED", 413: "RESOURCE_EXHAUSTED", 429: "RESOURCE_EXHAUSTED", 499: "CANCELLED",
    500: "INTERNAL", 501: "UNIMPLEMENTED", 503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED",
}
_NUMPY_DTYPES = {"int32": np.int32, "bool": np.bool_, "float32": np.float32}
_PARAMETER_DTYPES = {t.name: _NUMPY_DTYPES[t.dtype] for t in sig.generation_inputs(0)}


class ServingClientError(Exception):
    """A request failed; carries the server's status.

    Attributes:
        code: the canonical status name, as `grpc.StatusCode` names it ("NOT_FOUND",
            "INVALID_ARGUMENT", "UNAVAILABLE", "DEADLINE_EXCEEDED", ...); for REST, mapped back
            from the HTTP status.
        message: the server's message (TF Serving's `{"error": ...}` on REST).
        http_status: the HTTP status of a REST answer, else None.
    """

    def __init__(self, code, message, http_status=None):
        super().__init__(f"{code}: {message}")
        self.code, self.message, self.http_status = code, message, http_status


class Client:
    """Talks to a TF Serving model server.

    Args:
        target: "host:port" of the gRPC port (protocol "grpc") or the REST port (protocol "rest").
        protocol: "grpc" or "rest".
        timeout: seconds one call may take in all, retries included (a gRPC stream's whole
            length; on REST, each wait for a stream's next piece).
        retries: attempts after the first when the server is unavailable (gRPC UNAVAILABLE, HTTP
            503, connection refused or reset); other errors raise at once.
        backoff: seconds before the first retry; each further retry waits twice as long.

    Example:

    ```python
    from tfllm.serving import Client

    client = Client("localhost:8500")                    # or Client("localhost:8501", protocol="rest")
    client.generate("quickstart", ["The for statement"], max_new_tokens=16)   # ['The for statement ...']
    outputs = client.predict("quickstart", {"text": ["The with statement"]})  # {'generated_text': array([b'...']), ...}
    for piece in client.stream("quickstart", "Exceptions are", max_new_tokens=16):   # `tfllm serve` only
        print(piece, end="", flush=True)
    ```
    """

    def __init__(self, target, protocol="grpc", timeout=30.0, retries=3, backoff=0.2):
        if not isinstance(target, str) or ":" not in target:
            raise invalid_argument("target", 'a string "host:port"', target)
        if protocol not in PROTOCOLS:
            raise invalid_argument("protocol", f"one of {PROTOCOLS}", protocol)
        self.target, self.protocol = target, protocol
        self.timeout = check_float("timeout", timeout, low=0, low_inclusive=False)
        self.retries = check_int("retries", retries, minimum=0)
        self.backoff = check_float("backoff", backoff, low=0)
        self._transport = _GrpcTransport(target) if protocol == "grpc" else _RestTransport(target)

    def close(self):
        self._transport.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    # === TF Serving's API ===

    def predict(self, model, inputs, signature=sig.SERVING_DEFAULT, version=None, label=None):
        """Runs a signature: `{input: value}` → `{output: np.ndarray}` (strings as `bytes` objects).

        Values are numpy arrays or nested lists; Python ints and floats become int32 and float32, as
        `tf.constant` makes them. Over REST, numbers come back as JSON made them (int64, float64).
        """
        if not isinstance(inputs, dict) or not inputs:
            raise invalid_argument("inputs", "a non-empty dict {input name: value}", inputs)
        spec = _model_spec(model, version, label)
        return self._with_retries(lambda timeout: self._transport.predict(spec, inputs, signature, timeout))

    def metadata(self, model, version=None, label=None):
        """The model's signatures, as TF Serving's REST `GET .../metadata` returns them (a dict)."""
        spec = _model_spec(model, version, label)
        return self._with_retries(lambda timeout: self._transport.metadata(spec, timeout))

    def status(self, model, version=None, label=None):
        """`{"model_version_status": [{"version", "state", "status"}, ...]}`, as TF Serving's REST API."""
        spec = _model_spec(model, version, label)
        return self._with_retries(lambda timeout: self._transport.status(spec, timeout))

    # === Text generation ===

    def generate(self, model, prompts, version=None, label=None, **params):
        """Text in, text out through the `serving_default` signature; returns `generated_text` per prompt.

        Args:
            prompts: a string or a list of strings.
            **params: `max_new_tokens`, `do_sample`, `temperature`, `top_k`, `top_p`, `seed`, sent as
                scalar inputs; parameters left out (or None) take the signature's defaults. (Stock TF
                Serving with `--enable_batching` refuses scalar inputs: send none there.)

        Returns:
            A list of strings: each prompt followed by its continuation.
        """
        texts = [prompts] if isinstance(prompts, str) else list(prompts)
        scalars = {name: _PARAMETER_DTYPES[name](value) for name, value in _parameters(params).items()}
        inputs = {sig.TEXT: texts, **scalars}
        outputs = self.predict(model, inputs, sig.SERVING_DEFAULT, version, label)
        return [_text(value) for value in np.asarray(outputs[sig.GENERATED_TEXT]).reshape(-1)]

    def stream(self, model, prompt, version=None, label=None, **params):
        """Streams the continuation of one prompt piece by piece (a `tfllm serve` addition).

        Errors before the first piece (unavailable server, unknown model) raise here, with
        retries as for other calls; later ones raise from the iterator.

        Returns:
            An iterator of strings whose concatenation is the continuation (`generated_text`
            without the prompt).
        """
        if not isinstance(prompt, str):
            raise invalid_argument("prompt", "a string", prompt)
        spec, params = _model_spec(model, version, label), _parameters(params)

        def start(timeout):
            pieces = self._transport.stream(spec, prompt, params, timeout)
            return next(pieces, None), pieces

        first, rest = self._with_retries(start)
        return _chain(first, rest)

    # === Retries ===

    def _with_retries(self, attempt):
        """Calls `attempt(seconds_left)`; retries UNAVAILABLE with exponential backoff until the deadline."""
        deadline = time.monotonic() + self.timeout
        for number in range(self.retries + 1):
            try:
                return attempt(max(deadline - time.monotonic(), 1e-3))
            except ServingClientError as error:
                delay = self.backoff * 2**number
                if error.code != "UNAVAILABLE" or number == self.retries or time.monotonic() + delay >= deadline:
                    raise
                logger.info("%s unavailable (%s); retry %d of %d in %.2f s", self.target, error.message, number + 1,
                            self.retries, delay)
                time.sleep(delay)


def _chain(first, rest):
    if first is not None:
        yield first
    yield from rest


def _parameters(params):
    unknown = sorted(set(params) - set(_PARAMETER_DTYPES))
    if unknown:
        raise invalid_argument("params", f"generation parameters among {tuple(_PARAMETER_DTYPES)}", unknown, TypeError)
    # Python scalars of the signature's types: protobuf fields and JSON take them as they are.
    return {name: _PARAMETER_DTYPES[name](value).item() for name, value in params.items() if value is not None}


def _model_spec(model, version, label):
    if not isinstance(model, str) or not model:
        raise invalid_argument("model", "a model name", model)
    if version is not None and label is not None:
        raise invalid_argument("label", "None when a version is given (TF Serving takes one of them)", label)
    return {"name": model, "version": None if version is None else check_int("version", version, 0), "label": label}


def _text(value):
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


class _GrpcTransport:
    """`tensorflow_serving.apis` stubs plus our streaming method, on one channel."""

    def __init__(self, target):
        import grpc
        from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

        from tfllm.serving import streaming_proto  # lazy: needs grpc, which REST-only clients lack

        self._grpc, self._proto = grpc, streaming_proto
        options = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]
        self.channel = grpc.insecure_channel(target, options=options)
        self.prediction = prediction_service_pb2_grpc.PredictionServiceStub(self.channel)
        self.models = model_service_pb2_grpc.ModelServiceStub(self.channel)
        self._generate = self.channel.unary_stream(
            streaming_proto.FULL_METHOD, request_serializer=streaming_proto.GenerateRequest.SerializeToString,
            response_deserializer=streaming_proto.GenerateResponse.FromString,
        )

    def close(self):
        self.channel.close()

    def _error(self, error):
        code = error.code() if hasattr(error, "code") else None
        return ServingClientError(code.name if code else "UNKNOWN", error.details() if code else str(error))

    def _call(self, method, request, timeout):
        try:
            return method(request, timeout=timeout)
        except self._grpc.RpcError as error:
            raise self._error(error) from error

    @staticmethod
    def _fill_spec(message, spec, signature=None):
        message.name = spec["name"]
        if spec["version"] is not None:
            message.version.value = spec["version"]
        if spec["label"] is not None:
            message.version_label = spec["label"]
        if signature is not None:
            message.signature_name = signature

    def predict(self, spec, inputs, signature, timeout):
        import tensorflow as tf
        from tensorflow_serving.apis import predict_pb2

        request = predict_pb2.PredictRequest()
        self._fill_spec(request.model_spec, spec, signature)
        for name, value in inputs.items():
            request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
        response = self._call(self.prediction.Predict, request, timeout)
        return {name: tf.make_ndarray(tensor) for name, tensor in response.outputs.items()}

    def metadata(self, spec, timeout):
        from google.protobuf import json_format
        from tensorflow_serving.apis import get_model_metadata_pb2

        request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
        self._fill_spec(request.model_spec, spec)
        response = self._call(self.prediction.GetModelMetadata, request, timeout)
        signatures = get_model_metadata_pb2.SignatureDefMap()
        response.metadata["signature_def"].Unpack(signatures)
        return {"model_spec": json_format.MessageToDict(response.model_spec, preserving_proto_field_name=True),
                "metadata": {"signature_def": json_format.MessageToDict(signatures, preserving_proto_field_name=True)}}

    def status(self, spec, timeout):
        from google.protobuf import json_format
        from tensorflow_serving.apis import get_model_status_pb2

        request = get_model_status_pb2.GetModelStatusRequest()
        self._fill_spec(request.model_spec, spec)
        response = self._call(self.models.GetModelStatus, request, timeout)
        return json_format.MessageToDict(response, preserving_proto_field_name=True,
                                         always_print_fields_with_no_presence=True)

    def stream(self, spec, prompt, params, timeout):
        request = self._proto.GenerateRequest(text=prompt, **params)
        self._fill_spec(request.model_spec, spec)
        responses = self._generate(request, timeout=timeout)
        try:
            for response in responses:
                if response.text:
                    yield response.text
                if response.done:
                    return
        except self._grpc.RpcError as error:
            raise self._error(error) from error
        finally:
            responses.cancel()  # the consumer stopped early: the server stops generating


class _RestTransport:
    """TF Serving's REST API with `urllib`: columnar requests, `{"b64": ...}` binaries."""

    def __init__(self, target):
        self.base = target.rstrip("/") if "://" in target else f"http://{target}"
        self._single_output_names = {}

    def close(self):
        pass

    def _open(self, path, body, timeout):
        data = None if body is None else json.dumps(body).encode("utf-8")
        request = urllib.request.Request(self.base + path, data=data, method="GET" if body is None else "POST",
                                         headers={"Content-Type": "application/json"})
        try:
            return urllib.request.urlopen(request, timeout=timeout)
        except urllib.error.HTTPError as error:
            raise _http_error(error) from error
        except (urllib.error.URLError, OSError) as error:
            raise _connection_error(error, timeout) from error

    def _json(self, path, body, timeout):
        with self._open(path, body, timeout) as response:
            try:
                return json.loads(response.read())
            except OSError as error:
                raise _connection_error(error, timeout) from error

    @staticmethod
    def _path(spec):
        path = f"/v1/models/{urllib.parse.quote(spec['name'], safe='')}"
        if spec["version"] is not None:
            return f"{path}/versions/{spec['version']}"
        if spec["label"] is not None:
            return f"{path}/labels/{urllib.parse.quote(spec['label'], safe='')}"
        return path

    def predict(self, spec, inputs, signature, timeout):
        body = {"signature_name": signature, "inputs": {name: _to_json(value) for name, value in inputs.items()}}
        outputs = self._json(self._path(spec) + ":predict", body, timeout)["outputs"]
        if not isinstance(outputs, dict):  # TF Serving leaves the name out when there is one output
            outputs = {self._single_output_name(spec, signature, timeout): outputs}
        return {name: _from_json(value) for name, value in outputs.items()}

    def _single_output_name(self, spec, signature, timeout):
        key = (self._path(spec), signature)
        if key not in self._single_output_names:
            signatures = self.metadata(spec, timeout)["metadata"]["signature_def"]["signature_def"]
            self._single_output_names[key] = next(iter(signatures[signature]["outputs"]))
        return self._single_output_names[key]

    def metadata(self, spec, timeout):
        return self._json(self._path(spec) + "/metadata", None, timeout)

    def status(self, spec, timeout):
        return self._json(self._path(spec), None, timeout)

    def stream(self, spec, prompt, params, timeout):
        body = {"model": spec["name"], sig.TEXT: prompt, **params}
        body.update({key: spec[key] for key in ("version", "label") if spec[key] is not None})
        with self._open("/generate_stream", body, timeout) as response:
            try:
                for event, data in _server_sent_events(response):
                    piece, done = _stream_piece(event, data)
                    if piece:
                        yield piece
                    if done:
                        return
            except OSError as error:
                raise _connection_error(error, timeout) from error


def _server_sent_events(lines):
    """`(event, data)` per server-sent event read from an iterable of byte lines."""
    event, data = "message", []
    for raw in lines:
        line = raw.decode("utf-8").rstrip("\r\n")
        if not line:
            if data:
                yield event, "\n".join(data)
            event, data = "message", []
        elif not line.startswith(":"):
            field, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if field == "data":
                data.append(value)
            elif field == "event":
                event = value
    if data:
        yield event, "\n".join(data)


def _stream_piece(event, data):
    """`(piece, done)` of one `/generate_stream` event: `{"text": piece}`s, then `{"done": true, ...}`;
    a failure midway is `event: error` with `{"error", "code"}`."""
    payload = json.loads(data)
    if event == "error":
        raise ServingClientError(payload.get("code", "UNKNOWN"), payload.get("error", data))
    return payload.get("text", ""), bool(payload.get("done"))


def _http_error(error):
    body = error.read().decode("utf-8", "replace")
    try:
        message = json.loads(body)["error"]
    except (ValueError, KeyError, TypeError):
        message = body or error.reason
    return ServingClientError(_CODE_OF_HTTP_STATUS.get(error.code, "UNKNOWN"), message, error.code)


def _connection_error(error, timeout):
    reason = getattr(error, "reason", error)
    if isinstance(reason, TimeoutError):
        return ServingClientError("DEADLINE_EXCEEDED", f"no answer within {timeout:.3g} s")
    # Refused, reset or closed connections and unresolved names: the server may come back.
    return ServingClientError("UNAVAILABLE", str(reason))


def _to_json(value):
    """A request value as TF Serving's JSON: lists, scalars, strings, `{"b64": ...}` for bytes."""
    if isinstance(value, np.ndarray | np.generic):
        value = value.tolist()
    if isinstance(value, bytes):
        return {"b64": base64.b64encode(value).decode("ascii")}
    if isinstance(value, list | tuple):
        return [_to_json(item) for item in value]
    return value


def _from_json(value):
    """A response value as a numpy array; strings (plain or `{"b64": ...}`) become `bytes`, as gRPC gives them."""
    def convert(item):
        if isinstance(item, dict) and "b64" in item:
            return base64.b64decode(item["b64"])
        if isinstance(item, str):
            return item.encode("utf-8")
        if isinstance(item, list):
            return [convert(x) for x in item]
        return item

    converted = convert(value)
    return np.array(converted, dtype=object) if _has_bytes(converted) else np.asarray(converted)


def _has_bytes(value):
    if isinstance(value, list):
        return any(_has_bytes(item) for item in value)
    return isinstance(value, bytes)
