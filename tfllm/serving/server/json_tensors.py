"""TF Serving's JSON encoding of tensors (`tensorflow_serving/util/json_tensor.cc`), in Python.

A predict request is `{"signature_name": ..., "instances": [...]}` (row format: one entry per
example, all inputs batched along dimension 0) or `{"inputs": ...}` (columnar format: each input as
one tensor). The answer mirrors the request: `{"predictions": [...]}` or `{"outputs": ...}`; with a
single output the values are given bare, with several each row (or the outputs) is an object.
Strings that are binary travel as `{"b64": "..."}`. Error texts are TF Serving's, word for word.

One deliberate extension: an input that the SignatureDef gives a default for (`max_new_tokens`,
`temperature`, ...) may be left out, in both formats; a signature with one input *without* a default
then also accepts bare values (`{"instances": ["a prompt"]}`), as a single-input signature does.
"""

import base64
import binascii
import json
import math
import re

import numpy as np

from tfllm.serving.server.errors import ServingError, invalid_argument

ROW = "row"
COLUMNAR = "columnar"
_BYTES_SUFFIX = "_bytes"  # TF Serving writes outputs named `*_bytes` as {"b64": ...}
MAX_RANK = 254  # TensorFlow's TensorShape::MaxDimensions
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")  # how a lone surrogate can get into a UTF-8 body

# DataType name -> (DataTypeString, numpy dtype). DT_HALF and friends cannot be sent as JSON.
_DTYPES = {
    "DT_FLOAT": ("float", np.float32), "DT_DOUBLE": ("double", np.float64), "DT_INT32": ("int32", np.int32),
    "DT_INT16": ("int16", np.int16), "DT_INT8": ("int8", np.int8), "DT_UINT8": ("uint8", np.uint8),
    "DT_STRING": ("string", object), "DT_INT64": ("int64", np.int64), "DT_BOOL": ("bool", np.bool_),
    "DT_UINT32": ("uint32", np.uint32), "DT_UINT64": ("uint64", np.uint64),
}
_INT_RANGES = {np.int32: (-2**31, 2**31 - 1), np.int16: (-2**15, 2**15 - 1), np.int8: (-128, 127),
               np.uint8: (0, 255), np.int64: (-2**63, 2**63 - 1), np.uint32: (0, 2**32 - 1),
               np.uint64: (0, 2**64 - 1)}
# rapidjson's GetParseError_En texts for what Python's json module reports.
_PARSE_ERRORS = {
    "Expecting value": "Invalid value.",
    "Expecting property name enclosed in double quotes": "Missing a name for object member.",
    "Expecting ':' delimiter": "Missing a colon after a name of object member.",
    "Extra data": "The document root must not be followed by other values.",
    "Unterminated string starting at": "Missing a closing quotation mark in string.",
    "Invalid \\escape": "Invalid escape character in string.",
    "Invalid \\uXXXX escape": "Incorrect hex digit after \\u escape in string.",
    "Invalid control character at": "Invalid encoding in string.",
}


