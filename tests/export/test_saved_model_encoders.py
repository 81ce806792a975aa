"""SavedModel export of encoders (`embed`) and sequence classifiers (`classify`, `embed`): equal to
sentence-transformers, tfllm's pipelines and the Keras model after a fresh-process reload; the
signatures `saved_model_cli` lists; ops TF Serving has; warmup records; unsupported models refused."""

import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

import tfllm
from testing import TINY_BERT, TINY_WORDPIECE_VOCAB, make_hf_gpt2, make_hf_model, minilm_folder, write_wordpiece_vocab
from tfllm.checkpoints.sentence_config import sentence_transformers_config
from tfllm.export import saved_model
from tfllm.export import signatures as sig
from tfllm.export import verify
from tfllm.export.serving_module import pooling_config
from tfllm.layers.pooling import pool

pytest.importorskip("tensorflow_text")
pytest.importorskip("tensorflow_serving")

LONG = " ".join(["The quick brown fox jumps over the lazy dog near the river bank."] * 30)  # > 256 tokens
TEXTS = [
    "The bank raised the interest rate",
    "  Rates WENT up!  ",
    "Café naïve résumé Ångström",
    "中文 and 🙂 emoji\tand\ttabs\nnewlines",
    "a",
    LONG,
]
LABELS = {0: "negative", 1: "neutral", 2: "positive"}


