"""TF Serving's gRPC services (`PredictionService`, `ModelService`) over a `ServingCore`."""

import concurrent.futures
import contextlib
import logging
import os
import time

import grpc
from tensorflow_serving.apis import (
    model_management_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from tfllm.serving.server.cancellation import Cancellation
from tfllm.serving.server.errors import ServingError, invalid_argument
from tfllm.serving.server.validation import check_tensor_proto

logger = logging.getLogger(__name__)

SIGNATURE_DEF = "signature_def"
_NO_DEADLINE = 365 * 24 * 3600.0


def _version_choice(model_spec):
    """`(version, label)` of a ModelSpec's `version_choice` oneof."""
    choice = model_spec.WhichOneof("version_choice")
    if choice == "version":
        return model_spec.version.value, None
    if choice == "version_label":
        return None, model_spec.version_label
    return None, None


class _Calls:
    """Turns `ServingError`s into gRPC statuses and records each call in the metrics."""

    def __init__(self, core):
        self.core = core

    @contextlib.contextmanager
    def call(self, context, api, model_name):
        start, outcome = time.monotonic(), {"code": "OK", "version": None}
        try:
            yield outcome
        except ServingError as error:
            outcome["code"] = error.code
            context.abort(error.grpc_code, error.message)
        except Exception as error:  # noqa: BLE001  (the call fails, the server stays up)
            logger.exception("%s failed", api)
            outcome["code"] = "INTERNAL"
            context.abort(grpc.StatusCode.INTERNAL, f"{type(error).__name__}: {error}")
        finally:
            metrics = getattr(self.core, "metrics", None)
            if metrics is not None:
                metrics.record_request(model_name, outcome["version"], api, outcome["code"], time.monotonic() - start,
                                       entrypoint="GRPC")

    def deadline(self, context):
        remaining = context.time_remaining()  # enormous when the client set no deadline
        return None if remaining is None or remaining > _NO_DEADLINE else time.monotonic() + remaining


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer, _Calls):
    """Predict and GetModelMetadata; Classify, Regress and MultiInference answer UNIMPLEMENTED."""

    def Predict(self, request, context):  # noqa: N802  (gRPC method name)
        import tensorflow as tf

        spec = request.model_spec
        with self.call(context, "predict", spec.name) as outcome:
            version, label = _version_choice(spec)
            inputs = {}
            for name, proto in request.inputs.items():
                check_tensor_proto(name, proto, self.core.options.max_request_bytes)
                try:
                    inputs[name] = tf.make_ndarray(proto)
                except (TypeError, ValueError) as error:
                    raise invalid_argument(f"Input {name} is not a valid TensorProto: {error}") from error
            cancellation = Cancellation()
            context.add_callback(cancellation.cancel)  # the call ended: the client cancelled or went away
            resolved, outputs = self.core.predict(
                spec.name, inputs, signature_name=spec.signature_name or None, version=version, version_label=label,
                output_filter=list(request.output_filter) or None, deadline=self.deadline(context), strict_dtypes=True,
                cancellation=cancellation,
            )
            outcome["version"] = resolved
            response = predict_pb2.PredictResponse()
            response.model_spec.name = spec.name
            response.model_spec.version.value = resolved
            response.model_spec.signature_name = spec.signature_name or "serving_default"
            for name, value in outputs.items():
                response.outputs[name].CopyFrom(tf.make_tensor_proto(value))
            return response

    def GetModelMetadata(self, request, context):  # noqa: N802
        spec = request.model_spec
        with self.call(context, "GetModelMetadata", spec.name) as outcome:
            if not request.HasField("model_spec"):
                raise invalid_argument("Missing ModelSpec")
            if not request.metadata_field:
                raise invalid_argument("GetModelMetadataRequest must specify at least one metadata_field")
            for field in request.metadata_field:
                if field != SIGNATURE_DEF:
                    raise invalid_argument(f"Metadata field {field} is not supported")
            version, label = _version_choice(spec)
            response = self.core.metadata(spec.name, version, label)
            outcome["version"] = response.model_spec.version.value
            return response

    def Classify(self, request, context):  # noqa: N802
        return self._unimplemented(context, "Classify", request.model_spec.name)

    def Regress(self, request, context):  # noqa: N802
        return self._unimplemented(context, "Regress", request.model_spec.name)

    def MultiInference(self, request, context):  # noqa: N802
        name = request.tasks[0].model_spec.name if request.tasks else ""
        return self._unimplemented(context, "MultiInference", name)

    def _unimplemented(self, context, api, model_name):
        with self.call(context, api, model_name):
            raise ServingError("UNIMPLEMENTED", f"tfllm serve does not implement {api}; use Predict with a signature "
                                                "(Classify/Regress need tf.Example signatures, which tfllm does not export).")


class ModelService(model_service_pb2_grpc.ModelServiceServicer, _Calls):
    """GetModelStatus and HandleReloadConfigRequest."""

    def GetModelStatus(self, request, context):  # noqa: N802
        spec = request.model_spec
        with self.call(context, "GetModelStatus", spec.name):
            if not request.HasField("model_spec"):
                raise invalid_argument("Missing ModelSpec")
            version, label = _version_choice(spec)
            return self.core.status(spec.name, version, label)

    def HandleReloadConfigRequest(self, request, context):  # noqa: N802
        with self.call(context, "HandleReloadConfigRequest", ""):
            if request.config.WhichOneof("config") != "model_config_list":
                raise invalid_argument("ServerModelConfig type not supported by HandleReloadConfigRequest. Only "
                                       "ModelConfigList is currently supported")
            self.core.reload_config(request.config)
            return model_management_pb2.ReloadConfigResponse()


def build_grpc_server(core, options, extensions=()):
    """A `grpc.Server` bound to `options.grpc_bind_host:options.port`, not started.

    Requests larger than `options.max_request_bytes` are refused by gRPC itself
    (RESOURCE_EXHAUSTED); responses are not limited (TF Serving allows up to 2 GiB).

    Args:
        core: the `ServingCore`.
        options: the `ServerOptions`.
        extensions: functions `f(grpc_server, core)` that register more services (the streaming one).

    Returns:
        `(server, port)`: the server and the port it bound.

    Raises:
        OSError: the address cannot be bound.
    """
    threads = options.grpc_max_threads or max(16, 4 * (os.cpu_count() or 1))
    server = grpc.server(
        concurrent.futures.ThreadPoolExecutor(max_workers=threads, thread_name_prefix="grpc"),
        options=[
            ("grpc.max_receive_message_length", options.max_request_bytes),
            ("grpc.max_send_message_length", -1),
            ("grpc.so_reuseport", 0),
        ],
    )
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(PredictionService(core), server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelService(core), server)
    for extension in extensions:
        extension(server, core)
    host = options.grpc_bind_host
    address = f"[{host}]:{options.port}" if ":" in host else f"{host}:{options.port}"
    try:
        port = server.add_insecure_port(address)
    except RuntimeError as error:
        raise OSError(f"Could not bind the gRPC server to {address}: {error}") from error
    if not port:
        raise OSError(f"Could not bind the gRPC server to {address}")
    return server, port

