"""`ServerOptions`: the flags of `tfllm serve`, named as `tensorflow_model_server` names them."""

import argparse
import dataclasses

from tfllm.errors import invalid_argument

MiB = 1 << 20


@dataclasses.dataclass
class ServerOptions:
    """Everything `tfllm serve` is started with.

    The fields that TF Serving has carry its flag names and defaults (`--port 8500`, REST off
    unless `--rest_api_port` is set, one poll of the base path a second, batching off). TF Serving
    binds every interface and has no flag for it; `grpc_bind_host` and `rest_api_host` are ours,
    with the same default. The last fields are limits TF Serving does not have.

    Attributes:
        port: gRPC port; 0 turns gRPC off, as in TF Serving.
        grpc_bind_host: address the gRPC server binds ("127.0.0.1" for loopback only).
        rest_api_port: REST port; 0 turns REST off. Must differ from `port`.
        rest_api_host: address the REST server binds.
        rest_api_num_threads: REST worker threads; 0 picks a number from the CPU count.
        rest_api_timeout_in_ms: REST request timeout.
        rest_api_read_timeout_in_ms: how long a REST request's headers and body may take to arrive,
            from its first byte (a slower client is answered 408 and disconnected).
        model_name: name of the single model (ignored with `model_config_file`).
        model_base_path: folder whose numeric subfolders are the model's versions.
        model_config_file: text-format `ModelServerConfig` serving several models.
        model_config_file_poll_wait_seconds: re-read the config file this often; 0 reads it once.
        file_system_poll_wait_seconds: look for new versions this often; 0 looks once.
        enable_batching: batch concurrent requests to the same signature.
        batching_parameters_file: text-format `BatchingParameters`.
        monitoring_config_file: text-format `MonitoringConfig` (Prometheus), read by the REST side.
        enable_model_warmup: replay `assets.extra/tf_serving_warmup_requests` before serving a version.
        num_request_iterations_for_warmup: how many times each warmup record is replayed.
        allow_version_labels_for_unavailable_models: let a label name a version that is not loaded.
        max_num_load_retries: failed loads of a version are retried this many times (one per poll).
        grpc_max_threads: gRPC worker threads; 0 picks a number from the CPU count.
        max_request_bytes: largest request accepted (gRPC message or REST body).
        max_new_tokens_cap: largest `max_new_tokens` a request may ask for.
        request_timeout_seconds: deadline of a request that brings none.
    """

    port: int = 8500
    grpc_bind_host: str = "0.0.0.0"
    rest_api_port: int = 0
    rest_api_host: str = "0.0.0.0"
    rest_api_num_threads: int = 0
    rest_api_timeout_in_ms: int = 30000
    rest_api_read_timeout_in_ms: int = 10000
    model_name: str = "default"
    model_base_path: str = ""
    model_config_file: str = ""
    model_config_file_poll_wait_seconds: float = 0.0
    file_system_poll_wait_seconds: float = 1.0
    enable_batching: bool = False
    batching_parameters_file: str = ""
    monitoring_config_file: str = ""
    enable_model_warmup: bool = True
    num_request_iterations_for_warmup: int = 1
    allow_version_labels_for_unavailable_models: bool = False
    max_num_load_retries: int = 5
    grpc_max_threads: int = 0
    max_request_bytes: int = 64 * MiB
    max_new_tokens_cap: int = 1024
    request_timeout_seconds: float = 60.0

    def __post_init__(self):
        self.validate()

    def validate(self):
        """Checks the options; raises `ValueError` with the flag's name."""
        for name in ("port", "rest_api_port"):
            value = getattr(self, name)
            if not 0 <= value < 65536:
                raise invalid_argument(name, "a port in [0, 65535]", value)
        if self.rest_api_port and self.rest_api_port == self.port:
            raise invalid_argument("rest_api_port", "a port different from --port (as TF Serving requires)",
                                   self.rest_api_port)
        positive = ("rest_api_read_timeout_in_ms", "max_request_bytes", "max_new_tokens_cap", "request_timeout_seconds",
                    "num_request_iterations_for_warmup")
        for name in positive:
            if getattr(self, name) <= 0:
                raise invalid_argument(name, "a positive number", getattr(self, name))
        for name in ("max_num_load_retries", "grpc_max_threads", "rest_api_num_threads"):
            if getattr(self, name) < 0:
                raise invalid_argument(name, "a number >= 0", getattr(self, name))

    def check_models_given(self):
        """Raises `ValueError` unless a model base path or a model config file is set."""
        if not self.model_base_path and not self.model_config_file:
            raise invalid_argument("model_base_path", "a folder of numeric version folders (or --model_config_file)",
                                   self.model_base_path)

    @classmethod
    def from_args(cls, namespace):
        """Options from an `argparse.Namespace` made by a parser that `add_arguments` filled."""
        values = {f.name: getattr(namespace, f.name) for f in dataclasses.fields(cls) if hasattr(namespace, f.name)}
        return cls(**{k: v for k, v in values.items() if v is not None})

    @classmethod
    def add_arguments(cls, parser):
        """Adds the flags, TF Serving's spelling (`--rest_api_port`, `--enable_batching[=true|false]`)."""
        for field in dataclasses.fields(cls):
            default = field.default
            flag = f"--{field.name}"
            help_text = _HELP.get(field.name, "")
            if isinstance(default, bool):
                parser.add_argument(flag, type=_boolean, nargs="?", const=True, default=None,
                                    metavar="true|false", help=f"{help_text} (default: {str(default).lower()})")
            else:
                kind = type(default)
                parser.add_argument(flag, type=kind, default=None, help=f"{help_text} (default: {default!r})")
        return parser


def _boolean(value):
    lowered = str(value).strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"Expected true or false. Received: {value!r}")


_HELP = {
    "port": "gRPC port (0: no gRPC)",
    "grpc_bind_host": "address the gRPC server listens on",
    "rest_api_port": "REST port (0: no REST API); must differ from --port",
    "rest_api_host": "address the REST server listens on",
    "rest_api_num_threads": "REST threads (0: from the CPU count)",
    "rest_api_timeout_in_ms": "timeout of REST calls",
    "rest_api_read_timeout_in_ms": "time a REST request's headers and body may take to arrive; slower: 408 (tfllm)",
    "model_name": "name of the model (ignored with --model_config_file)",
    "model_base_path": "folder of numeric version folders, e.g. saved_models/NAME",
    "model_config_file": "text-format ModelServerConfig (several models, version policies, labels)",
    "model_config_file_poll_wait_seconds": "re-read --model_config_file this often (0: once)",
    "file_system_poll_wait_seconds": "look for new versions this often (0: once)",
    "enable_batching": "batch concurrent requests to the same signature",
    "batching_parameters_file": "text-format BatchingParameters",
    "monitoring_config_file": "text-format MonitoringConfig (Prometheus metrics)",
    "enable_model_warmup": "replay assets.extra/tf_serving_warmup_requests before serving a version",
    "num_request_iterations_for_warmup": "replays of each warmup record",
    "allow_version_labels_for_unavailable_models": "let a version label name a version that is not loaded",
    "max_num_load_retries": "retries of a failed version load",
    "grpc_max_threads": "gRPC threads (0: from the CPU count)",
    "max_request_bytes": "largest request accepted, in bytes (tfllm)",
    "max_new_tokens_cap": "largest max_new_tokens a request may ask for (tfllm)",
    "request_timeout_seconds": "deadline of a request that sets none (tfllm)",
}
