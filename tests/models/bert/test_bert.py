"""BERT beyond the family harness (tests/models/test_families.py): the backbone with padding and token
types, heads missing from a checkpoint, saving the backbone, refusals."""

import logging

import numpy as np
import pytest
import torch
import transformers

import tfllm
from testing import edited_copy
from tfllm.checkpoints import CheckpointError
from tfllm.models.bert import BertBackbone, BertSequenceClassification

TINY_BERT = dict(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
                 max_position_embeddings=40, type_vocab_size=2, hidden_dropout_prob=0.0,
                 attention_probs_dropout_prob=0.0, num_labels=3)
# Right padding, as BERT tokenizers pad; the second row has two segments.
IDS = np.array([[2, 15, 61, 7, 44, 3], [2, 9, 3, 30, 3, 0], [2, 71, 3, 0, 0, 0]])
MASK = (IDS > 0).astype(np.int64)
TYPES = np.array([[0, 0, 0, 0, 0, 0], [0, 0, 0, 1, 1, 0], [0, 0, 0, 0, 0, 0]])
BATCH = {"input_ids": IDS, "attention_mask": MASK, "token_type_ids": TYPES}
HF_CLASSES = {"backbone": "BertModel", "masked_lm": "BertForMaskedLM"}


def _hf_outputs(hf_model):
    with torch.no_grad():
        return hf_model(**{k: torch.tensor(v) for k, v in BATCH.items()})


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """Random transformers BertModel / BertForMaskedLM folders and outputs."""
    root = tmp_path_factory.mktemp("bert")
    config = transformers.BertConfig(**TINY_BERT)
    out = {"root": root}
    for task, name in HF_CLASSES.items():
        torch.manual_seed(0)
        hf_model = getattr(transformers, name)(config).eval()
        hf_model.save_pretrained(root / task)
        out[task] = dict(model=hf_model, outputs=_hf_outputs(hf_model))
    return out


def _masked_diff(ours, theirs):
    return np.abs((np.asarray(ours) - np.asarray(theirs)) * MASK[:, :, None]).max()


def test_backbone_matches_transformers_with_padding_and_token_types(reference):
    backbone = tfllm.AutoModel.from_pretrained(reference["root"] / "backbone")
    assert isinstance(backbone, BertBackbone)
    ours = backbone(BATCH)
    theirs = reference["backbone"]["outputs"]
    assert _masked_diff(ours["sequence_output"], theirs.last_hidden_state) < 1e-4
    np.testing.assert_allclose(ours["pooled_output"], theirs.pooler_output.numpy(), atol=1e-4)


def test_padding_does_not_change_real_positions(reference):
    backbone = BertBackbone.from_pretrained(reference["root"] / "backbone")
    batched = backbone(BATCH)["sequence_output"].numpy()
    for row in range(len(IDS)):
        real = MASK[row] == 1
        alone = backbone({"input_ids": IDS[row][real][None], "token_type_ids": TYPES[row][real][None]})
        np.testing.assert_allclose(batched[row][real], alone["sequence_output"][0], atol=1e-5)


def test_classifier_missing_from_checkpoint_is_initialised_with_a_warning(reference, caplog):
    with caplog.at_level(logging.WARNING, logger="tfllm.models.pretrained"):
        model = tfllm.AutoModelForSequenceClassification.from_pretrained(reference["root"] / "backbone", num_labels=5)
    assert "classifier.weight" in caplog.text and "classifier.bias" in caplog.text
    assert model(BATCH).shape == (3, 5)
    theirs = reference["backbone"]["outputs"].pooler_output.numpy()
    np.testing.assert_allclose(model.backbone(BATCH)["pooled_output"], theirs, atol=1e-4)


def test_backbone_from_masked_lm_checkpoint_warns_about_the_pooler(reference, caplog):
    with caplog.at_level(logging.WARNING, logger="tfllm.models.pretrained"):
        backbone = tfllm.AutoModel.from_pretrained(reference["root"] / "masked_lm")
    assert "pooler.dense.weight" in caplog.text
    theirs = reference["masked_lm"]["model"].bert(**{k: torch.tensor(v) for k, v in BATCH.items()})
    assert _masked_diff(backbone(BATCH)["sequence_output"], theirs.last_hidden_state.detach()) < 1e-4


def test_backbone_save_pretrained_loads_in_transformers_with_same_outputs(reference, tmp_path):
    tfllm.AutoModel.from_pretrained(reference["root"] / "backbone").save_pretrained(tmp_path)
    reloaded = transformers.BertModel.from_pretrained(tmp_path).eval()
    ours, theirs = _hf_outputs(reloaded), reference["backbone"]["outputs"]
    assert _masked_diff(ours.last_hidden_state, theirs.last_hidden_state) < 1e-5
    np.testing.assert_allclose(ours.pooler_output, theirs.pooler_output, atol=1e-5)


# --- Refusals -------------------------------------------------------------------------------------


def _edited_copy(reference, tmp_path, **changes):
    return edited_copy(reference["root"] / "backbone", tmp_path / "copy", **changes)


@pytest.mark.parametrize("option, value", [("position_embedding_type", "relative_key"), ("is_decoder", True),
                                           ("hidden_act", "mish")])
def test_unsupported_option_raises_not_implemented_naming_it(reference, tmp_path, option, value):
    with pytest.raises(NotImplementedError, match=option):
        tfllm.AutoModel.from_pretrained(_edited_copy(reference, tmp_path, **{option: value}))


def test_shape_mismatch_is_refused_naming_the_key(reference, tmp_path):
    folder = _edited_copy(reference, tmp_path, intermediate_size=48)
    with pytest.raises(CheckpointError, match=r"encoder\.layer\.0\.intermediate\.dense\.weight"):
        tfllm.AutoModel.from_pretrained(folder)


def test_masked_lm_head_missing_is_refused(reference):
    with pytest.raises(CheckpointError, match=r"cls\.predictions\.bias"):
        tfllm.AutoModelForMaskedLM.from_pretrained(reference["root"] / "backbone")


def test_bad_num_labels_is_refused_by_name(reference):
    backbone = BertBackbone.from_pretrained(reference["root"] / "backbone")
    with pytest.raises(ValueError, match="`num_labels`"):
        BertSequenceClassification(backbone, num_labels=0)
