"""RoBERTa's own behaviour: the base model and positions that skip pads, refusals, sizes, the tokenizer.
The masked LM and the classifier against transformers: the family harness (tests/models/test_families.py)."""

import numpy as np
import pytest
import tensorflow as tf
import transformers

import tfllm
from testing import TINY_ROBERTA, assert_tokenizer_matches_transformers, edited_copy, hf_outputs, make_hf_model
from tfllm.models import auto
from tfllm.tokenizers import in_graph

ATOL = 1e-4


@pytest.fixture(scope="module")
def masked_lm(tmp_path_factory):
    folder = tmp_path_factory.mktemp("roberta") / "masked_lm"
    return folder, make_hf_model(folder, "RobertaForMaskedLM", TINY_ROBERTA)


def test_left_padding_gives_transformers_positions(masked_lm):
    """Position ids skip pads wherever they are, so left padding gives the logits of right padding."""
    folder, hf_model = masked_lm
    ids = np.array([[1, 1, 0, 71, 2], [0, 15, 61, 7, 2]])
    batch = {"input_ids": ids, "attention_mask": (ids != 1).astype(np.int64)}
    theirs = hf_outputs(hf_model, batch).logits.numpy()
    model = tfllm.AutoModelForMaskedLM.from_pretrained(folder)
    np.testing.assert_array_equal(model.backbone.position_ids(ids), [[1, 1, 2, 3, 4], [2, 3, 4, 5, 6]])
    diff = np.abs(np.asarray(model(batch)) - theirs) * batch["attention_mask"][:, :, None]
    assert diff.max() < ATOL


def test_base_model_matches_transformers_and_counts_its_parameters(tmp_path):
    hf_model = make_hf_model(tmp_path, "RobertaModel", TINY_ROBERTA)
    ids = np.array([[0, 15, 61, 7, 2], [0, 9, 2, 1, 1]])
    batch = {"input_ids": ids, "attention_mask": (ids != 1).astype(np.int64)}
    theirs = hf_outputs(hf_model, batch)
    backbone = tfllm.AutoModel.from_pretrained(tmp_path)
    outputs = backbone(batch)
    mask = batch["attention_mask"][:, :, None]
    assert np.abs((np.asarray(outputs["last_hidden_state"]) - theirs.last_hidden_state.numpy()) * mask).max() < ATOL
    np.testing.assert_allclose(outputs["pooled_output"], theirs.pooler_output.numpy(), atol=ATOL)
    backbone_kwargs, _ = auto.get_family("roberta").config_from_hf(hf_model.config.to_dict())
    assert sum(auto.get_family("roberta").parameter_terms(backbone_kwargs).values()) == hf_model.num_parameters()


@pytest.mark.parametrize("option, value", [("position_embedding_type", "relative_key"), ("is_decoder", True),
                                           ("hidden_act", "mish"), ("tie_word_embeddings", False)])
def test_unsupported_option_raises_not_implemented_naming_it(masked_lm, tmp_path, option, value):
    folder = edited_copy(masked_lm[0], tmp_path / "copy", **{option: value})
    with pytest.raises(NotImplementedError, match=rf"RoBERTa config option `{option}"):
        tfllm.AutoModelForMaskedLM.from_pretrained(folder)


TEXTS = ["Hello world, the cat sat.", "The <mask> is big", "a"]


@pytest.fixture(scope="module")
def tokenizers(tmp_path_factory):
    """A tiny RobertaTokenizerFast (byte-level BPE trained here) saved by transformers, and its folder."""
    from tokenizers import ByteLevelBPETokenizer

    folder = tmp_path_factory.mktemp("roberta_tokenizer")
    trainer = ByteLevelBPETokenizer()
    trainer.train_from_iterator(TEXTS * 20, vocab_size=300, special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    trainer.save_model(str(folder))
    hf = transformers.RobertaTokenizerFast(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=8)
    hf.save_pretrained(folder / "tokenizer")
    return folder / "tokenizer", hf


def test_tokenizer_gives_transformers_ids(tokenizers):
    assert_tokenizer_matches_transformers(*tokenizers, TEXTS)


def test_in_graph_encode_gives_transformers_ids(tokenizers):
    """What the SavedModel's `embed` and `classify` signatures feed the model: `<s> … </s>`, truncated, padded."""
    folder, hf = tokenizers
    texts = ["Hello world, the cat sat.", "The cat is big", "a"]  # not `<mask>`: its lstrip is not in-graph
    codec = in_graph.from_tokenizer(tfllm.AutoTokenizer.from_pretrained(folder))
    ids, mask = tf.function(codec.encode)(tf.constant(texts))  # a graph, as in the SavedModel
    theirs = hf(texts, padding=True, truncation=True, return_tensors="np")
    np.testing.assert_array_equal(ids, theirs["input_ids"])
    np.testing.assert_array_equal(mask, theirs["attention_mask"])
