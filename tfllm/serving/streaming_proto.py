"""Message classes of `serving/protos/tfllm_streaming.proto`, built at run time.

TF Serving has no streaming RPC, so `tfllm serve` adds a small server-streaming service of its own,
`tfllm.serving.TextGenerationStream/Generate`. There is no protoc step (grpcio-tools pins an older
protobuf): the file's `FileDescriptorProto` is written here in Python, field for field as in the
.proto file (a test compares the two), added to the default descriptor pool and turned into
message classes.

Example:

```python
from tfllm.serving import streaming_proto as sp

request = sp.GenerateRequest(text="The for statement", max_new_tokens=8)
request.model_spec.name = "quickstart"
wire = request.SerializeToString()           # what the gRPC call sends
assert sp.GenerateRequest.FromString(wire).HasField("max_new_tokens")
```
"""

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from tensorflow_serving.apis import model_pb2

from tfllm.export import signatures as sig

PACKAGE = "tfllm.serving"
FILE_NAME = "tfllm_streaming.proto"  # as protoc names it with `-I serving/protos`
SERVICE_NAME = f"{PACKAGE}.TextGenerationStream"
METHOD_NAME = "Generate"
FULL_METHOD = f"/{SERVICE_NAME}/{METHOD_NAME}"  # what a gRPC channel calls

_FIELD = descriptor_pb2.FieldDescriptorProto
_SCALAR_TYPES = {"int32": _FIELD.TYPE_INT32, "bool": _FIELD.TYPE_BOOL, "float32": _FIELD.TYPE_FLOAT}
# The generation parameters, in field order 3, 4, ...: names, types and defaults from the
# serving_default signature, so a request means what the same Predict request means.
PARAMETERS = tuple(tensor.name for tensor in sig.generation_inputs(0))


def _field(name, number, field_type, type_name=None, oneof_index=None):
    field = _FIELD(name=name, number=number, label=_FIELD.LABEL_OPTIONAL, type=field_type)
    if type_name:
        field.type_name = type_name
    if oneof_index is not None:  # proto3 `optional`: presence through a synthetic oneof
        field.proto3_optional = True
        field.oneof_index = oneof_index
    return field


def _request_message():
    message = descriptor_pb2.DescriptorProto(name="GenerateRequest")
    message.field.append(_field("model_spec", 1, _FIELD.TYPE_MESSAGE, ".tensorflow.serving.ModelSpec"))
    message.field.append(_field(sig.TEXT, 2, _FIELD.TYPE_STRING))
    for index, tensor in enumerate(sig.generation_inputs(0)):
        message.oneof_decl.add(name=f"_{tensor.name}")
        message.field.append(_field(tensor.name, 3 + index, _SCALAR_TYPES[tensor.dtype], oneof_index=index))
    return message


def _response_message():
    message = descriptor_pb2.DescriptorProto(name="GenerateResponse")
    message.field.append(_field("text", 1, _FIELD.TYPE_STRING))
    message.field.append(_field("done", 2, _FIELD.TYPE_BOOL))
    message.field.append(_field(sig.GENERATED_TEXT, 3, _FIELD.TYPE_STRING))
    return message


def file_descriptor_proto():
    """The `FileDescriptorProto` of `serving/protos/tfllm_streaming.proto`."""
    proto = descriptor_pb2.FileDescriptorProto(
        name=FILE_NAME, package=PACKAGE, syntax="proto3", dependency=[model_pb2.DESCRIPTOR.name]
    )
    proto.message_type.extend([_request_message(), _response_message()])
    service = proto.service.add(name=SERVICE_NAME.rsplit(".", 1)[1])
    service.method.add(
        name=METHOD_NAME, input_type=f".{PACKAGE}.GenerateRequest", output_type=f".{PACKAGE}.GenerateResponse",
        server_streaming=True,
    )
    return proto


def _file_descriptor():
    pool = descriptor_pool.Default()  # holds tensorflow/serving's model.proto once model_pb2 is imported
    try:
        return pool.FindFileByName(FILE_NAME)
    except KeyError:
        pool.AddSerializedFile(file_descriptor_proto().SerializeToString())
        return pool.FindFileByName(FILE_NAME)


DESCRIPTOR = _file_descriptor()
GenerateRequest = message_factory.GetMessageClass(DESCRIPTOR.message_types_by_name["GenerateRequest"])
GenerateResponse = message_factory.GetMessageClass(DESCRIPTOR.message_types_by_name["GenerateResponse"])


def request_parameters(request):
    """`{name: value}` of the generation parameters a `GenerateRequest` sets (unset ones are left out)."""
    return {name: getattr(request, name) for name in PARAMETERS if request.HasField(name)}
