"""SavedModel export of an encoder-decoder (T5): text in / text out equal to `model.generate` +
`batch_decode` after a fresh-process reload; the in-graph SentencePiece tokenizer against
transformers' T5TokenizerFast; signatures, ops, warmup records."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

import tfllm
from testing import make_tiny_t5_folder
from tfllm.export import saved_model
from tfllm.export import signatures as sig
from tfllm.export import verify
from tfllm.tokenizers import in_graph

pytest.importorskip("tensorflow_text")
pytest.importorskip("tensorflow_serving")
transformers = pytest.importorskip("transformers")

PROMPTS = ["translate: the function returns a value", "x", "summarize: class <extra_id_0> definitions and more words"]
# tests/tokenizers/test_sentencepiece.py's texts, plus whitespace, control and added-token cases.
TEXTS = [
    "Hello world, this is a simple test.", "  leading,  double  and trailing spaces  ",
    "Café naïve résumé Ångström façade", "中文 ☃ 🤖 and more", "Prices: 3.50, 1,000,000 items (50%) in 2024",
    "The <extra_id_0> walks in <extra_id_1> park", "end.<extra_id_0>start", "ﬁ ① Ｈｅｌｌｏ",
    "line one\nline two\tindented", "", "   ", "a\u00a0b\u3000c", "a\x01b\x7fc", "☃☃ 🤖🤖 x",
    "a <extra_id_0> <extra_id_1> b", "a </s> b <unk> c<pad>", "<extra_id_5><extra_id_6>", "Hello , world . isn't it ?",
]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return make_tiny_t5_folder(tmp_path_factory.mktemp("t5") / "hf")


@pytest.fixture(scope="module")
def exported(folder):
    model = tfllm.AutoModelForSeq2SeqLM.from_pretrained(folder)
    tokenizer = tfllm.AutoTokenizer.from_pretrained(folder)
    path = saved_model(model, tokenizer, folder.parent / "saved_models" / "t5", max_new_tokens=8)
    return dict(model=model, tokenizer=tokenizer, path=path)


def _keras_text(model, tokenizer, prompts, **kwargs):
    batch = tokenizer(prompts, return_tensors="np", padding=True)
    ids = model.generate(batch["input_ids"], attention_mask=batch["attention_mask"], **kwargs)
    return tokenizer.batch_decode(ids, skip_special_tokens=True)


# === Text in, text out ===


@pytest.mark.slow
def test_text_in_text_out_equals_keras_generate_after_fresh_reload(exported):
    model, tokenizer = exported["model"], exported["tokenizer"]
    ids, mask = np.array([[0, 0, 37, 5, 1], [12, 40, 7, 9, 1]]), np.array([[0, 0, 1, 1, 1], [1] * 5])
    sampled = {sig.TEXT: PROMPTS, sig.MAX_NEW_TOKENS: 6, sig.DO_SAMPLE: True, sig.SEED: 3, sig.TOP_K: 20}
    result = verify.run_in_fresh_process(exported["path"], {
        sig.SERVING_DEFAULT: {sig.TEXT: PROMPTS, sig.MAX_NEW_TOKENS: 12},
        sig.GENERATE_IDS: {sig.INPUT_IDS: ids.tolist(), sig.ATTENTION_MASK: mask.tolist(), sig.MAX_NEW_TOKENS: 5},
    })
    greedy = _keras_text(model, tokenizer, PROMPTS, max_new_tokens=12)
    assert any(greedy) and len(set(greedy)) > 1  # real, differing outputs
    assert list(result[sig.SERVING_DEFAULT][sig.GENERATED_TEXT]) == greedy
    assert list(result[sig.SERVING_DEFAULT][sig.COMPLETION]) == greedy
    # One prompt alone gives what it gives in the batch.
    assert [_keras_text(model, tokenizer, [p], max_new_tokens=12)[0] for p in PROMPTS] == greedy
    np.testing.assert_array_equal(result[sig.GENERATE_IDS][sig.OUTPUT_IDS],
                                  model.generate(ids, attention_mask=mask, max_new_tokens=5).numpy())
    # Seeded sampling in the graph draws the same tokens as the Keras model with the same seed.
    sampled_result = verify.run_in_fresh_process(exported["path"], {sig.SERVING_DEFAULT: sampled})
    expected = _keras_text(model, tokenizer, PROMPTS, max_new_tokens=6, do_sample=True, seed=3, top_k=20)
    assert list(sampled_result[sig.SERVING_DEFAULT][sig.GENERATED_TEXT]) == expected


def test_defaults_signatures_ops_and_warmup(exported):
    from tensorflow_serving.apis import prediction_log_pb2

    defaults = verify.signature_defaults(exported["path"])[sig.SERVING_DEFAULT]
    assert int(defaults[sig.MAX_NEW_TOKENS]) == 8 and not bool(defaults[sig.DO_SAMPLE])
    cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    shown = subprocess.run([cli, "show", "--dir", str(exported["path"]), "--all"], capture_output=True, text=True,
                           env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert shown.returncode == 0, shown.stderr[-2000:]
    for signature in sig.saved_model_signatures("seq2seq_lm"):
        assert f"signature_def['{signature.name}']" in shown.stdout
        for tensor in (*signature.inputs, *signature.outputs):
            assert f"['{tensor.name}']" in shown.stdout
    report = verify.op_report(exported["path"])
    assert report["forbidden"] == []
    assert "SentencepieceTokenizeOp" in report["ops"]  # the tokenizer really is in the graph
    records = list(tf.data.TFRecordDataset(os.path.join(exported["path"], sig.WARMUP_FILE)).as_numpy_iterator())
    request = prediction_log_pb2.PredictionLog.FromString(records[1]).predict_log.request
    assert request.model_spec.signature_name == sig.SERVING_DEFAULT and request.model_spec.name == "t5"
    assert set(request.inputs) == {sig.TEXT}  # no scalars: TF Serving's batching refuses them


def test_shipped_tokenizer_keeps_the_sentencepiece_model(exported, folder):
    shipped = os.path.join(exported["path"], sig.TOKENIZER_ASSETS)
    assert (folder / "spiece.model").read_bytes() == open(os.path.join(shipped, "spiece.model"), "rb").read()
    reloaded = tfllm.AutoTokenizer.from_pretrained(shipped)
    assert reloaded.sentencepiece_model_proto == exported["tokenizer"].sentencepiece_model_proto
    assert reloaded.encode(TEXTS[5]) == exported["tokenizer"].encode(TEXTS[5])


# === The in-graph SentencePiece tokenizer ===


@pytest.fixture(scope="module")
def codec(exported):
    return in_graph.from_tokenizer(exported["tokenizer"])


def test_in_graph_ids_equal_t5_tokenizer_fast(folder, exported, codec):
    fast = transformers.T5TokenizerFast.from_pretrained(folder)
    got = codec.tokenize(tf.constant(TEXTS), add_special_tokens=True).to_list()
    for text, ids in zip(TEXTS, got):
        assert ids == exported["tokenizer"].encode(text) == fast(text)["input_ids"], text
    assert codec.tokenize(tf.constant(TEXTS[:2])).to_list() == [fast(t, add_special_tokens=False)["input_ids"]
                                                                 for t in TEXTS[:2]]


def test_in_graph_detokenize_equals_batch_decode_on_random_ids(folder, exported, codec):
    fast = transformers.T5TokenizerFast.from_pretrained(folder)
    rng = np.random.default_rng(0)
    ids = rng.integers(0, len(fast), (200, 10))
    ids[:, 0] = rng.choice([0, 1, 2, 3, 250, 7], 200)  # special tokens and a bare "▁" first
    got = [text.decode("utf-8") for text in codec.detokenize(tf.constant(ids)).numpy()]
    assert got == exported["tokenizer"].batch_decode(ids, skip_special_tokens=True)
    assert got == fast.batch_decode(ids, skip_special_tokens=True)
    mask = (rng.random(ids.shape) > 0.3).astype(np.int32)
    masked = [text.decode("utf-8") for text in codec.detokenize(tf.constant(ids), tf.constant(mask)).numpy()]
    assert masked == fast.batch_decode([row[m == 1] for row, m in zip(ids, mask)], skip_special_tokens=True)


def test_in_graph_clean_up_tokenization_spaces(folder):
    tokenizer = tfllm.AutoTokenizer.from_pretrained(folder, clean_up_tokenization_spaces=True)
    codec = in_graph.from_tokenizer(tokenizer)
    text = "Hello , world . isn't it ? I 'm sure they 're here , aren't they !"
    ids = tokenizer.encode(text)
    assert codec.detokenize(tf.constant([ids])).numpy()[0].decode() == tokenizer.decode(ids, skip_special_tokens=True)


def test_tokenizer_json_alone_names_the_missing_spiece_model(folder, tmp_path):
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(folder / name, tmp_path / name)
    tokenizer = tfllm.AutoTokenizer.from_pretrained(tmp_path)
    assert tokenizer.sentencepiece_model_proto is None
    with pytest.raises(NotImplementedError, match="spiece.model"):
        in_graph.from_tokenizer(tokenizer)


def test_legacy_false_is_refused_naming_the_option(folder, tmp_path):
    shutil.copy(folder / "spiece.model", tmp_path / "spiece.model")
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "T5Tokenizer", "legacy": False}))
    tokenizer = tfllm.AutoTokenizer.from_pretrained(tmp_path)
    with pytest.raises(NotImplementedError, match=r"prepend_scheme is 'first' \(legacy=False"):
        in_graph.from_tokenizer(tokenizer)
