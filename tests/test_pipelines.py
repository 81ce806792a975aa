"""Pipelines against transformers' pipelines on the same folder."""

import pytest

import tfllm
from testing import make_hf_gpt2
from tfllm.tokenizers import train_byte_level_bpe

TEXT = ("The for statement is used to iterate over the elements of a sequence. "
        "A class definition defines a class object. The with statement wraps a block. ") * 20


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    path = tmp_path_factory.mktemp("pipeline_gpt2")
    tokenizer = train_byte_level_bpe([TEXT], vocab_size=300)
    make_hf_gpt2(path, vocab_size=tokenizer.vocab_size, bos_token_id=tokenizer.eos_token_id,
                 eos_token_id=tokenizer.eos_token_id)
    tokenizer.save_pretrained(path)
    return path


def test_text_generation_matches_transformers_pipeline(folder):
    import transformers

    prompts = ["The for statement", "A class"]
    theirs = transformers.pipeline("text-generation", model=str(folder), framework="pt")
    ours = tfllm.pipeline("text-generation", model=folder)
    for prompt in prompts:
        expected = theirs(prompt, max_new_tokens=8, do_sample=False)
        assert len(expected[0]["generated_text"]) > len(prompt)
        assert ours(prompt, max_new_tokens=8) == expected
    batch = ours(prompts, max_new_tokens=8)
    assert [row[0]["generated_text"] for row in batch] == [ours(p, max_new_tokens=8)[0]["generated_text"] for p in prompts]


def test_text_generation_passes_repetition_settings(folder):
    import transformers

    kwargs = dict(max_new_tokens=12, repetition_penalty=1.3, no_repeat_ngram_size=2)
    theirs = transformers.pipeline("text-generation", model=str(folder), framework="pt")
    ours = tfllm.pipeline("text-generation", model=folder)
    expected = theirs("The for statement", do_sample=False, **kwargs)
    assert ours("The for statement", **kwargs) == expected
    assert expected != theirs("The for statement", do_sample=False, max_new_tokens=12)


def test_text_generation_without_full_text(folder):
    generator = tfllm.pipeline("text-generation", model=folder)
    full = generator("The with", max_new_tokens=5)[0]["generated_text"]
    tail = generator("The with", max_new_tokens=5, return_full_text=False)[0]["generated_text"]
    assert full == "The with" + tail


def test_unknown_task_names_the_argument(folder):
    with pytest.raises(ValueError, match="`task`.*text-generation"):
        tfllm.pipeline("summarise-my-day", model=folder)


# --- Encoder pipelines: fill-mask, text-classification, feature-extraction ---------------------------

import json  # noqa: E402

import numpy as np  # noqa: E402

from testing import TINY_BERT, make_hf_model, minilm_folder, write_wordpiece_vocab  # noqa: E402
from tfllm.checkpoints.sentence_config import sentence_transformers_config  # noqa: E402
from tfllm.pipelines import FillMaskPipeline  # noqa: E402

LABELS = {0: "negative", 1: "neutral", 2: "positive"}


def _assert_results_close(ours, theirs, atol=1e-4):
    """Same structure, same labels / tokens / strings, scores within `atol`."""
    if isinstance(theirs, dict):
        assert isinstance(ours, dict) and list(ours) == list(theirs), (ours, theirs)
        for key, value in theirs.items():
            if key == "score":
                assert abs(ours[key] - value) < atol, (ours, theirs)
            else:
                assert ours[key] == value, (ours, theirs)
    else:
        assert isinstance(ours, list) and len(ours) == len(theirs), (ours, theirs)
        for a, b in zip(ours, theirs):
            _assert_results_close(a, b, atol)


def _bert_folder(tmp_path_factory, name, class_name, **overrides):
    path = tmp_path_factory.mktemp(name)
    vocab_size = write_wordpiece_vocab(path)
    make_hf_model(path, class_name, TINY_BERT, vocab_size=vocab_size, **overrides)
    return path


@pytest.fixture(scope="module")
def masked_lm_folder(tmp_path_factory):
    return _bert_folder(tmp_path_factory, "pipeline_bert_mlm", "BertForMaskedLM")


@pytest.fixture(scope="module")
def classifier_folder(tmp_path_factory):
    return _bert_folder(tmp_path_factory, "pipeline_bert_cls", "BertForSequenceClassification", id2label=LABELS)


@pytest.fixture(scope="module")
def fill_mask(masked_lm_folder):
    import transformers

    return (tfllm.pipeline("fill-mask", model=masked_lm_folder),
            transformers.pipeline("fill-mask", model=str(masked_lm_folder), framework="pt"))


@pytest.mark.parametrize("inputs, kwargs", [
    ("the cat sat on the [MASK] .", {}),
    ("hello [MASK]!", {"top_k": 2}),
    (["paris is the [MASK] of france", "a [MASK] dog ran in the park"], {}),
    (["the [MASK] [MASK] house"], {"top_k": 3}),  # a list of one, and two masks
])
def test_fill_mask_matches_transformers_pipeline(fill_mask, inputs, kwargs):
    ours, theirs = fill_mask
    _assert_results_close(ours(inputs, **kwargs), theirs(inputs, **kwargs))


