"""`tfllm.serving.TextGenerationStream`: streamed generation over gRPC, next to TF Serving's services.

TF Serving has no streaming RPC; this one (`serving/protos/tfllm_streaming.proto`) sends the
continuation of one prompt piece by piece, then a last message with `done` and `generated_text`.
It is registered with grpc's generic handlers, so no generated `_pb2_grpc` module is needed.
"""

import logging

import grpc

from tfllm.serving import streaming_proto as sp
from tfllm.serving.server.errors import ServingError

logger = logging.getLogger(__name__)


def add_streaming_service(grpc_server, core):
    """Registers `TextGenerationStream/Generate` on a `grpc.Server` (before `start()`).

    Args:
        grpc_server: the server that also carries PredictionService and ModelService.
        core: an object with `stream_generate(model_name, text, params, version, version_label)` returning
            an iterator of text pieces (str), or of dicts `{"text": piece}` whose last may carry
            `"generated_text"`; it raises `ServingError` for requests it refuses.
    """
    handler = grpc.unary_stream_rpc_method_handler(
        _Generate(core), request_deserializer=sp.GenerateRequest.FromString,
        response_serializer=sp.GenerateResponse.SerializeToString,
    )
    service = grpc.method_handlers_generic_handler(sp.SERVICE_NAME, {sp.METHOD_NAME: handler})
    grpc_server.add_generic_rpc_handlers((service,))


class _Generate:
    """The handler of one `Generate` call: a generator of `GenerateResponse`s."""

    def __init__(self, core):
        self.core = core

    def __call__(self, request, context):
        spec = request.model_spec
        version = spec.version.value if spec.HasField("version") else None
        label = spec.version_label or None
        pieces, generated = [], None
        try:
            stream = self.core.stream_generate(spec.name, request.text, sp.request_parameters(request), version, label)
        except ServingError as error:
            context.abort(error.grpc_code, error.message)
        try:
            for item in stream:
                piece, generated = _piece(item, generated)
                if piece:
                    pieces.append(piece)
                    yield sp.GenerateResponse(text=piece)
        except ServingError as error:
            context.abort(error.grpc_code, error.message)
        except Exception as error:  # noqa: BLE001  (the call fails, the server stays up)
            logger.exception("Streamed generation for %r failed", spec.name)
            context.abort(grpc.StatusCode.INTERNAL, f"{type(error).__name__}: {error}")
        finally:
            close = getattr(stream, "close", None)
            if close:  # a cancelled call: let the core stop generating and free its batch slot
                close()
        if generated is None:
            generated = request.text + "".join(pieces)
        yield sp.GenerateResponse(done=True, generated_text=generated)


def _piece(item, generated):
    if isinstance(item, dict):
        return item.get("text", ""), item.get("generated_text", generated)
    return (item.decode("utf-8") if isinstance(item, bytes) else str(item)), generated