def parse_json(body):
    """Parses a request body as TF Serving does: a JSON object, or INVALID_ARGUMENT in its words."""
    if not body:
        raise invalid_argument("JSON Parse error: The document is empty")
    try:
        doc = json.loads(body.decode("utf-8") if isinstance(body, bytes) else body)
    except UnicodeDecodeError as error:
        raise invalid_argument(f"JSON Parse error: Invalid encoding in string. at offset: {error.start}") from error
    except json.JSONDecodeError as error:
        if error.msg == "Expecting ',' delimiter":
            # Python does not say which container is open; rapidjson does.
            closing = "}" if _open_container(error.doc, error.pos) == "{" else "]"
            text = f"Missing a comma or '{closing}' after an {'object member' if closing == '}' else 'array element'}."
        else:
            text = next((rapid for python, rapid in _PARSE_ERRORS.items() if error.msg.startswith(python)), error.msg)
        raise invalid_argument(f"JSON Parse error: {text} at offset: {error.pos}") from error
    except RecursionError as error:
        raise invalid_argument("JSON Parse error: Terminate parsing due to Handler error. at offset: 0") from error
    if isinstance(body, bytes) and _SURROGATE_ESCAPE.search(body):
        try:
            json.dumps(doc, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError as error:
            raise invalid_argument("JSON Parse error: The surrogate pair in string is invalid.") from error
    if not isinstance(doc, dict):
        raise invalid_argument(f"JSON Value: {value_text(doc)} Is not object")
    return doc


def signature_name(doc):
    """The request's optional `signature_name` ("" when absent)."""
    name = doc.get("signature_name", "")
    if not isinstance(name, str):
        raise invalid_argument(
            f"JSON Value: {value_text(doc)} not formatted correctly. 'signature_name' key must be a string value."
        )
    return name


def predict_inputs(doc, input_dtypes, optional=()):
    """Reads the tensors of a predict request.

    Args:
        doc: the parsed request (see `parse_json`).
        input_dtypes: `{input name: DataType name}` of the signature, e.g. `{"text": "DT_STRING"}`.
        optional: names of inputs the signature has defaults for; they may be left out.

    Returns:
        `(inputs, format)`: `{name: numpy array}` (strings as object arrays of bytes) and ROW or COLUMNAR.

    Raises:
        ServingError: INVALID_ARGUMENT with TF Serving's message for any malformed request.
    """
    if not input_dtypes:
        raise invalid_argument(f"Failed to get input map for signature: {doc.get('signature_name') or 'DEFAULT'}")
    has_instances, has_inputs = "instances" in doc, "inputs" in doc
    if has_instances and has_inputs:
        raise invalid_argument(
            f"JSON Value: {value_text(doc)} Not formatted correctly expecting only one of 'inputs' or 'instances' keys to exist "
        )
    required = [name for name in sorted(input_dtypes) if name not in optional]
    single = next(iter(input_dtypes)) if len(input_dtypes) == 1 else (required[0] if len(required) == 1 else None)
    if has_instances:
        instances = doc["instances"]
        if not isinstance(instances, list):
            raise invalid_argument(f"JSON Value: {value_text(doc)} Excepting 'instances' to be an list/array")
        if not instances:
            raise invalid_argument(f"JSON Value: {value_text(doc)} No values in 'instances' array")
        return _rows(instances, input_dtypes, required, single), ROW
    if has_inputs:
        return _columns(doc["inputs"], input_dtypes, required, single), COLUMNAR
    raise invalid_argument("Missing 'inputs' or 'instances' key")


def _is_b64(value):
    return isinstance(value, dict) and len(value) == 1 and isinstance(value.get("b64"), str)


def _is_object(value):
    return isinstance(value, dict) and not _is_b64(value)


def _rows(instances, input_dtypes, required, single):
    objects = _is_object(instances[0])
    if not objects and single is None:
        raise invalid_argument(
            "instances is a plain list, but expecting list of objects as multiple input tensors required as per "
            "tensorinfo_map"
        )
    columns, shapes, keys = {}, {}, None
    for index, element in enumerate(instances):
        if objects != _is_object(element):
            kind = "object but got list" if objects else "value/list but got object"
            raise invalid_argument(f"Expecting {kind} at item {index} of input list")
        items = element.items() if objects else [(single, element)]
        for name, value in items:
            try:
                values, shape = _tensor(value, name, input_dtypes)
                if name not in shapes:
                    shapes[name] = shape
                elif int(np.prod(shapes[name])) != int(np.prod(shape)):
                    raise invalid_argument(f"Expecting tensor size: {int(np.prod(shapes[name]))} but got: {int(np.prod(shape))}")
                elif shapes[name] != shape:
                    raise invalid_argument(f"Expecting shape {_shape_text(shapes[name])} but got: {_shape_text(shape)}")
            except ServingError as error:
                where = f" key: {name}" if objects else ""
                raise invalid_argument(
                    f"Failed to process element: {index}{where} of 'instances' list. Error: {error.code}: {error.message}"
                ) from error
            columns.setdefault(name, []).extend(values)
        if objects:
            expected = keys if keys is not None else sorted(set(element) | set(required))
            if sorted(element) != expected:
                raise invalid_argument(
                    f"Failed to process element: {index} of 'instances' list. JSON object: {value_text(element)} "
                    f"keys must be equal to: {','.join(expected)}"
                )
            keys = expected
    return {name: _array(values, (len(instances), *shapes[name]), input_dtypes[name]) for name, values in columns.items()}


def _columns(value, input_dtypes, required, single):
    if not isinstance(value, dict) or _is_b64(value):
        if single is None:
            raise invalid_argument(
                "inputs is a plain value/list, but expecting an object as multiple input tensors required as per "
                "tensorinfo_map"
            )
        value = {single: value}
    inputs = {}
    for name in sorted(input_dtypes):
        if name not in value:
            if name in required:
                raise invalid_argument(f"Missing named input: {name} in 'inputs' object.")
            continue
        values, shape = _tensor(value[name], name, input_dtypes)
        inputs[name] = _array(values, shape, input_dtypes[name])
    return inputs


def _tensor(value, name, input_dtypes):
    """FillTensorProto: the flat values and the dense shape of one JSON value."""
    if name not in input_dtypes:
        raise invalid_argument(f"JSON object: does not have named input: {name}")
    dtype = input_dtypes[name]
    shape = []
    probe = value
    while isinstance(probe, list):
        shape.append(len(probe))
        if len(shape) > MAX_RANK:
            raise invalid_argument(f"Input {name} is nested deeper than the largest tensor rank ({MAX_RANK})")
        if not probe:
            break
        probe = probe[0]
    values = []
    _fill(value, 0, shape, dtype, values)
    return values, tuple(shape)


def _fill(value, level, shape, dtype, out):
    rank = len(shape)
    if not isinstance(value, list):
        if level != rank:
            raise invalid_argument(
                f"JSON Value: {value_text(value)} found at incorrect level: {level + 1} in the JSON DOM. "
                f"Expected at level: {rank}"
            )
        out.append(_b64_decode(value) if isinstance(value, dict) and dtype == "DT_STRING" else _scalar(value, dtype))
        return
    if level >= rank:
        raise invalid_argument(f"Encountered list at unexpected level: {level} expected < {rank}")
    if len(value) != shape[level]:
        raise invalid_argument(
            f"Encountered list at unexpected size: {len(value)} at level: {level} expected size: {shape[level]}"
        )
    for item in value:
        _fill(item, level + 1, shape, dtype, out)


def _b64_decode(value):
    if not _is_b64(value):
        raise invalid_argument(f"JSON Value: {value_text(value)} not formatted correctly for base64 data")
    text = value["b64"]
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError) as error:
        raise invalid_argument("Unable to base64 decode") from error


