"""`ServingCore` without sockets: TF Serving's flags, model config files (version policies, labels,
polling), TF Serving's errors, warmup, the max_new_tokens cap, deadlines, streamed generation and
graceful stop, on a tiny GPT-2 exported by `tfllm.export.saved_model`."""

import threading
import time

import numpy as np
import pytest

from tfllm.export import signatures as sig
from tfllm.serving.server.core import ServingCore
from tfllm.serving.server.errors import ServingError
from tfllm.serving.server.options import ServerOptions

CONFIG = """
model_config_list {{
  config {{
    name: "{name}"
    base_path: "{base}"
    model_platform: "tensorflow"
    model_version_policy {{ {policy} }}
    {labels}
  }}
}}
"""


def text_inputs(*texts, **scalars):
    inputs = {sig.TEXT: np.array([t.encode() for t in texts], object)}
    inputs.update({key: np.asarray(value) for key, value in scalars.items()})
    return inputs


def core_for(base, **overrides):
    values = dict(port=0, model_name="tiny", model_base_path=str(base), file_system_poll_wait_seconds=0)
    values.update(overrides)
    return ServingCore(ServerOptions(**values)).start()


def wait_for(condition, timeout=60.0, step=0.1):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(step)
    return False


def states(core, name="tiny"):
    return {s.version: type(s).State.Name(s.state) for s in core.status(name).model_version_status}


def raises(code, message, function, *args, **kwargs):
    with pytest.raises(ServingError, match=message) as error:
        function(*args, **kwargs)
    assert error.value.code == code, error.value.message


# === Flags ===


def test_serve_flags_are_tf_servings():
    from tfllm.cli import build_parser

    args = build_parser().parse_args([
        "serve", "--port=8600", "--rest_api_port", "8601", "--model_name", "gpt", "--model_base_path", "saved_models/gpt",
        "--enable_batching", "--enable_model_warmup=false", "--file_system_poll_wait_seconds", "2",
        "--batching_parameters_file", "serving/batching.config", "--max_new_tokens_cap", "64",
    ])
    options = ServerOptions.from_args(args)
    assert (options.port, options.rest_api_port, options.model_name, options.model_base_path) == (8600, 8601, "gpt", "saved_models/gpt")
    assert options.enable_batching and not options.enable_model_warmup
    assert options.file_system_poll_wait_seconds == 2 and options.max_new_tokens_cap == 64
    assert (options.grpc_bind_host, options.rest_api_host, options.model_config_file_poll_wait_seconds) == ("0.0.0.0", "0.0.0.0", 0)
    with pytest.raises(ValueError, match=r"Expected a port different from --port.*rest_api_port=8500"):
        ServerOptions(rest_api_port=8500)
    with pytest.raises(ValueError, match=r"Invalid value for argument `model_base_path`"):
        ServingCore(ServerOptions()).start()
    with pytest.raises(ValueError, match=r"Invalid value for argument `max_new_tokens_cap`.*max_new_tokens_cap=0"):
        ServerOptions(max_new_tokens_cap=0)


def test_unreadable_config_files_are_refused_in_tf_servings_words(tmp_path):
    config = tmp_path / "models.config"
    config.write_text("model_config_list { config { name: 'tiny' base_path: '/x' unknown_field: 1 } }")
    with pytest.raises(ValueError, match=r"^Invalid protobuf file: '.*models.config'"):
        ServingCore(ServerOptions(model_config_file=str(config))).start()
    with pytest.raises(ValueError, match=r"^Invalid protobuf file: '.*missing.config'"):
        ServingCore(ServerOptions(model_config_file=str(tmp_path / "missing.config"))).start()
    config.write_text("model_config_list { config { name: 'a' base_path: '/x' } config { name: 'a' base_path: '/y' } }")
    with pytest.raises(ServingError, match="^Illegal to list model a multiple times in config list$"):
        ServingCore(ServerOptions(model_config_file=str(config))).start()


# === Model config files, version policies, labels ===


