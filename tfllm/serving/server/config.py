"""Config files as TF Serving reads them: `ModelServerConfig`, `BatchingParameters`, version policies."""

import dataclasses
import logging
import os

from google.protobuf import text_format

from tfllm.errors import invalid_argument

logger = logging.getLogger(__name__)

TENSORFLOW_PLATFORM = "tensorflow"


def _model_server_config_pb2():
    from tensorflow_serving.config import model_server_config_pb2

    return model_server_config_pb2


def read_text_proto(path, message, text=None):
    """Parses a text-format proto file (or its `text`, when already read) into `message`.

    Raises:
        ValueError: "Invalid protobuf file: 'PATH'", as TF Serving says it, with the reason.
    """
    try:
        if text is None:
            with open(path, encoding="utf-8") as file:
                text = file.read()
        text_format.Parse(text, message)
    except OSError as error:
        raise ValueError(f"Invalid protobuf file: '{path}' ({error.strerror})") from error
    except text_format.ParseError as error:
        raise ValueError(f"Invalid protobuf file: '{path}' ({error})") from error
    return message


MODELS_DIR_VARIABLE = "TFLLM_MODELS_DIR"
CONTAINER_MODELS_DIR = "/models"


def read_model_server_config(path, text=None):
    """The `ModelServerConfig` of a `--model_config_file` (its `text` when already read).

    Relative base paths are taken from the file's folder (TF Serving requires absolute ones). So that
    one file serves both the `tensorflow/serving` container (models mounted at /models) and
    `tfllm serve` on the host, a base path under `/models` is moved under `$TFLLM_MODELS_DIR` when
    that variable is set (e.g. `TFLLM_MODELS_DIR=saved_models`).
    """
    config = read_text_proto(path, _model_server_config_pb2().ModelServerConfig(), text)
    root = os.path.dirname(os.path.abspath(path))
    models_dir = os.environ.get(MODELS_DIR_VARIABLE)
    for model in config.model_config_list.config:
        base = model.base_path
        if models_dir and (base == CONTAINER_MODELS_DIR or base.startswith(CONTAINER_MODELS_DIR + "/")):
            base = os.path.abspath(os.path.join(models_dir, os.path.relpath(base, CONTAINER_MODELS_DIR)))
        elif base and not os.path.isabs(base):
            base = os.path.normpath(os.path.join(root, base))
        elif base.startswith(CONTAINER_MODELS_DIR + "/") and not os.path.exists(base):
            logger.warning("Model %r: base path %s does not exist here; set %s to the folder mounted at %s "
                           "(e.g. %s=saved_models)", model.name, base, MODELS_DIR_VARIABLE, CONTAINER_MODELS_DIR,
                           MODELS_DIR_VARIABLE)
        model.base_path = base
    return config


def single_model_config(model_name, model_base_path):
    """The config TF Serving builds from `--model_name` and `--model_base_path`."""
    config = _model_server_config_pb2().ModelServerConfig()
    model = config.model_config_list.config.add()
    model.name = model_name
    model.base_path = os.path.abspath(model_base_path)
    model.model_platform = TENSORFLOW_PLATFORM
    return config


def validate_model_server_config(config):
    """Checks a `ModelServerConfig` as TF Serving's ServerCore does.

    Raises:
        ValueError: a custom config, a model listed twice, a model without a name or base path,
            or a platform other than "tensorflow".
    """
    if config.WhichOneof("config") == "custom_model_config":
        raise ValueError(
            "ServerModelConfig type not supported by HandleReloadConfigRequest. Only ModelConfigList is currently supported"
        )
    names = set()
    for model in config.model_config_list.config:
        if not model.name:
            raise invalid_argument("name", "a model name in every ModelConfig", model.name)
        if model.name in names:
            raise ValueError(f"Illegal to list model {model.name} multiple times in config list")
        names.add(model.name)
        if not model.base_path:
            raise invalid_argument("base_path", f"a folder for model {model.name}", model.base_path)
        platform = model.model_platform or TENSORFLOW_PLATFORM
        if platform != TENSORFLOW_PLATFORM:
            raise ValueError(f"Model {model.name} requests unsupported platform {platform}")


def aspired_versions(policy, available):
    """The versions a `ServableVersionPolicy` wants loaded, out of the version numbers on disk.

    Latest N (the default, N = 1), all, or specific versions (those present on disk).
    """
    available = sorted(set(available))
    choice = policy.WhichOneof("policy_choice")
    if choice == "all":
        return set(available)
    if choice == "specific":
        return set(policy.specific.versions) & set(available)
    count = policy.latest.num_versions if choice == "latest" and policy.latest.num_versions > 0 else 1
    return set(available[-count:])


def version_folders(base_path):
    """`{version: path}` of the numeric subfolders of `base_path` that hold a SavedModel.

    Hidden folders (an export being written) and folders that are visibly incomplete (see
    `looks_complete`) are skipped.
    """
    found = {}
    try:
        entries = os.listdir(base_path)
    except OSError:
        return found
    for entry in entries:
        path = os.path.join(base_path, entry)
        if entry.isdigit() and looks_complete(path):
            found[int(entry)] = path
    return found


