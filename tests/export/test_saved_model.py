"""SavedModel export: text in / text out equal to the Keras model after a fresh-process reload, the
signatures `saved_model_cli` lists, the op set TF Serving can run, warmup records, atomic versions."""

import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

import tfllm
from testing import keras_completions, make_tiny_lm_folder
from tfllm.export import saved_model
from tfllm.export import signatures as sig
from tfllm.export import verify

pytest.importorskip("tensorflow_text")
pytest.importorskip("tensorflow_serving")

PROMPTS = ["The river", "A long, long prompt with several words: x = 1", "héllo 🙂"]
CORPUS = [
    "The river bank was steep and the water ran fast under the bridge.",
    "def main():\n    x = 1\n    return x  # done",
    "A long, long prompt with several words and a few numbers 1 2 3.",
    "héllo wörld 🙂 naïve café",
] * 20


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("saved_model")
    folder = make_tiny_lm_folder(root / "hf", CORPUS)
    model = tfllm.AutoModelForCausalLM.from_pretrained(folder)
    tokenizer = tfllm.AutoTokenizer.from_pretrained(folder)
    base = root / "saved_models" / "tiny"
    path = saved_model(model, tokenizer, base, max_new_tokens=6)
    return dict(model=model, tokenizer=tokenizer, base=base, path=path)


@pytest.mark.slow
def test_text_in_text_out_equals_keras_generate_after_fresh_reload(exported):
    model, tokenizer = exported["model"], exported["tokenizer"]
    sampled = {sig.TEXT: PROMPTS, sig.MAX_NEW_TOKENS: 5, sig.DO_SAMPLE: True, sig.SEED: 7, sig.TOP_K: 20}
    result = verify.run_in_fresh_process(
        exported["path"],
        {sig.SERVING_DEFAULT: {sig.TEXT: PROMPTS, sig.MAX_NEW_TOKENS: 9}, sig.GENERATE_IDS: {
            sig.INPUT_IDS: [[0, 5, 6, 7], [8, 9, 10, 11]], sig.ATTENTION_MASK: [[0, 1, 1, 1], [1, 1, 1, 1]],
            sig.MAX_NEW_TOKENS: 4}},
    )
    greedy = keras_completions(model, tokenizer, PROMPTS, max_new_tokens=9)
    assert list(result[sig.SERVING_DEFAULT][sig.COMPLETION]) == greedy
    assert list(result[sig.SERVING_DEFAULT][sig.GENERATED_TEXT]) == [p + c for p, c in zip(PROMPTS, greedy)]
    ids = model.generate(np.array([[0, 5, 6, 7], [8, 9, 10, 11]]), attention_mask=np.array([[0, 1, 1, 1], [1] * 4]),
                         max_new_tokens=4).numpy()
    np.testing.assert_array_equal(result[sig.GENERATE_IDS][sig.OUTPUT_IDS], ids)
    # Seeded sampling in the graph draws the same tokens as the Keras model with the same seed.
    sampled_result = verify.run_in_fresh_process(exported["path"], {sig.SERVING_DEFAULT: sampled})
    expected = keras_completions(model, tokenizer, PROMPTS, max_new_tokens=5, do_sample=True, seed=7, top_k=20)
    assert list(sampled_result[sig.SERVING_DEFAULT][sig.COMPLETION]) == expected


