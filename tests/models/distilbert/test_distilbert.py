"""DistilBERT's own behaviour: the base model without token types or pooler, refusals, sizes, the tokenizer.
The masked LM and the classifier against transformers: the family harness (tests/models/test_families.py)."""

import numpy as np
import pytest
import transformers

import tfllm
from testing import (
    TINY_DISTILBERT, assert_tokenizer_matches_transformers, edited_copy, hf_outputs, make_hf_model,
    write_wordpiece_vocab,
)
from tfllm.models import auto
from tfllm.models.distilbert import DistilBertBackbone


@pytest.fixture(scope="module")
def masked_lm_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("distilbert") / "masked_lm"
    make_hf_model(folder, "DistilBertForMaskedLM", TINY_DISTILBERT)
    return folder


def test_backbone_has_no_token_types_and_no_pooler():
    backbone = DistilBertBackbone(vocabulary_size=20, num_layers=1, num_heads=2, hidden_dim=8, intermediate_dim=16)
    outputs = backbone({"input_ids": np.array([[2, 5, 3]]), "token_type_ids": np.array([[0, 1, 1]])})
    assert not hasattr(backbone, "token_type_embedding") and not hasattr(backbone, "pooler")
    assert "pooled_output" not in outputs
    assert "type_vocabulary_size" not in backbone.get_config()
    np.testing.assert_array_equal(outputs["last_hidden_state"], backbone(np.array([[2, 5, 3]]))["last_hidden_state"])


def test_base_model_matches_transformers_and_counts_its_parameters(tmp_path):
    hf_model = make_hf_model(tmp_path, "DistilBertModel", TINY_DISTILBERT)
    ids = np.array([[2, 15, 61, 7, 3], [2, 9, 3, 0, 0]])
    batch = {"input_ids": ids, "attention_mask": (ids != 0).astype(np.int64)}
    theirs = hf_outputs(hf_model, batch).last_hidden_state.numpy()
    ours = np.asarray(tfllm.AutoModel.from_pretrained(tmp_path)(batch)["last_hidden_state"])
    assert np.abs((ours - theirs) * batch["attention_mask"][:, :, None]).max() < 1e-4
    backbone_kwargs, _ = auto.get_family("distilbert").config_from_hf(hf_model.config.to_dict())
    assert sum(auto.get_family("distilbert").parameter_terms(backbone_kwargs).values()) == hf_model.num_parameters()


@pytest.mark.parametrize("option, value", [("sinusoidal_pos_embds", True), ("activation", "mish"),
                                           ("tie_word_embeddings", False)])
def test_unsupported_option_raises_not_implemented_naming_it(masked_lm_folder, tmp_path, option, value):
    folder = edited_copy(masked_lm_folder, tmp_path / "copy", **{option: value})
    with pytest.raises(NotImplementedError, match=rf"DistilBERT config option `{option}"):
        tfllm.AutoModelForMaskedLM.from_pretrained(folder)


def test_tokenizer_gives_transformers_ids(tmp_path):
    write_wordpiece_vocab(tmp_path / "vocab")
    hf = transformers.DistilBertTokenizerFast(str(tmp_path / "vocab" / "vocab.txt"))
    hf.save_pretrained(tmp_path / "tokenizer")
    assert_tokenizer_matches_transformers(tmp_path / "tokenizer", hf, ["The cat sat.", "Paris is the [MASK]!", "a"])
