"""RoBERTa and DistilBERT through everything built on the model contract: SavedModel, TFLite and ONNX
exports, the fill-mask / text-classification / feature-extraction pipelines against transformers',
`tfllm serve` on the exported SavedModel, and `tfllm train --task classification`.

Nothing outside `tfllm/models/` knows these families: each works through the model contract
(`task`, `is_encoder`, `export_formats`) alone.
"""

import json
import socket

import numpy as np
import pytest
import tensorflow as tf
import transformers

import tfllm
from test_pipelines import _assert_results_close
from testing import TINY_DISTILBERT, TINY_ROBERTA, make_hf_model, write_corpus, write_wordpiece_vocab
from tfllm import cli
from tfllm.export import signatures as sig
from tfllm.export.steps import keras_forward

FAMILIES = ["roberta", "distilbert"]
LABELS = {0: "negative", 1: "neutral", 2: "positive"}
TEXTS = ["a good movie", "the cat sat on the mat", "terrible film, i hate it", "x"]
MASKED = {"roberta": "the cat sat on the<mask>.", "distilbert": "the cat sat on the [MASK]."}


def _roberta_tokenizer(folder):
    from tokenizers import ByteLevelBPETokenizer

    corpus = write_corpus(folder.parent / "corpus.txt")
    trainer = ByteLevelBPETokenizer()
    trainer.train([corpus], vocab_size=300, special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    trainer.save_model(str(folder.parent))
    return transformers.RobertaTokenizerFast(str(folder.parent / "vocab.json"), str(folder.parent / "merges.txt"),
                                             model_max_length=32)


def _distilbert_tokenizer(folder):
    write_wordpiece_vocab(folder.parent / "wordpiece")
    return transformers.DistilBertTokenizerFast(str(folder.parent / "wordpiece" / "vocab.txt"), model_max_length=32)


def _family_folders(root, family):
    """`{"masked_lm": folder, "sequence_classification": folder}` of random transformers models with a tokenizer."""
    root.mkdir()
    tokenizer = {"roberta": _roberta_tokenizer, "distilbert": _distilbert_tokenizer}[family](root / "tokenizer")
    tiny = {"roberta": TINY_ROBERTA, "distilbert": TINY_DISTILBERT}[family]
    prefix = {"roberta": "Roberta", "distilbert": "DistilBert"}[family]
    folders = {}
    for task, head, extra in (("masked_lm", "ForMaskedLM", {}),
                              ("sequence_classification", "ForSequenceClassification", {"id2label": LABELS})):
        folders[task] = root / task
        make_hf_model(folders[task], prefix + head, tiny, vocab_size=len(tokenizer), **extra)
        tokenizer.save_pretrained(folders[task])
    return folders


@pytest.fixture(scope="module", params=FAMILIES)
def family(request, tmp_path_factory):
    folders = _family_folders(tmp_path_factory.mktemp("encoders") / request.param, request.param)
    return dict(name=request.param, folders=folders,
                tokenizer=tfllm.AutoTokenizer.from_pretrained(folders["masked_lm"]),
                masked_lm=tfllm.AutoModelForMaskedLM.from_pretrained(folders["masked_lm"]),
                classifier=tfllm.AutoModelForSequenceClassification.from_pretrained(folders["sequence_classification"]),
                backbone=tfllm.AutoModel.from_pretrained(folders["sequence_classification"]))


# === Pipelines: transformers' results ===


def test_fill_mask_matches_transformers(family):
    folder = str(family["folders"]["masked_lm"])
    ours = tfllm.pipeline("fill-mask", model=folder)(MASKED[family["name"]], top_k=3)
    theirs = transformers.pipeline("fill-mask", model=folder, framework="pt")(MASKED[family["name"]], top_k=3)
    _assert_results_close(ours, theirs)


def test_text_classification_matches_transformers(family):
    folder = str(family["folders"]["sequence_classification"])
    ours = tfllm.pipeline("text-classification", model=folder)(TEXTS, top_k=None)
    theirs = transformers.pipeline("text-classification", model=folder, framework="pt")(TEXTS, top_k=None)
    _assert_results_close(ours, theirs)


def test_feature_extraction_matches_transformers(family):
    folder = str(family["folders"]["masked_lm"])
    ours = tfllm.pipeline("feature-extraction", model=folder)(TEXTS)
    theirs = transformers.pipeline("feature-extraction", model=folder, framework="pt")(TEXTS)
    for a, b in zip(ours, theirs):
        assert np.asarray(a).shape == np.asarray(b).shape
        assert np.abs(np.asarray(a) - np.asarray(b)).max() < 1e-4


# === Exports ===


def _batch(family):
    return family["tokenizer"](TEXTS[:2], return_tensors="np", padding="max_length", max_length=12, truncation=True)


@pytest.fixture(scope="module")
def exported_classifier(family, tmp_path_factory):
    base = tmp_path_factory.mktemp(f"{family['name']}_saved_models") / "classifier"
    return base, tfllm.export.saved_model(family["classifier"], family["tokenizer"], base)


def _softmax(logits):
    logits = np.asarray(logits, np.float64)
    scores = np.exp(logits - logits.max(-1, keepdims=True))
    return scores / scores.sum(-1, keepdims=True)


def test_saved_model_embeds_as_keras(family, tmp_path):
    path = tfllm.export.saved_model(family["backbone"], family["tokenizer"], tmp_path / "encoder")
    embeddings = tf.saved_model.load(str(path)).signatures[sig.EMBED](**{sig.TEXT: tf.constant(TEXTS)})
    batch = family["tokenizer"](TEXTS, return_tensors="np", padding=True)
    hidden, mask = family["backbone"](batch)["last_hidden_state"], batch["attention_mask"][:, :, None]
    mean = np.sum(np.asarray(hidden) * mask, axis=1) / mask.sum(axis=1)
    np.testing.assert_allclose(embeddings[sig.EMBEDDINGS], mean, atol=1e-5)


def test_saved_model_classifies_as_keras(family, exported_classifier):
    loaded = tf.saved_model.load(str(exported_classifier[1]))
    scores = loaded.signatures[sig.CLASSIFY](**{sig.TEXT: tf.constant(TEXTS)})[sig.SCORES].numpy()
    expected = _softmax(family["classifier"](family["tokenizer"](TEXTS, return_tensors="np", padding=True)))
    np.testing.assert_allclose(scores, expected, atol=1e-5)


@pytest.mark.parametrize("task", ["backbone", "masked_lm", "classifier"])
def test_tflite_matches_keras(family, task, tmp_path):
    from ai_edge_litert.interpreter import Interpreter

    model, batch = family[task], _batch(family)
    path = tfllm.export.tflite(model, tmp_path / "model.tflite", sequence_length=12, batch_size=2)
    ids, mask = batch["input_ids"].astype(np.int32), batch["attention_mask"].astype(np.int32)
    outputs = Interpreter(model_path=path).get_signature_runner(sig.ENCODE)(input_ids=ids, attention_mask=mask)
    for name, value in keras_forward(model, ids, mask).items():
        np.testing.assert_allclose(outputs[name], value, atol=1e-4)


@pytest.mark.parametrize("task", ["backbone", "masked_lm", "classifier"])
def test_onnx_matches_keras(family, task, tmp_path):
    import onnxruntime

    model, batch = family[task], _batch(family)
    path = tfllm.export.onnx(model, tmp_path / "onnx")
    session = onnxruntime.InferenceSession(f"{path}/{sig.onnx_file(sig.ENCODE)}", providers=["CPUExecutionProvider"])
    ids, mask = batch["input_ids"].astype(np.int32), batch["attention_mask"].astype(np.int32)
    outputs = dict(zip([o.name for o in session.get_outputs()],
                       session.run(None, {sig.INPUT_IDS: ids, sig.ATTENTION_MASK: mask})))
    for name, value in keras_forward(model, ids, mask).items():
        np.testing.assert_allclose(outputs[name], value, atol=1e-4)


# === tfllm serve, tfllm train ===


def _free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_tfllm_serve_serves_the_exported_classifier(family, exported_classifier):
    from tfllm.serving import Client
    from tfllm.serving.server.app import ServerApp
    from tfllm.serving.server.options import ServerOptions

    options = ServerOptions(port=_free_port(), grpc_bind_host="127.0.0.1", rest_api_port=_free_port(),
                            rest_api_host="127.0.0.1",
                            model_name="classifier", model_base_path=str(exported_classifier[0]))
    app = ServerApp(options).start()
    try:
        with Client(f"127.0.0.1:{app.grpc_port}") as client:
            scores = client.predict("classifier", {sig.TEXT: TEXTS}, signature=sig.CLASSIFY)[sig.SCORES]
    finally:
        app.stop(grace_seconds=5)
    expected = _softmax(family["classifier"](family["tokenizer"](TEXTS, return_tensors="np", padding=True)))
    np.testing.assert_allclose(scores, expected, atol=1e-5)


def test_tfllm_train_classification_runs(family, tmp_path):
    rows = [{"text": text, "label": i % 3} for i, text in enumerate(TEXTS * 4)]
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    output = tmp_path / "trained"
    code = cli.main(["train", "--task", "classification", "--model", str(family["folders"]["sequence_classification"]),
                     "--data", str(data), "--output", str(output), "--epochs", "1", "--batch-size", "2",
                     "--seq-len", "16", "--progress", "none"])
    assert code == 0
    trained = tfllm.AutoModelForSequenceClassification.from_pretrained(output)
    assert type(trained) is type(family["classifier"]) and trained.id2label == LABELS