def test_model_config_file_policies_labels_errors_and_polling(serving, tmp_path):
    base = tmp_path / "echo"
    serving.export_echo_model(base, 1)
    serving.export_echo_model(base, 2)
    config = tmp_path / "models.config"
    labels = 'version_labels { key: "stable" value: 1 }\n    version_labels { key: "canary" value: 2 }'
    config.write_text(CONFIG.format(name="echo", base=base, policy="all {}", labels=labels))
    core = core_for(base, model_config_file=str(config), model_config_file_poll_wait_seconds=0.3)
    try:
        ask = text_inputs("The river")
        assert core.predict("echo", ask)[0] == 2  # latest
        assert core.predict("echo", ask, version=1)[0] == 1
        assert core.predict("echo", ask, version_label="stable")[0] == 1
        version, outputs = core.predict("echo", ask, version_label="canary")
        assert version == 2 and outputs["completion"].tolist() == [b"The river"]
        assert states(core, "echo") == {2: "AVAILABLE", 1: "AVAILABLE"}
        assert [s.version for s in core.status("echo").model_version_status] == [2, 1]  # newest first, as TF Serving
        assert core.model_names() == ["echo"] and sorted(core.models["echo"]) == [1, 2]
        raises("INVALID_ARGUMENT", "^Unrecognized servable version label: nope$", core.predict, "echo", ask, version_label="nope")
        raises("NOT_FOUND", r"^Servable not found for request: Specific\(echo, 9\)$", core.predict, "echo", ask, version=9)
        raises("NOT_FOUND", r"^Servable not found for request: Latest\(other\)$", core.predict, "other", ask)
        raises("INVALID_ARGUMENT", "^ModelSpec has no name specified.$", core.predict, "", ask)
        raises("NOT_FOUND", "^Could not find version 3 of model echo$", core.status, "echo", 3)
        raises("NOT_FOUND", "^Could not find any versions of model other$", core.status, "other")
        assert core.metadata("echo", version_label="stable").model_spec.version.value == 1

        # The config file is polled: latest 1 unloads version 1 and the label moves.
        config.write_text(CONFIG.format(name="echo", base=base, policy="latest { num_versions: 1 }",
                                        labels='version_labels { key: "stable" value: 2 }'))
        assert wait_for(lambda: states(core, "echo") == {2: "AVAILABLE", 1: "END"}), states(core, "echo")
        assert wait_for(lambda: core.predict("echo", ask, version_label="stable")[0] == 2)
        raises("NOT_FOUND", r"Specific\(echo, 1\)", core.predict, "echo", ask, version=1)

        # A label must name an available version (TF Serving's rule and words); nothing changes then.
        from google.protobuf import text_format
        from tensorflow_serving.config import model_server_config_pb2

        proto = text_format.Parse(CONFIG.format(name="echo", base=base, policy="all {}",
                                                labels='version_labels { key: "x" value: 7 }'),
                                  model_server_config_pb2.ModelServerConfig())
        raises("FAILED_PRECONDITION", "^Request to assign label to version 7 of model echo, which is not currently "
               "available for inference$", core.reload_config, proto)
        assert core.manager.labels("echo") == {"stable": 2}
        proto.model_config_list.config[0].name = ""
        raises("INVALID_ARGUMENT", "Expected a model name", core.reload_config, proto)
    finally:
        core.stop(grace_seconds=5)


def test_a_version_whose_warmup_fails_is_not_served_and_the_old_one_stays(serving, tmp_path):
    import os

    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

    base = tmp_path / "echo"
    serving.export_echo_model(base, 1)
    core = core_for(base, model_name="echo", file_system_poll_wait_seconds=0.3)
    try:
        assert core.servable("echo").warmup() == 2  # the records write_warmup wrote replay
        incoming = serving.export_echo_model(base, ".incoming", warmup=False)
        request = predict_pb2.PredictRequest()
        request.model_spec.signature_name = "no_such_signature"
        request.inputs[sig.TEXT].CopyFrom(tf.make_tensor_proto([b"x"]))
        os.makedirs(os.path.join(incoming, "assets.extra"))
        with tf.io.TFRecordWriter(os.path.join(incoming, sig.WARMUP_FILE)) as writer:
            log = prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request))
            writer.write(log.SerializeToString())
        os.rename(incoming, base / "2")
        assert wait_for(lambda: states(core, "echo").get(2) == "END")
        status = {s.version: s for s in core.status("echo").model_version_status}[2]
        assert status.status.error_code == 9 and "no_such_signature" in status.status.error_message  # FAILED_PRECONDITION
        assert states(core, "echo")[1] == "AVAILABLE" and core.predict("echo", text_inputs("The"))[0] == 1
    finally:
        core.stop(grace_seconds=5)


# === Requests on one core ===


@pytest.fixture(scope="module")
def core(exported_base, serving, tmp_path_factory):
    assert serving.has_stream_signatures(f"{exported_base}/1")  # the export writes stream_prefill / stream_decode
    base = serving.copy_base(exported_base, tmp_path_factory.mktemp("core") / "tiny")
    core = core_for(base, max_new_tokens_cap=12)
    yield core
    core.stop(grace_seconds=5)


def test_text_in_text_out_equals_local_generate(core, tiny_lm, serving):
    version, outputs = core.predict("tiny", text_inputs(*serving.PROMPTS, max_new_tokens=np.int32(7)))
    expected = serving.local_completions(*tiny_lm, serving.PROMPTS, max_new_tokens=7)
    assert version == 1 and [c.decode() for c in outputs[sig.COMPLETION]] == expected
    assert [g.decode() for g in outputs[sig.GENERATED_TEXT]] == [p + c for p, c in zip(serving.PROMPTS, expected)]
    filtered = core.predict("tiny", text_inputs("The"), output_filter=[sig.COMPLETION])[1]
    assert list(filtered) == [sig.COMPLETION]
    raises("INVALID_ARGUMENT", "output tensor alias not found in signature: nope", core.predict, "tiny",
           text_inputs("The"), output_filter=["nope"])
    raises("FAILED_PRECONDITION", 'Serving signature key "nope" not found', core.predict, "tiny", text_inputs("The"),
           signature_name="nope")


