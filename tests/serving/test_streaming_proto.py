"""The streaming service's messages mirror `serving/protos/tfllm_streaming.proto`; the service streams
pieces as they come over a real gRPC socket, maps the core's errors and stops the core on cancel."""

import pathlib
import re
import threading
from concurrent import futures

import grpc
import numpy as np
import pytest

from tfllm.serving import Client, ServingClientError
from tfllm.serving import streaming_proto as sp
from tfllm.serving.server.errors import ServingError, not_found
from tfllm.serving.server.streaming_service import add_streaming_service

PROTO = pathlib.Path(__file__).resolve().parents[2] / "serving" / "protos" / "tfllm_streaming.proto"
_FIELD = sp.descriptor_pb2.FieldDescriptorProto
_SCALARS = {"int32": _FIELD.TYPE_INT32, "bool": _FIELD.TYPE_BOOL, "float": _FIELD.TYPE_FLOAT,
            "string": _FIELD.TYPE_STRING}


def _parse_proto(text):
    """A minimal .proto reader for this file: package, imports, flat messages, one service."""
    text = re.sub(r"//[^\n]*", "", text)
    parsed = {
        "syntax": re.search(r'syntax\s*=\s*"(\w+)"\s*;', text).group(1),
        "package": re.search(r"package\s+([\w.]+)\s*;", text).group(1),
        "imports": re.findall(r'import\s+"([^"]+)"\s*;', text),
        "messages": {},
        "methods": {},
    }
    for name, body in re.findall(r"message\s+(\w+)\s*\{([^}]*)\}", text):
        fields = re.findall(r"(optional\s+|repeated\s+)?([\w.]+)\s+(\w+)\s*=\s*(\d+)\s*;", body)
        parsed["messages"][name] = [(label.strip(), kind, field, int(number)) for label, kind, field, number in fields]
    service = re.search(r"service\s+(\w+)\s*\{(.*?)\n\}", text, re.S)
    parsed["service"] = service.group(1)
    for rpc in re.finditer(r"rpc\s+(\w+)\s*\(\s*(stream\s+)?([\w.]+)\s*\)\s*returns\s*\(\s*(stream\s+)?([\w.]+)\s*\)",
                           service.group(2)):
        parsed["methods"][rpc.group(1)] = (bool(rpc.group(2)), rpc.group(3), bool(rpc.group(4)), rpc.group(5))
    return parsed


def _expected_field(label, kind, package):
    """(type, type_name, proto3_optional) a .proto field declaration means."""
    if kind in _SCALARS:
        return _SCALARS[kind], "", label == "optional"
    full = kind if "." in kind else f"{package}.{kind}"
    return _FIELD.TYPE_MESSAGE, f".{full}", label == "optional"


@pytest.mark.parametrize("source", ["python", "pool"])
def test_descriptor_mirrors_the_proto_file(source):
    parsed = _parse_proto(PROTO.read_text())
    if source == "python":
        proto = sp.file_descriptor_proto()
    else:  # what the descriptor pool holds, as the message classes see it
        proto = sp.descriptor_pb2.FileDescriptorProto()
        sp.DESCRIPTOR.CopyToProto(proto)
    assert (proto.syntax, proto.package) == (parsed["syntax"], parsed["package"])
    assert list(proto.dependency) == parsed["imports"]
    assert [m.name for m in proto.message_type] == list(parsed["messages"])
    for message in proto.message_type:
        declared = parsed["messages"][message.name]
        assert [(f.name, f.number) for f in message.field] == [(name, number) for _, _, name, number in declared]
        for field, (label, kind, _, _) in zip(message.field, declared):
            expected = _expected_field(label, kind, proto.package)
            assert (field.type, field.type_name, field.proto3_optional) == expected, field.name
            assert field.label == _FIELD.LABEL_OPTIONAL  # nothing repeated
    (service,) = proto.service
    assert f"{proto.package}.{service.name}" == f"{parsed['package']}.{parsed['service']}" == sp.SERVICE_NAME
    for method in service.method:
        client_stream, request, server_stream, response = parsed["methods"][method.name]
        assert (method.client_streaming, method.server_streaming) == (client_stream, server_stream)
        assert method.input_type == f".{proto.package}.{request}"
        assert method.output_type == f".{proto.package}.{response}"
    assert [m.name for m in service.method] == list(parsed["methods"])