def test_saved_model_cli_lists_the_documented_signatures(exported):
    cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    shown = subprocess.run([cli, "show", "--dir", str(exported["path"]), "--all"], capture_output=True, text=True,
                           env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert shown.returncode == 0, shown.stderr[-2000:]
    for signature in sig.saved_model_signatures("causal_lm"):
        assert f"signature_def['{signature.name}']" in shown.stdout
        for tensor in (*signature.inputs, *signature.outputs):
            assert f"['{tensor.name}']" in shown.stdout


def test_signature_defaults_make_sampling_inputs_optional(exported):
    defaults = verify.signature_defaults(exported["path"])[sig.SERVING_DEFAULT]
    assert set(defaults) == {sig.MAX_NEW_TOKENS, sig.DO_SAMPLE, sig.TEMPERATURE, sig.TOP_K, sig.TOP_P, sig.SEED}
    assert int(defaults[sig.MAX_NEW_TOKENS]) == 6 and not bool(defaults[sig.DO_SAMPLE])


def test_graph_uses_only_ops_tf_serving_has(exported):
    report = verify.op_report(exported["path"])
    assert report["forbidden"] == []
    assert "RegexSplitWithOffsets" in report["ops"]  # the tokenizer really is in the graph
    assert not any(op.startswith("Xla") for op in report["ops"])


def test_op_report_flags_python_callbacks(tmp_path):
    module = tf.Module()
    module.f = tf.function(lambda x: tf.py_function(lambda v: v * 2, [x], tf.float32),
                           input_signature=[tf.TensorSpec([None], tf.float32)])
    tf.saved_model.save(module, str(tmp_path), signatures={"serving_default": module.f})
    assert "EagerPyFunc" in verify.op_report(tmp_path)["forbidden"]


def test_warmup_records_are_prediction_logs(exported):
    from tensorflow_serving.apis import prediction_log_pb2

    records = list(tf.data.TFRecordDataset(os.path.join(exported["path"], sig.WARMUP_FILE)).as_numpy_iterator())
    assert len(records) == 2
    log = prediction_log_pb2.PredictionLog.FromString(records[1])
    assert log.predict_log.request.model_spec.signature_name == sig.SERVING_DEFAULT
    assert log.predict_log.request.model_spec.name == "tiny"
    assert len(tf.make_ndarray(log.predict_log.request.inputs[sig.TEXT])) == 3
    assert set(log.predict_log.request.inputs) == {sig.TEXT}  # no scalars: TF Serving's batching refuses them


def test_tokenizer_is_shipped_with_the_version(exported):
    tokenizer = tfllm.AutoTokenizer.from_pretrained(os.path.join(exported["path"], sig.TOKENIZER_ASSETS))
    assert tokenizer.encode("héllo") == exported["tokenizer"].encode("héllo")


def test_existing_version_is_refused_and_failed_export_leaves_nothing(exported, monkeypatch):
    base = exported["base"]
    with pytest.raises(FileExistsError, match=r"Invalid value for argument `version`.*version=1"):
        saved_model(exported["model"], exported["tokenizer"], base, version=1)

    def broken_save(*args, **kwargs):
        raise RuntimeError("injected failure while writing")

    monkeypatch.setattr(tf.saved_model, "save", broken_save)
    with pytest.raises(RuntimeError, match="injected"):
        saved_model(exported["model"], exported["tokenizer"], base)
    assert sorted(os.listdir(base)) == ["1"]  # no version 2, no temporary folder


def test_unsupported_model_names_what_is_supported(tmp_path):
    class Encoder:
        task = "masked_lm"

    with pytest.raises(NotImplementedError, match="masked_lm"):
        saved_model(Encoder(), None, tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_stream_signatures_generate_the_same_tokens_one_at_a_time(exported):
    """stream_prefill + stream_decode, driven greedily from Python (as `tfllm serve` streams), give
    the tokens `generate_ids` gives."""
    import tensorflow_text  # noqa: F401

    loaded = tf.saved_model.load(str(exported["path"]))
    prefill, decode = loaded.signatures[sig.STREAM_PREFILL], loaded.signatures[sig.STREAM_DECODE]
    ids = tf.constant([[0, 5, 6, 7], [8, 9, 10, 11]])
    mask = tf.constant([[0, 1, 1, 1], [1, 1, 1, 1]])
    new = 5
    state = prefill(input_ids=ids, attention_mask=mask, max_new_tokens=tf.constant(new))
    cache, padding, length = state[sig.KV_CACHE_TENSOR], state[sig.PADDING_MASK], state[sig.PROMPT_LENGTH]
    tokens = [np.argmax(state[sig.LOGITS].numpy(), axis=-1)]
    for step in range(new - 1):
        out = decode(token=tf.constant(tokens[-1], tf.int32), step=tf.constant(step), kv_cache=cache,
                     padding_mask=padding, prompt_length=length)
        cache = out[sig.KV_CACHE_TENSOR]
        tokens.append(np.argmax(out[sig.LOGITS].numpy(), axis=-1))
    expected = exported["model"].generate(ids.numpy(), attention_mask=mask.numpy(), max_new_tokens=new,
                                          eos_token_id=-1).numpy()[:, 4:]
    np.testing.assert_array_equal(np.stack(tokens, axis=1), expected)