def _saved_model_cli_show(path):
    cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    shown = subprocess.run([cli, "show", "--dir", str(path), "--all"], capture_output=True, text=True,
                           env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert shown.returncode == 0, shown.stderr[-2000:]
    return shown.stdout


def _cosines(a, b):
    return np.sum(a * b, -1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


@pytest.fixture(scope="module")
def minilm(tmp_path_factory):
    folder = minilm_folder()
    model, tokenizer = tfllm.AutoModel.from_pretrained(folder), tfllm.AutoTokenizer.from_pretrained(folder)
    base = tmp_path_factory.mktemp("minilm") / "minilm"
    path = saved_model(model, tokenizer, base, pooling=sentence_transformers_config(folder))
    return dict(folder=folder, model=model, tokenizer=tokenizer, path=path)


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    folder = tmp_path_factory.mktemp("classifier") / "hf"
    make_hf_model(folder, "BertForSequenceClassification", TINY_BERT, vocab_size=len(TINY_WORDPIECE_VOCAB),
                  num_labels=3, id2label=LABELS, label2id={v: k for k, v in LABELS.items()})
    write_wordpiece_vocab(folder)
    model = tfllm.AutoModelForSequenceClassification.from_pretrained(folder)
    tokenizer = tfllm.AutoTokenizer.from_pretrained(folder)
    path = saved_model(model, tokenizer, folder.parent / "saved_models" / "classifier")
    return dict(folder=folder, model=model, tokenizer=tokenizer, path=path)


# === Encoder: all-MiniLM-L6-v2 ===


@pytest.mark.slow
def test_minilm_embed_equals_sentence_transformers_after_fresh_reload(minilm):
    sentence_transformers = pytest.importorskip("sentence_transformers")
    result = verify.run_in_fresh_process(minilm["path"], {sig.EMBED: {sig.TEXT: TEXTS}})
    got = result[sig.EMBED][sig.EMBEDDINGS]
    reference = sentence_transformers.SentenceTransformer(minilm["folder"], device="cpu").encode(TEXTS)
    assert got.shape == (len(TEXTS), 384)
    assert _cosines(got, reference).min() >= 0.99999
    pipeline = tfllm.pipeline("sentence-embeddings", model=minilm["folder"])(TEXTS, return_tensors=True)
    assert _cosines(got, pipeline).min() >= 0.99999
    np.testing.assert_allclose(got, pipeline, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(got, axis=-1), 1.0, atol=1e-5)  # Normalize, from modules.json


def test_minilm_signatures_ops_and_warmup(minilm):
    shown = _saved_model_cli_show(minilm["path"])
    for signature in sig.saved_model_signatures("backbone"):
        assert f"signature_def['{signature.name}']" in shown
        for tensor in (*signature.inputs, *signature.outputs):
            assert f"['{tensor.name}']" in shown
    assert "signature_def['serving_default']" not in shown
    report = verify.op_report(minilm["path"])
    assert report["forbidden"] == []
    assert "WordpieceTokenizeWithOffsets" in report["ops"]  # the tokenizer really is in the graph
    _assert_warmup(minilm["path"], sig.EMBED, "minilm")


def _assert_warmup(path, signature, name):
    from tensorflow_serving.apis import prediction_log_pb2

    records = list(tf.data.TFRecordDataset(os.path.join(path, sig.WARMUP_FILE)).as_numpy_iterator())
    assert len(records) == 2
    request = prediction_log_pb2.PredictionLog.FromString(records[1]).predict_log.request
    assert request.model_spec.signature_name == signature and request.model_spec.name == name
    assert set(request.inputs) == {sig.TEXT}


# === Sequence classifier ===


@pytest.mark.slow
def test_classify_equals_pipeline_and_keras_after_fresh_reload(classifier):
    texts = ["good movie", "the film was terrible", "Hello, World!", "a big red dog ran in the park " * 4, "x"]
    result = verify.run_in_fresh_process(classifier["path"], {sig.CLASSIFY: {sig.TEXT: texts}, sig.EMBED: {sig.TEXT: texts}})
    scores, labels = result[sig.CLASSIFY][sig.SCORES], list(result[sig.CLASSIFY][sig.LABELS])
    model, tokenizer = classifier["model"], classifier["tokenizer"]
    logits = np.asarray(model(tokenizer(texts, return_tensors="np", padding=True)), np.float64)
    softmax = np.exp(logits - logits.max(-1, keepdims=True))
    softmax /= softmax.sum(-1, keepdims=True)
    np.testing.assert_allclose(scores, softmax, atol=1e-5)
    assert labels == [LABELS[i] for i in softmax.argmax(-1)]
    top1 = tfllm.pipeline("text-classification", model=str(classifier["folder"]))(texts)
    assert labels == [row["label"] for row in top1]
    np.testing.assert_allclose(scores.max(-1), [row["score"] for row in top1], atol=1e-5)
    # embed: the backbone's hidden states, mean-pooled (the default `pooling`).
    batch = tokenizer(texts, return_tensors="np", padding=True)
    mean = pool(model.backbone(batch)["sequence_output"], batch["attention_mask"], ("mean",)).numpy()
    np.testing.assert_allclose(result[sig.EMBED][sig.EMBEDDINGS], mean, atol=1e-5)


def test_classifier_signatures_ops_and_warmup(classifier):
    shown = _saved_model_cli_show(classifier["path"])
    for signature in sig.saved_model_signatures("sequence_classification"):
        assert f"signature_def['{signature.name}']" in shown
        for tensor in (*signature.inputs, *signature.outputs):
            assert f"['{tensor.name}']" in shown
    assert verify.op_report(classifier["path"])["forbidden"] == []
    _assert_warmup(classifier["path"], sig.CLASSIFY, "classifier")


def test_check_saved_model_catches_a_different_classifier(classifier):
    other = tfllm.AutoModelForSequenceClassification.from_pretrained(classifier["folder"])
    other.classifier.bias.assign(other.classifier.bias + np.array([0.0, 0.5, 0.0], np.float32))
    with pytest.raises(verify.ExportVerificationError, match="classify output differs"):
        verify.check_saved_model(classifier["path"], other, classifier["tokenizer"], "sequence_classification",
                                 ["good movie"], 1,
                                 pooling=pooling_config())


# === Arguments and unsupported models ===


@pytest.mark.parametrize("pooling, expected", [
    (None, {"pooling": ("mean",), "normalize": False, "max_seq_length": None, "do_lower_case": False}),
    ("cls", {"pooling": ("cls",), "normalize": False, "max_seq_length": None, "do_lower_case": False}),
    (["mean", "max"], {"pooling": ("mean", "max"), "normalize": False, "max_seq_length": None, "do_lower_case": False}),
    ({"pooling": ("mean",), "normalize": True, "max_seq_length": 128},
     {"pooling": ("mean",), "normalize": True, "max_seq_length": 128, "do_lower_case": False}),
])
def test_pooling_config(pooling, expected):
    assert pooling_config(pooling) == expected


@pytest.mark.parametrize("pooling", ["median", [], {"pooling": ("mean",), "dense": True}, 3])
def test_pooling_config_refuses_what_it_cannot_do(pooling):
    with pytest.raises(ValueError, match=r"Invalid value for argument `pooling`"):
        pooling_config(pooling)


def test_gpt2_backbone_names_the_supported_kinds(tmp_path):
    make_hf_gpt2(tmp_path / "hf", vocab_size=300, n_positions=32)
    backbone = tfllm.AutoModel.from_pretrained(tmp_path / "hf")
    with pytest.raises(NotImplementedError, match=r"GPT2Backbone.*model_type 'gpt2'") as error:
        saved_model(backbone, None, tmp_path / "x")
    for kind in ("causal LMs", "seq2seq LMs", "sequence classifiers", "encoders"):
        assert kind in str(error.value)
    assert not (tmp_path / "x").exists()