def _scalar(value, dtype):
    """AddValueToTensor: one JSON leaf checked against the input's dtype."""
    if dtype not in _DTYPES:
        raise ServingError("UNIMPLEMENTED", f"Conversion of JSON Value: {value_text(value)} to type: {_dtype_name(dtype)}")
    name, numpy_dtype = _DTYPES[dtype]
    is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if numpy_dtype in (np.float32, np.float64):
        if not is_number:
            raise _type_error(value, name)
        bits = 24 if numpy_dtype is np.float32 else 53
        limit = float(np.finfo(numpy_dtype).max)
        lossless = (abs(value) <= 2**bits - 1 if isinstance(value, int)
                    else not math.isfinite(value) or -limit <= value <= limit)
        if not lossless:
            raise invalid_argument(f"Cannot convert JSON value: {value_text(value)} to {name} without loss of precision.")
        return value
    if numpy_dtype is object:
        if not isinstance(value, str):
            raise _type_error(value, name)
        return value.encode("utf-8")
    if numpy_dtype is np.bool_:
        if not isinstance(value, bool):
            raise _type_error(value, name)
        return value
    low, high = _INT_RANGES[numpy_dtype]
    if not (isinstance(value, int) and not isinstance(value, bool) and low <= value <= high):
        raise _type_error(value, name)
    return value


def _type_error(value, dtype_name):
    return invalid_argument(
        f"JSON Value: {value_text(value)} Type: {_json_type(value)} is not of expected type: {dtype_name}"
    )


def _array(values, shape, dtype):
    numpy_dtype = _DTYPES[dtype][1]
    if numpy_dtype is object:
        array = np.empty(len(values), dtype=object)
        array[:] = values
        return array.reshape(shape)
    return np.array(values, dtype=numpy_dtype).reshape(shape)


def _dtype_name(dtype):
    return dtype[3:].lower() if dtype.startswith("DT_") else dtype


def _json_type(value):
    if value is None:
        return "Null"
    if isinstance(value, bool):
        return "True" if value else "False"
    return {dict: "Object", list: "Array", str: "String"}.get(type(value), "Number")


def _shape_text(shape):
    return "[" + ",".join(str(dim) for dim in shape) + "]"


def _open_container(text, position):
    """The bracket left open at `position` of a JSON text ("{" or "[")."""
    stack, in_string, escaped = [], False, False
    for char in text[:position]:
        if in_string:
            in_string, escaped = (char != '"' or escaped), (char == "\\" and not escaped)
        elif char == '"':
            in_string = True
        elif char in "[{":
            stack.append(char)
        elif char in "]}" and stack:
            stack.pop()
    return stack[-1] if stack else "["


def value_text(value):
    """A JSON value as TF Serving prints it in error messages (rapidjson's PrettyWriter, 4 spaces)."""
    return json.dumps(value, indent=4, ensure_ascii=False)


