"""Shared fixtures of the serving tests: a tiny GPT-2 exported by `tfllm.export.saved_model`, and
`tfllm serve` started on free loopback ports.

- `tiny_lm` (session): `(model, tokenizer)`, a random GPT-2 with a BPE tokenizer trained here.
- `exported_base` (session): `saved_models/tiny` holding version 1 written by `saved_model(...)`
  (all the causal-LM signatures, `stream_prefill` / `stream_decode` included).
  Read-only: copy it (`copy_base`) before dropping versions in. `stream_base` is the same folder
  (it was a separately built version before the export wrote the streaming signatures).
- `running_server` (module): `ServerApp` on a copy of `exported_base` with gRPC and REST on free
  127.0.0.1 ports, `max_request_bytes` 1 MiB and `max_new_tokens_cap` 32; yields
  `(core, grpc_port, rest_port)` (`rest_port` is None without a REST front end).
- `start_server(base, **options)`: start another `ServerApp` (stopped at the end of the test).
- `serving` (session): the helpers below as attributes (`serving.add_version(base, 2)`, ...), since
  test modules cannot import this conftest by name (tests/conftest.py is also `conftest`).
"""

import contextlib
import os
import shutil
import socket
import types

import pytest

from testing import keras_completions, make_tiny_lm_folder

pytest.importorskip("tensorflow_text")
pytest.importorskip("tensorflow_serving")

MODEL_NAME = "tiny"
MAX_NEW_TOKENS = 6  # the signatures' default
CORPUS = [
    "The river bank was steep and the water ran fast under the bridge.",
    "def main():\n    x = 1\n    return x  # done",
    "A long, long prompt with several words and a few numbers 1 2 3.",
    "héllo wörld 🙂 naïve café",
] * 20
PROMPTS = ["The river", "A long, long prompt with several words: x = 1", "héllo 🙂"]


def free_port():
    """A port the OS reports free on 127.0.0.1 (bound and released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def copy_base(source, destination):
    """Copies a model base folder (all its versions); returns the destination path."""
    shutil.copytree(source, destination)
    return destination


def add_version(base, version, source_version=1):
    """Drops a copy of `source_version` in as `version`, atomically (hidden copy, then rename), as an export does."""
    hidden = os.path.join(base, f".incoming-{version}")
    shutil.copytree(os.path.join(base, str(source_version)), hidden)
    os.rename(hidden, os.path.join(base, str(version)))
    return os.path.join(base, str(version))


@pytest.fixture(scope="session")
def tiny_lm(tmp_path_factory):
    import tfllm

    folder = make_tiny_lm_folder(tmp_path_factory.mktemp("serving_hf") / "hf", CORPUS)
    return tfllm.AutoModelForCausalLM.from_pretrained(folder), tfllm.AutoTokenizer.from_pretrained(folder)


@pytest.fixture(scope="session")
def exported_base(tiny_lm, tmp_path_factory):
    from tfllm.export import saved_model

    model, tokenizer = tiny_lm
    base = tmp_path_factory.mktemp("serving_export") / "saved_models" / MODEL_NAME
    saved_model(model, tokenizer, base, max_new_tokens=MAX_NEW_TOKENS, verify=False)
    return str(base)


@pytest.fixture(scope="session")
def stream_base(exported_base):
    """The base whose version streams: the export itself now writes `stream_prefill` / `stream_decode`."""
    return exported_base


def has_stream_signatures(version_folder):
    from tfllm.export import signatures as sig
    from tfllm.export.verify import read_saved_model

    signatures = read_saved_model(str(version_folder)).meta_graphs[0].signature_def
    return sig.STREAM_PREFILL in signatures and sig.STREAM_DECODE in signatures


def export_echo_model(base, version=1, warmup=True):
    """A SavedModel version that loads in a second: `serving_default` returns `text` as `completion`.

    For tests of what does not depend on the model (policies, labels, polling, shutdown).
    """
    import tensorflow as tf

    from tfllm.export.saved_model import write_warmup

    module = tf.Module()
    module.echo = tf.function(lambda text: {"completion": text},
                              input_signature=[tf.TensorSpec([None], tf.string, name="text")])
    folder = os.path.join(base, str(version))
    tf.saved_model.save(module, folder, signatures={"serving_default": module.echo})
    if warmup:
        write_warmup(folder, os.path.basename(os.path.abspath(base)), ["a", "b"])
    return folder


def server_options(base, **overrides):
    from tfllm.serving.server.options import ServerOptions

    values = dict(port=free_port(), grpc_bind_host="127.0.0.1", rest_api_port=free_port(), rest_api_host="127.0.0.1",
                  model_name=MODEL_NAME, model_base_path=str(base), file_system_poll_wait_seconds=0.5,
                  grpc_max_threads=16)
    values.update(overrides)
    return ServerOptions(**values)


def launch(base, **overrides):
    """A started `ServerApp` (retrying with other ports if a free port was taken meanwhile)."""
    from tfllm.serving.server.app import ServerApp

    for attempt in range(3):
        app = ServerApp(server_options(base, **overrides))
        try:
            return app.start()
        except OSError:
            if attempt == 2:
                raise


@pytest.fixture(scope="session")
def serving():
    return types.SimpleNamespace(
        MODEL_NAME=MODEL_NAME, MAX_NEW_TOKENS=MAX_NEW_TOKENS, PROMPTS=PROMPTS, free_port=free_port, copy_base=copy_base,
        add_version=add_version, local_completions=keras_completions, launch=launch, server_options=server_options,
        has_stream_signatures=has_stream_signatures, export_echo_model=export_echo_model,
    )


@pytest.fixture(scope="module")
def running_server(exported_base, tmp_path_factory):
    base = copy_base(exported_base, tmp_path_factory.mktemp("running_server") / MODEL_NAME)
    app = launch(base, max_request_bytes=1 << 20, max_new_tokens_cap=32)
    yield app.core, app.grpc_port, app.rest_port
    app.stop(grace_seconds=5)


@pytest.fixture
def start_server():
    apps = []

    def start(base, **overrides):
        apps.append(launch(base, **overrides))
        return apps[-1]

    yield start
    for app in apps:
        with contextlib.suppress(Exception):
            app.stop(grace_seconds=5)
