"""The REST side of `tfllm serve`: TF Serving's REST API, Prometheus metrics, `/generate`, streaming
over server-sent events, and the playground page. Standard library only (`http.server`).

Routes:
- `POST /v1/models/NAME[/versions/N|/labels/L]:predict` and `GET /v1/models/NAME[...][/metadata]`,
  as TF Serving answers them (`http_rest_api_handler.cc`; bodies in `json_tensors.py`); `:classify`
  and `:regress` answer 501, as the gRPC side does.
- `GET /monitoring/prometheus/metrics` (or the path a `--monitoring_config_file` names).
- `POST /generate {"text": ..., "max_new_tokens": ..., "model": ...}` → `{"generated_text": ...}`.
- `POST /generate_stream` (same body) → `text/event-stream`: `data: {"text": piece}` per piece, then
  `data: {"done": true, "generated_text": ...}`; a failure after the first piece is an
  `event: error` with `{"error", "code"}`.
- `GET /` the playground (`static/playground.html`).
"""

import contextlib
import http.server
import json
import logging
import re
import socket
import threading
import time
import urllib.parse

import numpy as np

from tfllm.export import signatures as sig
from tfllm.serving.server import json_tensors
from tfllm.serving.server.errors import ServingError, invalid_argument
from tfllm.serving.server.http_framing import RequestReader, framing_problem
from tfllm.serving.server.metrics import Metrics, prometheus_path
from tfllm.serving.server.validation import GENERATE_PARAMETERS, generate_request

logger = logging.getLogger(__name__)

_V1 = re.compile(r"(?i)/v1/.*")
_PREDICT = re.compile(r"(?i)/v1/models/([^/:]+)(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?:(classify|regress|predict)")
_MODEL = re.compile(r"(?i)/v1/models(?:/([^/:]+))?(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?(?:/(metadata))?")
_IDLE_SECONDS = 30  # a keep-alive connection with no request for this long is closed
_BACKLOG = 1024  # pending connections the OS queues (a burst of clients is not reset)


class RestServer:
    """TF Serving's REST API (plus `/generate`, streaming, metrics and a playground) over a core.

    Args:
        core: the `ServingCore` (see `tfllm/serving/server/core.py`) answering requests.
        host: address to bind ("0.0.0.0" as TF Serving; "127.0.0.1" for loopback only).
        port: port to bind; 0 picks a free one (read it back from `port` after `start()`).
        options: `ServerOptions` (`max_request_bytes`, `rest_api_timeout_in_ms`,
            `monitoring_config_file`); the core's when None.
        metrics: the `Metrics` to record into and serve; a new one when None. Share one with the
            gRPC side so `/monitoring/prometheus/metrics` counts both.

    Example:
    ```python
    rest = RestServer(core, "127.0.0.1", 0)
    rest.start()
    print(f"http://127.0.0.1:{rest.port}/")   # the playground
    rest.stop()
    ```
    """

    def __init__(self, core, host="0.0.0.0", port=8501, options=None, metrics=None):
        self.core = core
        self.host, self._requested_port = host, port
        self.options = options if options is not None else getattr(core, "options", None)
        self.metrics = metrics if metrics is not None else Metrics()
        self.metrics_path = prometheus_path(getattr(self.options, "monitoring_config_file", ""))
        self.max_request_bytes = getattr(self.options, "max_request_bytes", None)
        self._httpd = None
        self._thread = None
        self._in_flight = 0
        self._idle = threading.Condition()
        self.stopping = False

    @property
    def port(self):
        """The bound port (the OS's choice when 0 was asked for); None before `start()`."""
        return self._httpd.server_address[1] if self._httpd else None

    def start(self):
        """Binds and starts serving on a background thread."""
        self._httpd = _HTTPServer((self.host, self._requested_port), self)
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.2},
                                        name=f"rest-{self.port}", daemon=True)
        self._thread.start()
        logger.info("REST API on http://%s:%d/ (playground at /, metrics at %s)", self.host, self.port,
                    self.metrics_path or "off")
        return self

    def stop(self, grace_seconds=10.0):
        """Stops accepting connections, lets requests in flight finish (up to `grace_seconds`), closes."""
        if self._httpd is None:
            return
        self.stopping = True
        self._httpd.shutdown()
        self._httpd.server_close()  # new connections are refused from now on
        with self._idle:
            if not self._idle.wait_for(lambda: self._in_flight == 0, grace_seconds):
                logger.warning("REST stop: %d requests still running after %.1f s", self._in_flight, grace_seconds)
        self._httpd.close_connections()
        self._thread.join(timeout=5)
        self._httpd = None

    def _enter(self):
        with self._idle:
            self._in_flight += 1

    def _leave(self):
        with self._idle:
            self._in_flight -= 1
            self._idle.notify_all()

    def deadline(self):
        """The absolute `time.monotonic()` deadline of a request starting now (TF Serving's REST timeout)."""
        timeout_ms = getattr(self.options, "rest_api_timeout_in_ms", 0) or 0
        seconds = timeout_ms / 1000 if timeout_ms > 0 else getattr(self.options, "request_timeout_seconds", None)
        return time.monotonic() + seconds if seconds else None

    def read_seconds(self):
        """How long a request's headers and body may take to arrive (`rest_api_read_timeout_in_ms`)."""
        return (getattr(self.options, "rest_api_read_timeout_in_ms", 0) or 10000) / 1000

    def model_names(self):
        """The models the core serves, for `/generate`'s default and the playground."""
        names = getattr(self.core, "model_names", None)
        if callable(names):
            return list(names())
        name = getattr(self.options, "model_name", None)
        return [name] if name else []


