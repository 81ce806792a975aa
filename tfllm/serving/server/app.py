"""`ServerApp`: the core, the gRPC server and (when present) the REST server of `tfllm serve`, started and stopped together."""

import logging
import signal
import threading

from tfllm.serving.server.core import ServingCore
from tfllm.serving.server.grpc_service import build_grpc_server

logger = logging.getLogger(__name__)


def _optional(module, name):
    """`module.name`, or None when the module (built separately) is not there."""
    import importlib

    try:
        return getattr(importlib.import_module(module), name)
    except ImportError as error:
        logger.debug("%s.%s not available: %s", module, name, error)
        return None


class ServerApp:
    """Everything `tfllm serve` runs.

    Args:
        options: a `tfllm.serving.server.options.ServerOptions`.

    Attributes:
        core: the `ServingCore`.
        grpc_port: the bound gRPC port after `start()` (None when `options.port` is 0).
        rest_port: the bound REST port after `start()` (None when REST is off or not installed).

    Example:
    ```python
    app = ServerApp(ServerOptions(port=8500, rest_api_port=8501, model_name="tiny",
                                  model_base_path="saved_models/tiny")).start()
    app.wait()   # until stop() (from another thread or a signal handler)
    ```
    """

    def __init__(self, options):
        self.options = options
        metrics_class = _optional("tfllm.serving.server.metrics", "Metrics")
        self.metrics = metrics_class() if metrics_class is not None else None
        self.core = ServingCore(options, metrics=self.metrics)
        self.grpc_server = None
        self.rest_server = None
        self.grpc_port = self.rest_port = None
        self._stopped = threading.Event()
        self._stop_lock = threading.Lock()

    def start(self):
        """Loads the models, then opens the gRPC and REST ports; returns self."""
        self.core.start()
        try:
            if self.options.port:
                streaming = _optional("tfllm.serving.server.streaming_service", "add_streaming_service")
                self.grpc_server, self.grpc_port = build_grpc_server(
                    self.core, self.options, extensions=[streaming] if streaming else []
                )
                self.grpc_server.start()
                logger.info("Running gRPC ModelServer at %s:%d ...", self.options.grpc_bind_host, self.grpc_port)
            if self.options.rest_api_port:
                rest_class = _optional("tfllm.serving.server.rest", "RestServer")
                if rest_class is None:
                    logger.error("No REST front end installed (tfllm.serving.server.rest); REST API not exported")
                else:
                    self.rest_server = rest_class(self.core, self.options.rest_api_host, self.options.rest_api_port,
                                                  self.options, metrics=self.metrics)
                    self.rest_server.start()
                    self.rest_port = self.rest_server.port
                    logger.info("Exporting HTTP/REST API at %s:%d ...", self.options.rest_api_host, self.rest_port)
        except BaseException:
            self.stop(grace_seconds=0)
            raise
        return self

    def stop(self, grace_seconds=10.0):
        """Stops taking requests, finishes those in flight (up to `grace_seconds`), unloads the models."""
        with self._stop_lock:
            if self._stopped.is_set():
                return
            logger.info("Shutting down (grace %.1f s)", grace_seconds)
            waits = []
            if self.grpc_server is not None:
                waits.append(self.grpc_server.stop(grace_seconds))  # refuses new RPCs, lets running ones finish
            if self.rest_server is not None:
                self.rest_server.stop(grace_seconds)
            for event in waits:
                event.wait(grace_seconds + 1)
            self.core.stop(grace_seconds)
            self._stopped.set()

    def wait(self, timeout=None):
        """Blocks until `stop()` has finished; returns whether it has."""
        return self._stopped.wait(timeout)


def serve(options, grace_seconds=10.0, on_ready=None):
    """Runs `tfllm serve` until SIGTERM or SIGINT, then shuts down gracefully; returns the exit status.

    Args:
        options: the `ServerOptions`.
        grace_seconds: how long requests in flight may take to finish after the signal.
        on_ready: called with the started `ServerApp` (the CLI prints the addresses).
    """
    app = ServerApp(options)
    requested = threading.Event()

    def on_signal(number, frame):
        logger.info("Received %s", signal.Signals(number).name)
        requested.set()

    previous = {number: signal.signal(number, on_signal) for number in (signal.SIGTERM, signal.SIGINT)}
    try:
        app.start()
        if on_ready is not None:
            on_ready(app)
        while not requested.wait(0.5):
            pass
    finally:
        app.stop(grace_seconds)
        for number, handler in previous.items():
            signal.signal(number, handler)
    return 0