def looks_complete(path):
    """Whether a version folder has every file a SavedModel needs: `saved_model.pb` (or `.pbtxt`)
    and, when it has variables, their index and all the data shards the shard names announce.

    A folder still being copied usually fails this; one that passes may still fail to load (a file
    not fully written), which the manager retries when the folder changes.
    """
    if not any(os.path.isfile(os.path.join(path, name)) for name in ("saved_model.pb", "saved_model.pbtxt")):
        return False
    variables = os.path.join(path, "variables")
    if not os.path.isdir(variables):
        return True
    names = set(os.listdir(variables))
    shards = [name for name in names if name.startswith("variables.data-")]
    if not shards:
        return "variables.index" not in names  # no variables at all, or an index without its data
    count = shards[0].rsplit("-of-", 1)[-1]
    expected = {f"variables.data-{i:05d}-of-{count}" for i in range(int(count))} if count.isdigit() else set()
    return "variables.index" in names and expected <= names


# === Batching parameters ===


@dataclasses.dataclass
class BatchingParameters:
    """TF Serving's `BatchingParameters`, with the defaults its batch scheduler uses.

    Attributes:
        max_batch_size: most rows in one batch.
        batch_timeout_micros: how long a batch may wait for more requests (0: run when a thread is free).
        max_enqueued_batches: batches that may wait; a request that needs one more is answered UNAVAILABLE.
        num_batch_threads: batches run at once.
        thread_pool_name: kept for compatibility (one pool per server here).
        allowed_batch_sizes: accepted for compatibility; batches are not padded to these sizes.
        pad_variable_length_inputs: pad inputs of different lengths (axis 1) to merge them.
    """

    max_batch_size: int = 1000
    batch_timeout_micros: int = 0
    max_enqueued_batches: int = 10
    num_batch_threads: int = dataclasses.field(default_factory=lambda: os.cpu_count() or 1)
    thread_pool_name: str = "model_server_batch_threads"
    allowed_batch_sizes: tuple = ()
    pad_variable_length_inputs: bool = False

    def __post_init__(self):
        for name in ("max_batch_size", "max_enqueued_batches", "num_batch_threads"):
            if getattr(self, name) < 1:
                raise invalid_argument(name, "an integer >= 1", getattr(self, name))
        if self.batch_timeout_micros < 0:
            raise invalid_argument("batch_timeout_micros", "an integer >= 0", self.batch_timeout_micros)


_WRAPPED = ("max_batch_size", "batch_timeout_micros", "max_enqueued_batches", "num_batch_threads", "thread_pool_name")


def _batching_parameters_message():
    """An empty `tensorflow.serving.BatchingParameters` message.

    tensorflow-serving-api does not ship `session_bundle_config_pb2`, so when it is missing the
    message is built here from the same field names and numbers (session_bundle_config.proto).
    """
    try:
        from tensorflow_serving.servables.tensorflow import session_bundle_config_pb2

        return session_bundle_config_pb2.BatchingParameters()
    except ImportError:
        pass
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, wrappers_pb2

    pool = descriptor_pool.DescriptorPool()
    wrappers = descriptor_pb2.FileDescriptorProto()
    wrappers_pb2.DESCRIPTOR.CopyToProto(wrappers)
    pool.Add(wrappers)
    file = descriptor_pb2.FileDescriptorProto(
        name="tfllm/batching_parameters.proto", package="tensorflow.serving", syntax="proto3",
        dependency=["google/protobuf/wrappers.proto"],
    )
    message = file.message_type.add(name="BatchingParameters")
    field = descriptor_pb2.FieldDescriptorProto
    for number, name in enumerate(_WRAPPED, start=1):
        wrapper = ".google.protobuf.StringValue" if name == "thread_pool_name" else ".google.protobuf.Int64Value"
        message.field.add(name=name, number=number, type=field.TYPE_MESSAGE, type_name=wrapper, label=field.LABEL_OPTIONAL)
    message.field.add(name="allowed_batch_sizes", number=6, type=field.TYPE_INT64, label=field.LABEL_REPEATED)
    message.field.add(name="pad_variable_length_inputs", number=7, type=field.TYPE_BOOL, label=field.LABEL_OPTIONAL)
    pool.Add(file)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("tensorflow.serving.BatchingParameters"))()


def read_batching_parameters(path=None):
    """`BatchingParameters` from a text-format file (TF Serving's defaults for what it leaves out, or with no file).

    Fields newer TF Serving releases added (e.g. `enable_large_batch_splitting`) are accepted and
    ignored with a warning.
    """
    if not path:
        return BatchingParameters()
    message = _batching_parameters_message()
    try:
        with open(path, encoding="utf-8") as file:
            text = file.read()
    except OSError as error:
        raise ValueError(f"Invalid protobuf file: '{path}' ({error.strerror})") from error
    try:
        text_format.Parse(text, message)
    except text_format.ParseError:
        message = _batching_parameters_message()
        try:
            text_format.Parse(text, message, allow_unknown_field=True)
        except text_format.ParseError as error:
            raise ValueError(f"Invalid protobuf file: '{path}' ({error})") from error
        logger.warning("%s has batching fields tfllm serve does not use; they are ignored", path)
    values = {}
    for name in _WRAPPED:
        if message.HasField(name):
            values[name] = getattr(message, name).value
    values["allowed_batch_sizes"] = tuple(message.allowed_batch_sizes)
    values["pad_variable_length_inputs"] = bool(message.pad_variable_length_inputs)
    return BatchingParameters(**values)