def test_unset_parameters_stay_unset_and_zero_values_are_sent():
    request = sp.GenerateRequest(text="héllo", seed=0, do_sample=False, temperature=0.5)
    request.model_spec.name, request.model_spec.version.value = "tiny", 3
    again = sp.GenerateRequest.FromString(request.SerializeToString())
    assert sp.request_parameters(again) == {"do_sample": False, "temperature": 0.5, "seed": 0}
    assert (again.text, again.model_spec.name, again.model_spec.version.value) == ("héllo", "tiny", 3)
    assert sp.PARAMETERS == ("max_new_tokens", "do_sample", "temperature", "top_k", "top_p", "seed")


class FakeCore:
    """`stream_generate` as the serving core provides it: pieces, then the end; errors as ServingError."""

    def __init__(self):
        self.calls, self.closed = [], threading.Event()
        self.release = threading.Event()  # the second piece waits until the test saw the first

    def stream_generate(self, model_name, text, params, version, label):
        self.calls.append((model_name, text, params, version, label))
        if model_name == "missing":
            raise not_found(f"Servable not found for request: Latest({model_name})")
        return self._pieces(model_name)

    def _pieces(self, model_name):
        try:
            yield " one"
            if not self.release.wait(10):
                raise ServingError("DEADLINE_EXCEEDED", "the test never released the second piece")
            if model_name == "broken":
                raise ServingError("INVALID_ARGUMENT", "max_new_tokens must be >= 1")
            for piece in (" two", " three"):
                yield piece
            if model_name == "endless":
                while True:
                    yield " more"
                    self.release.wait(0.01)
        finally:
            self.closed.set()


@pytest.fixture
def streaming_server():
    core = FakeCore()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    add_streaming_service(server, core)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield core, f"127.0.0.1:{port}"
    server.stop(grace=None)


def test_pieces_arrive_one_by_one_and_join_to_the_result(streaming_server):
    core, target = streaming_server
    with Client(target, timeout=20) as client:
        pieces = client.stream("tiny", "Count:", version=2, max_new_tokens=np.int64(3), seed=0)
        assert next(pieces) == " one"  # arrived while the core still holds the rest back
        core.release.set()
        assert "".join(pieces) == " two three"
    assert core.calls == [("tiny", "Count:", {"max_new_tokens": 3, "seed": 0}, 2, None)]
    assert core.closed.wait(5)


def test_last_message_carries_done_and_generated_text(streaming_server):
    core, target = streaming_server
    core.release.set()
    channel = grpc.insecure_channel(target)
    call = channel.unary_stream(sp.FULL_METHOD, request_serializer=sp.GenerateRequest.SerializeToString,
                                response_deserializer=sp.GenerateResponse.FromString)
    request = sp.GenerateRequest(text="Count:")
    request.model_spec.name, request.model_spec.version_label = "tiny", "stable"
    responses = list(call(request, timeout=20))
    channel.close()
    assert [(r.text, r.done) for r in responses] == [(" one", False), (" two", False), (" three", False), ("", True)]
    assert responses[-1].generated_text == "Count: one two three"
    assert core.calls[0][3:] == (None, "stable")


def test_errors_carry_the_core_status(streaming_server):
    core, target = streaming_server
    with Client(target, timeout=20, retries=0) as client:
        with pytest.raises(ServingClientError) as before_first_piece:
            client.stream("missing", "x")
        assert before_first_piece.value.code == "NOT_FOUND"
        assert before_first_piece.value.message == "Servable not found for request: Latest(missing)"
        pieces = client.stream("broken", "x")
        assert next(pieces) == " one"
        core.release.set()
        with pytest.raises(ServingClientError) as midway:
            list(pieces)
        assert (midway.value.code, midway.value.message) == ("INVALID_ARGUMENT", "max_new_tokens must be >= 1")


def test_a_consumer_that_stops_early_stops_the_core(streaming_server):
    core, target = streaming_server
    core.release.set()
    with Client(target, timeout=20) as client:
        pieces = client.stream("endless", "x")
        assert [next(pieces) for _ in range(5)] == [" one", " two", " three", " more", " more"]
        pieces.close()
    assert core.closed.wait(10)