def test_fill_mask_top_k_set_on_the_pipeline(masked_lm_folder, fill_mask):
    predictions = tfllm.pipeline("fill-mask", model=masked_lm_folder, top_k=2)("the [MASK] ran")
    _assert_results_close(predictions, fill_mask[1]("the [MASK] ran", top_k=2))


@pytest.fixture(scope="module")
def classifiers(classifier_folder):
    import transformers

    return (tfllm.pipeline("text-classification", model=classifier_folder),
            transformers.pipeline("text-classification", model=str(classifier_folder), framework="pt"))


@pytest.mark.parametrize("inputs, kwargs", [
    ("a good movie", {}),
    (["a good movie", "a terrible film"], {}),
    ("a good movie", {"top_k": 2}),
    (["a good movie", "a terrible film"], {"top_k": None}),
    ({"text": "a good movie", "text_pair": "i love it"}, {}),
    ([{"text": "good", "text_pair": "bad"}, {"text": "what a day"}, "hello"], {"top_k": 1}),
    ("a good movie", {"function_to_apply": "sigmoid", "top_k": None}),
    ("a good movie", {"function_to_apply": "NONE"}),
])
def test_text_classification_matches_transformers_pipeline(classifiers, inputs, kwargs):
    ours, theirs = classifiers
    _assert_results_close(ours(inputs, **kwargs), theirs(inputs, **kwargs))
    assert {r["label"] for r in np.ravel(ours(inputs, top_k=None))} <= set(LABELS.values())


def test_single_label_classifier_uses_sigmoid(tmp_path_factory):
    import transformers

    folder = _bert_folder(tmp_path_factory, "pipeline_bert_one_label", "BertForSequenceClassification", num_labels=1)
    ours = tfllm.pipeline("sentiment-analysis", model=folder)  # transformers' alias
    theirs = transformers.pipeline("sentiment-analysis", model=str(folder), framework="pt")
    for kwargs in ({}, {"top_k": None}, {"function_to_apply": "softmax"}):
        _assert_results_close(ours(["a good movie", "bad"], **kwargs), theirs(["a good movie", "bad"], **kwargs))
    assert ours("a good movie")[0]["label"] == "LABEL_0"


def test_classifier_keeps_id2label_through_saving(classifier_folder, tmp_path):
    import keras
    import transformers

    model = tfllm.AutoModelForSequenceClassification.from_pretrained(classifier_folder, id2label=LABELS)
    assert model.id2label == LABELS
    model.save_pretrained(tmp_path / "hf")
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert config["id2label"] == {"0": "negative", "1": "neutral", "2": "positive"}
    assert config["label2id"] == {"negative": 0, "neutral": 1, "positive": 2}
    assert transformers.AutoConfig.from_pretrained(tmp_path / "hf").id2label == LABELS
    model.save(tmp_path / "model.keras")
    restored = keras.saving.load_model(tmp_path / "model.keras")
    assert restored.id2label == LABELS
    assert restored.get_config()["id2label"] == model.get_config()["id2label"] == config["id2label"]
    assert "label2id" not in model.get_config()


def test_bad_id2label_is_refused_by_name(classifier_folder):
    with pytest.raises(ValueError, match=r"argument `id2label`\. Expected a dict mapping each index 0\.\.2 .*"
                                         r"Received: id2label=\{0: 'a', 1: 'b'\}"):
        tfllm.AutoModelForSequenceClassification.from_pretrained(classifier_folder, id2label={0: "a", 1: "b"})
    with pytest.raises(ValueError, match="argument `id2label`.*Received: id2label={'x': 'a'}"):
        tfllm.AutoModelForSequenceClassification.from_pretrained(classifier_folder, num_labels=1, id2label={"x": "a"})


SENTENCES = ["The bank raised the interest rate.", "  Rates went up  ", "Café naïve résumé", "x"]


@pytest.fixture(scope="module")
def minilm():
    return minilm_folder()


@pytest.fixture(scope="module")
def extractor(minilm):
    return tfllm.pipeline("feature-extraction", model=minilm)


def test_feature_extraction_matches_transformers_pipeline(minilm, extractor):
    import transformers

    theirs = transformers.pipeline("feature-extraction", model=minilm, framework="pt")
    single = extractor(SENTENCES[0])
    assert np.asarray(single).shape == np.asarray(theirs(SENTENCES[0])).shape == (1, 9, 384)
    for ours, reference in zip(extractor(SENTENCES), theirs(SENTENCES)):
        assert np.abs(np.asarray(ours) - np.asarray(reference)).max() < 1e-4
    tensors = extractor(SENTENCES, return_tensors=True)
    assert [t.shape for t in tensors] == [np.asarray(r).shape for r in theirs(SENTENCES)]


def _cosines(a, b):
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