class _HTTPServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = _BACKLOG
    allow_reuse_address = True  # a restarted server can bind its port while old sockets are in TIME_WAIT

    def __init__(self, address, rest):
        self.rest = rest
        self._connections = set()
        self._lock = threading.Lock()
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)

    def process_request(self, request, client_address):
        with self._lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request):
        with self._lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self):
        """Wakes handler threads blocked on idle keep-alive connections so they exit."""
        with self._lock:
            connections = list(self._connections)
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # already closed by the client


class _Handler(RequestReader, http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "tfllm-serve"
    timeout = _IDLE_SECONDS

    # === Plumbing ===

    def log_message(self, format, *args):  # noqa: A002  (the base class's signature)
        logger.debug("%s %s", self.address_string(), format % args)

    def do_GET(self):
        self._dispatch()

    do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_GET

    def _dispatch(self):
        rest = self.server.rest
        self._body_read, self._started = False, False
        self.close_connection = self.close_connection or rest.stopping  # no more requests on this connection
        problem = framing_problem(self.headers)
        if problem is not None:
            self._send_error(invalid_argument(problem), close=True)
            return
        rest._enter()
        try:
            self._route(urllib.parse.urlsplit(self.path).path)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        finally:
            rest._leave()

    def _route(self, path):
        rest, method = self.server.rest, self.command
        if method in ("GET", "HEAD") and path in ("/", "/index.html"):
            return self._playground()
        if method == "GET" and rest.metrics_path and path == rest.metrics_path:
            return self._send(200, rest.metrics.render().encode("utf-8"), "text/plain; version=0.0.4; charset=utf-8")
        if method == "POST" and path == "/generate":
            return self._generate()
        if method == "POST" and path == "/generate_stream":
            return self._generate_stream()
        if _V1.fullmatch(path):
            return self._v1(method, path)
        self._send_error(ServingError("NOT_FOUND", f"Not found: {method} {path}"))

    @contextlib.contextmanager
    def _answering(self, api=None):
        """Answers a `ServingError` (or a bug, as INTERNAL) with TF Serving's error JSON, and records
        the request in the metrics once `outcome["model"]` is known."""
        outcome, start = {"api": api, "model": None, "version": None, "code": "OK"}, time.monotonic()
        self._pending = (outcome, start)
        try:
            yield outcome
        except (BrokenPipeError, ConnectionResetError):
            outcome["code"] = "CANCELLED"
            raise
        except Exception as error:  # noqa: BLE001  (one bad request must never take the server down)
            if not isinstance(error, ServingError):
                logger.exception("REST %s %s failed", self.command, self.path)
                error = ServingError("INTERNAL", f"{type(error).__name__}: {error}")
            outcome["code"] = error.code
            if self._started:
                self.close_connection = True  # too late for a status: drop the connection
            else:
                self._send_error(error)
        finally:
            self._record_pending()

    def _record_pending(self):
        """Records the request being answered, once: before a whole response is written (so a client
        that reads the metrics right after its answer sees it counted), else when the answer ends."""
        pending, self._pending = getattr(self, "_pending", None), None
        if pending is None:
            return
        outcome, start = pending
        if outcome["api"] and outcome["model"] is not None:
            self.server.rest.metrics.record_request(outcome["model"], outcome["version"], outcome["api"],
                                                    outcome["code"], time.monotonic() - start)

    def _start(self, status, headers):
        self._started = True
        self._reader.deadline = None
        self.connection.settimeout(self.timeout)  # writes get the idle timeout, not what the read deadline left
        if not self._body_read and self._has_body():
            self.close_connection = True  # an unread body would be taken for the next request
        self.send_response(status)
        for key, value in headers:
            self.send_header(key, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()

    def _send(self, status, body, content_type="application/json", headers=()):
        self._record_pending()
        self._start(status, [("Content-Type", content_type), ("Content-Length", str(len(body))), *headers])
        if self.command != "HEAD":
            self.wfile.write(body)

    def _send_error(self, error, close=False):
        self.close_connection = self.close_connection or close
        self._send(error.http_status, json.dumps(error.rest_body(), ensure_ascii=False).encode("utf-8"))

    # === TF Serving's API ===

    def _v1(self, method, path):
        with self._answering() as outcome:
            predict, status = _PREDICT.fullmatch(path), _MODEL.fullmatch(path)
            if method == "POST" and predict:
                name, version, label, verb = predict.groups()
                outcome.update(api="predict", model=urllib.parse.unquote(name))
                outcome["version"] = _version(version)
                return self._predict(outcome, label and urllib.parse.unquote(label), verb.lower())
            if method == "GET" and status and status.group(1):
                name, version, label, subresource = status.groups()
                outcome.update(api="GetModelMetadata" if subresource else "GetModelStatus",
                               model=urllib.parse.unquote(name))
                outcome["version"] = _version(version)
                return self._model_status(outcome, label and urllib.parse.unquote(label), subresource)
            if method == "GET" and status:
                raise invalid_argument("Missing model name in request.")
            raise invalid_argument(f"Malformed request: {method} {path}")

    def _model_status(self, outcome, label, subresource):
        core, model, version = self.server.rest.core, outcome["model"], outcome["version"]
        if subresource:
            text = json_tensors.model_metadata_json(core.metadata(model, version, label))
        else:
            text = json_tensors.model_status_json(core.status(model, version, label))
        self._send(200, text.encode("utf-8"))

    def _predict(self, outcome, label, verb):
        from tensorflow.core.framework import types_pb2

        rest, model, version = self.server.rest, outcome["model"], outcome["version"]
        body = self._body()
        if verb != "predict":
            raise ServingError("UNIMPLEMENTED", f"{verb.capitalize()} is not supported by tfllm serve; use predict")
        doc = json_tensors.parse_json(body)
        signature = json_tensors.signature_name(doc)
        servable = rest.core.servable(model, version, label)
        name = signature or sig.SERVING_DEFAULT
        definition = servable.signature_defs.get(name)
        if definition is None:
            raise invalid_argument(f'Serving signature name: "{name}" not found in signature def')
        dtypes = {key: types_pb2.DataType.Name(info.dtype) for key, info in definition.inputs.items()}
        inputs, request_format = json_tensors.predict_inputs(doc, dtypes, servable.defaults.get(name, {}))
        with self._watching_client() as cancellation:
            outcome["version"], outputs = rest.core.predict(
                model, inputs, signature_name=signature or None, version=version, version_label=label,
                deadline=rest.deadline(), cancellation=cancellation)
        self._send(200, json_tensors.predict_response(outputs, request_format).encode("utf-8"))

    # === /generate and /generate_stream ===

    def _generate_request(self, outcome):
        """`(text, params, label)` of a /generate body, checked; sets the outcome's model and version."""
        names = self.server.rest.model_names()
        model, version, label, text, params = generate_request(json_tensors.parse_json(self._body()),
                                                               names[0] if names else None)
        outcome.update(model=model, version=version)
        return text, params, label

    def _generate(self):
        rest = self.server.rest
        with self._answering("generate") as outcome:
            text, params, label = self._generate_request(outcome)
            inputs = {sig.TEXT: np.array([text.encode("utf-8")], dtype=object)}
            inputs.update({key: np.array(value, GENERATE_PARAMETERS[key][0]) for key, value in params.items()})
            with self._watching_client() as cancellation:
                outcome["version"], outputs = rest.core.predict(
                    outcome["model"], inputs, signature_name=sig.SERVING_DEFAULT, version=outcome["version"],
                    version_label=label, deadline=rest.deadline(), cancellation=cancellation)
            generated = outputs[sig.GENERATED_TEXT].reshape(-1)[0]
            generated = generated.decode("utf-8", "replace") if isinstance(generated, bytes) else str(generated)
            self._send(200, json.dumps({sig.GENERATED_TEXT: generated}, ensure_ascii=False).encode("utf-8"))

    def _generate_stream(self):
        with self._answering("generate_stream") as outcome:
            text, params, label = self._generate_request(outcome)
            stream = iter(self.server.rest.core.stream_generate(outcome["model"], text, params,
                                                                version=outcome["version"], version_label=label))
            try:
                self._stream_events(stream, text, outcome)
            finally:
                close = getattr(stream, "close", None)
                if close:
                    close()  # the core stops generating and frees the version

    def _stream_events(self, stream, text, outcome):
        first = next(stream, None)  # before the headers, so a refused request still gets its HTTP status
        chunked = self.request_version == "HTTP/1.1"
        self.close_connection = self.close_connection or not chunked
        self._start(200, [("Content-Type", "text/event-stream; charset=utf-8"), ("Cache-Control", "no-cache"),
                          ("X-Accel-Buffering", "no"),  # proxies: do not hold events back
                          ("Transfer-Encoding", "chunked") if chunked else ("Connection", "close")])
        pieces, generated, item = [], None, first
        try:
            while item is not None:
                piece, generated = _stream_item(item, generated)
                if piece:
                    pieces.append(piece)
                    self._event({"text": piece}, chunked)
                item = next(stream, None)
            self._event({"done": True, sig.GENERATED_TEXT: text + "".join(pieces) if generated is None else generated},
                        chunked)
        except (BrokenPipeError, ConnectionResetError):
            raise  # the client went away; closing the stream stops the generation
        except Exception as error:  # noqa: BLE001  (reported in the stream, as the status line is sent)
            if not isinstance(error, ServingError):
                logger.exception("Streamed generation for %r failed", outcome["model"])
                error = ServingError("INTERNAL", f"{type(error).__name__}: {error}")
            outcome["code"] = error.code
            self._event({"error": error.message, "code": error.code}, chunked, event="error")
        self._record_pending()  # before the end of the stream, so a client reading the metrics next sees it
        if chunked:
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()

    def _event(self, payload, chunked, event=None):
        data = (f"event: {event}\n" if event else "") + "data: " + json.dumps(payload, ensure_ascii=False) + "\n\n"
        data = data.encode("utf-8")
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data) if chunked else data)
        self.wfile.flush()

    # === The playground ===

    def _playground(self):
        from importlib import resources

        page = resources.files("tfllm.serving.server").joinpath("static", "playground.html").read_text("utf-8")
        models = json.dumps(self.server.rest.model_names()).replace("<", "\\u003c")
        page = page.replace("__TFLLM_MODELS__", models.replace("&", "&amp;").replace('"', "&quot;"))
        self._send(200, page.encode("utf-8"), "text/html; charset=utf-8", [("Cache-Control", "no-cache")])


def _version(text):
    if not text:
        return None
    if int(text) >= 2**63:
        raise invalid_argument(f"Failed to convert version: {text} to numeric.")
    return int(text)


def _stream_item(item, generated):
    """`(piece, generated_text)` of one item of `core.stream_generate`: a str, bytes, or a dict."""
    if isinstance(item, dict):
        return item.get("text", ""), item.get(sig.GENERATED_TEXT, generated)
    return (item.decode("utf-8") if isinstance(item, bytes) else str(item)), generated