# === Responses ===


def predict_response(outputs, request_format):
    """`MakeJsonFromTensors`: the JSON text answering a predict request in its own format.

    Args:
        outputs: `{output name: numpy array}`; strings as bytes (or str).
        request_format: ROW or COLUMNAR, as `predict_inputs` returned it.
    """
    if not outputs:
        raise invalid_argument("Cannot convert empty tensor map to JSON")
    names = sorted(outputs)
    arrays = {name: np.asarray(outputs[name]) for name in names}

    def text(name, value):
        return _tensor_text(value, arrays[name].dtype, name)

    if request_format == COLUMNAR:
        if len(names) == 1:
            body = text(names[0], arrays[names[0]])
        else:
            body = "{" + ", ".join(f"{json.dumps(n)}: {text(n, arrays[n])}" for n in names) + "}"
        return '{\n    "outputs": ' + body + "\n}"
    batch = None
    for name in names:
        if arrays[name].ndim == 0:
            raise invalid_argument(f"Tensor name: {name} has no shape information ")
        if batch is not None and arrays[name].shape[0] != batch:
            raise invalid_argument(
                f"Tensor name: {name} has inconsistent batch size: {arrays[name].shape[0]} expecting: {batch}"
            )
        batch = arrays[name].shape[0]
    rows = []
    for row in range(batch):
        if len(names) == 1:
            rows.append(text(names[0], arrays[names[0]][row]))
        else:
            rows.append("{" + ", ".join(f"{json.dumps(n)}: {text(n, arrays[n][row])}" for n in names) + "}")
    return '{\n    "predictions": [\n        ' + ",\n        ".join(rows) + "\n    ]\n}"


def _tensor_text(value, dtype, name):
    # Items of object arrays are the bytes themselves; never round-trip them through np.asarray,
    # which would strip trailing NUL bytes.
    if isinstance(value, np.ndarray):
        if value.ndim > 0:
            return "[" + ", ".join(_tensor_text(item, dtype, name) for item in value) + "]"
        value = value[()]
    return _leaf_text(value, dtype, name)


def _leaf_text(value, dtype, name):
    if dtype.kind in "OSU":
        raw = value.encode("utf-8") if isinstance(value, str) else bytes(value)
        if not name.endswith(_BYTES_SUFFIX):
            try:
                return json.dumps(raw.decode("utf-8"), ensure_ascii=False)
            except UnicodeDecodeError:
                pass  # not text: binary, so base64 as TF Serving's `_bytes` outputs are
        return '{"b64": "' + base64.b64encode(raw).decode("ascii") + '"}'
    if dtype.kind == "b":
        return "true" if value else "false"
    if dtype.kind in "iu":
        return str(int(value))
    if dtype.kind == "f":
        return _decimal_text(value, dtype)
    raise invalid_argument(f"Failed to write JSON value for tensor type: {dtype.name}")


def _decimal_text(value, dtype):
    """WriteDecimal: the shortest of %g and full precision that round-trips, always with a '.' or 'e'."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "-Infinity" if value < 0 else "Infinity"
    cast = np.float64 if dtype == np.float64 else np.float32
    text = f"{value:g}"
    if cast(float(text)) != cast(value):
        text = f"{value:.17g}" if cast is np.float64 else f"{value:.9g}"
    if "." not in text and "e" not in text:
        text += ".0"
    return text


def model_status_json(response):
    """A GetModelStatusResponse as TF Serving's REST API prints it (every field, enums by name)."""
    from google.protobuf import json_format

    return json_format.MessageToJson(response, always_print_fields_with_no_presence=True, indent=1)


def model_metadata_json(response):
    """A GetModelMetadataResponse as TF Serving prints it: `{"model_spec": ..., "metadata": {"signature_def": ...}}`."""
    from google.protobuf import json_format
    from tensorflow_serving.apis import get_model_metadata_pb2

    options = dict(always_print_fields_with_no_presence=True, preserving_proto_field_name=True, indent=1)
    signature_defs = get_model_metadata_pb2.SignatureDefMap()
    if "signature_def" not in response.metadata or not response.metadata["signature_def"].Unpack(signature_defs):
        raise ServingError("INTERNAL", "Failed to find 'signature_def' key in the GetModelMetadataResponse metadata map.")
    return (
        '{\n"model_spec":' + json_format.MessageToJson(response.model_spec, **options) + ",\n"
        '"metadata": {"signature_def": ' + json_format.MessageToJson(signature_defs, **options) + "}\n}\n"
    )