def test_sentence_embeddings_match_sentence_transformers(minilm, extractor):
    sentence_transformers = pytest.importorskip("sentence_transformers")

    reference = sentence_transformers.SentenceTransformer(minilm, device="cpu").encode(SENTENCES)
    assert sentence_transformers_config(minilm)["pooling"] == ("mean",)
    for embeddings in (tfllm.pipeline("sentence-embeddings", model=minilm)(SENTENCES, return_tensors=True),
                       extractor(SENTENCES, pooling="auto", return_tensors=True)):
        assert embeddings.shape == reference.shape
        assert _cosines(embeddings, reference).min() >= 0.99999
        np.testing.assert_allclose(np.linalg.norm(embeddings, axis=-1), 1.0, atol=1e-5)  # the Normalize module
    single = extractor(SENTENCES[0], pooling="auto")
    assert isinstance(single, list) and len(single) == 384


@pytest.mark.parametrize("mode", ["cls", "max", "mean_sqrt_len_tokens", "lasttoken", ("cls", "mean")])
def test_pooling_modes_match_sentence_transformers(minilm, extractor, mode):
    pytest.importorskip("sentence_transformers")
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Pooling, Transformer

    reference = SentenceTransformer(modules=[Transformer(minilm), Pooling(384, pooling_mode=mode)], device="cpu")
    expected = reference.encode(SENTENCES)
    ours = extractor(SENTENCES, pooling=mode, return_tensors=True)
    assert ours.shape == expected.shape
    assert _cosines(ours, expected).min() >= 0.99999
    unnormalized = np.linalg.norm(ours, axis=-1)
    assert np.abs(unnormalized - np.linalg.norm(expected, axis=-1)).max() < 1e-3 * unnormalized.max()


def test_sentence_transformers_config_variants(tmp_path):
    assert sentence_transformers_config(tmp_path) == {
        "pooling": ("mean",), "normalize": False, "max_seq_length": None, "do_lower_case": False}
    (tmp_path / "1_Pooling").mkdir()
    modules = [{"type": "sentence_transformers.models.Transformer", "path": ""},
               {"type": "sentence_transformers.models.Pooling", "path": "1_Pooling"}]
    (tmp_path / "modules.json").write_text(json.dumps(modules))
    pooling = tmp_path / "1_Pooling" / "config.json"
    pooling.write_text(json.dumps({"pooling_mode_cls_token": True, "pooling_mode_max_tokens": True}))
    assert sentence_transformers_config(tmp_path)["pooling"] == ("cls", "max")
    pooling.write_text(json.dumps({"embedding_dimension": 8, "pooling_mode": "lasttoken"}))
    assert sentence_transformers_config(tmp_path)["pooling"] == ("lasttoken",)
    pooling.write_text(json.dumps({"pooling_mode_weightedmean_tokens": True}))
    with pytest.raises(NotImplementedError, match="weightedmean"):
        sentence_transformers_config(tmp_path)
    pooling.write_text(json.dumps({"pooling_mode": ["mean"]}))
    (tmp_path / "modules.json").write_text(json.dumps(modules + [{"type": "sentence_transformers.models.Dense",
                                                                  "path": "2_Dense"}]))
    with pytest.raises(NotImplementedError, match="Dense.*2_Dense"):
        sentence_transformers_config(tmp_path)


# --- Errors ---------------------------------------------------------------------------------------


def test_fill_mask_input_without_mask_token(fill_mask):
    with pytest.raises(ValueError, match=r"argument `inputs`\. Expected text containing the mask token '\[MASK\]'\. "
                                         r"Received: inputs='no mask here'"):
        fill_mask[0](["the [MASK] ran", "no mask here"])


def test_fill_mask_needs_a_mask_token(folder):
    with pytest.raises(ValueError, match="argument `tokenizer`. Expected a tokenizer with a mask_token"):
        tfllm.pipeline("fill-mask", model=folder)  # a GPT-2 folder


@pytest.mark.parametrize("kwargs, match", [
    ({"top_k": 0}, "argument `top_k`.*Received: top_k=0"),
    ({"batch_size": "8"}, "argument `batch_size`"),
])
def test_fill_mask_bad_arguments(fill_mask, kwargs, match):
    with pytest.raises(ValueError, match=match):
        FillMaskPipeline(fill_mask[0].model, fill_mask[0].tokenizer, **kwargs)


def test_unknown_pooling_mode(extractor):
    with pytest.raises(ValueError, match="argument `pooling`. Expected None, 'auto', one of 'cls'.*"
                                         "Received: pooling='median'"):
        extractor("hello", pooling="median")


def test_bad_classification_arguments(classifiers):
    ours = classifiers[0]
    with pytest.raises(ValueError, match="argument `function_to_apply`.*Received: function_to_apply='relu'"):
        ours("good", function_to_apply="relu")
    with pytest.raises(ValueError, match="argument `top_k`.*Received: top_k=-1"):
        ours("good", top_k=-1)
    with pytest.raises(ValueError, match="argument `inputs`.*Received: inputs=\\[3\\]"):
        ours([3])
    with pytest.raises(ValueError, match="argument `inputs`.*Received: inputs=\\{'txt': 'a'\\}"):
        ours({"txt": "a"})


def test_missing_folder_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="no_such_model"):
        tfllm.pipeline("feature-extraction", model=tmp_path / "no_such_model")