def test_max_new_tokens_cap(core, tiny_lm, serving):
    raises("INVALID_ARGUMENT", r"^max_new_tokens \(13\) exceeds this server's cap of 12 \(--max_new_tokens_cap\)$",
           core.predict, "tiny", text_inputs("The", max_new_tokens=np.int32(13)))
    raises("INVALID_ARGUMENT", r"max_new_tokens \(50\) exceeds this server's cap of 12", core.stream_generate, "tiny",
           "The", {sig.MAX_NEW_TOKENS: 50})
    # A request that leaves max_new_tokens out gets the signature's default (6), lowered to a smaller cap.
    import tensorflow as tf

    capped = ServingCore(ServerOptions(max_new_tokens_cap=3))
    assert int(capped._cap_max_new_tokens({sig.MAX_NEW_TOKENS: tf.constant(6)}, {})[sig.MAX_NEW_TOKENS]) == 3


def test_deadline_in_the_past(core):
    raises("DEADLINE_EXCEEDED", "Deadline Exceeded", core.predict, "tiny", text_inputs("The"), deadline=time.monotonic() - 1)


def test_stream_generate_pieces_concatenate_to_the_completion(core):
    for prompt in ("The river", "héllo 🙂", "def main():"):
        pieces = list(core.stream_generate("tiny", prompt, {sig.MAX_NEW_TOKENS: 12}))
        completion = core.predict("tiny", text_inputs(prompt, max_new_tokens=np.int32(12)))[1][sig.COMPLETION][0].decode()
        assert "".join(pieces) == completion, (prompt, pieces)
        assert len(pieces) > 1 and all(pieces)
    sampled = dict(do_sample=True, seed=3, top_k=20, temperature=0.9, max_new_tokens=10)
    pieces = list(core.stream_generate("tiny", "The river", sampled))
    scalars = {k: np.asarray(v, {bool: np.bool_, int: np.int32, float: np.float32}[type(v)]) for k, v in sampled.items()}
    completion = core.predict("tiny", text_inputs("The river", **scalars))[1][sig.COMPLETION][0].decode()
    assert "".join(pieces) == completion  # the same sampler and seed as the exported graph


def test_stream_generate_errors_and_early_close(core, tmp_path):
    raises("INVALID_ARGUMENT", "Unknown generation parameters: beams", core.stream_generate, "tiny", "The", {"beams": 2})
    raises("INVALID_ARGUMENT", r"Invalid value for argument `top_p`.*top_p=1.5", core.stream_generate, "tiny", "The", {"top_p": 1.5})
    raises("INVALID_ARGUMENT", "Expected an integer", core.stream_generate, "tiny", "The", {"max_new_tokens": "5"})
    raises("NOT_FOUND", r"Latest\(other\)", core.stream_generate, "other", "The", {})
    with pytest.raises(ServingError, match="Invalid value for argument `text`. Expected a non-empty string"):
        list(core.stream_generate("tiny", "", {}))
    stream = core.stream_generate("tiny", "The river", {sig.MAX_NEW_TOKENS: 12})
    next(stream)
    stream.close()  # a client went away: the version is released
    assert core.servable("tiny")._in_flight == 0 and core._in_flight == 0


def test_stream_generate_needs_the_streaming_signatures(serving, tmp_path):
    serving.export_echo_model(tmp_path / "echo", 1)
    core = core_for(tmp_path / "echo", model_name="echo")
    try:
        raises("UNIMPLEMENTED", "Streaming needs the stream_prefill and stream_decode signatures", core.stream_generate,
               "echo", "The", {})
        assert core._in_flight == 0 and core.servable("echo")._in_flight == 0
    finally:
        core.stop(grace_seconds=5)


def test_stop_finishes_requests_in_flight_then_refuses_new_ones(serving, tmp_path):
    serving.export_echo_model(tmp_path / "echo", 1)
    core = core_for(tmp_path / "echo", model_name="echo")
    servable = core.servable("echo")
    started, call = threading.Event(), servable.call

    def slow_call(signature, feed, cancellation=None):
        started.set()
        time.sleep(1.0)
        return call(signature, feed)

    servable.call = slow_call
    results = {}
    worker = threading.Thread(target=lambda: results.update(out=core.predict("echo", text_inputs("The"))))
    worker.start()
    assert started.wait(30)
    core.stop(grace_seconds=30)
    worker.join(30)
    assert results["out"][0] == 1 and results["out"][1]["completion"].tolist() == [b"The"]
    raises("UNAVAILABLE", "Server is shutting down", core.predict, "echo", text_inputs("The"))
