"""BERT against transformers: tiny random models with padding and token types, saving, refusals."""

import logging

import keras
import numpy as np
import pytest
import torch
import transformers

import tfllm
from testing import edited_copy
from tfllm.checkpoints import CheckpointError
from tfllm.models.bert import BertBackbone, BertMaskedLM, BertSequenceClassification

TINY_BERT = dict(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
                 max_position_embeddings=40, type_vocab_size=2, hidden_dropout_prob=0.0,
                 attention_probs_dropout_prob=0.0, num_labels=3)
# Right padding, as BERT tokenizers pad; the second row has two segments.
IDS = np.array([[2, 15, 61, 7, 44, 3], [2, 9, 3, 30, 3, 0], [2, 71, 3, 0, 0, 0]])
MASK = (IDS > 0).astype(np.int64)
TYPES = np.array([[0, 0, 0, 0, 0, 0], [0, 0, 0, 1, 1, 0], [0, 0, 0, 0, 0, 0]])
BATCH = {"input_ids": IDS, "attention_mask": MASK, "token_type_ids": TYPES}
HF_CLASSES = {"backbone": "BertModel", "masked_lm": "BertForMaskedLM",
              "sequence_classification": "BertForSequenceClassification"}


def _hf_outputs(hf_model):
    with torch.no_grad():
        return hf_model(**{k: torch.tensor(v) for k, v in BATCH.items()})


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """Random transformers BertModel / BertForMaskedLM / BertForSequenceClassification folders and outputs."""
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


def test_masked_lm_logits_match_transformers(reference):
    model = tfllm.AutoModelForMaskedLM.from_pretrained(reference["root"] / "masked_lm")
    assert isinstance(model, BertMaskedLM)
    logits = model(BATCH)
    assert logits.shape == (3, 6, TINY_BERT["vocab_size"])
    assert _masked_diff(logits, reference["masked_lm"]["outputs"].logits) < 1e-4


def test_sequence_classification_logits_match_transformers(reference):
    model = tfllm.AutoModelForSequenceClassification.from_pretrained(reference["root"] / "sequence_classification")
    assert isinstance(model, BertSequenceClassification) and model.num_labels == 3
    theirs = reference["sequence_classification"]["outputs"].logits.numpy()
    np.testing.assert_allclose(model(BATCH), theirs, atol=1e-4)


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


@pytest.mark.parametrize("task", ["backbone", "masked_lm", "sequence_classification"])
def test_save_pretrained_loads_in_transformers_with_same_outputs(reference, task, tmp_path):
    auto = {"backbone": tfllm.AutoModel, "masked_lm": tfllm.AutoModelForMaskedLM,
            "sequence_classification": tfllm.AutoModelForSequenceClassification}[task]
    auto.from_pretrained(reference["root"] / task).save_pretrained(tmp_path)
    reloaded = getattr(transformers, HF_CLASSES[task]).from_pretrained(tmp_path).eval()
    ours, theirs = _hf_outputs(reloaded), reference[task]["outputs"]
    if task == "backbone":
        assert _masked_diff(ours.last_hidden_state, theirs.last_hidden_state) < 1e-5
        np.testing.assert_allclose(ours.pooler_output, theirs.pooler_output, atol=1e-5)
    elif task == "masked_lm":
        assert _masked_diff(ours.logits, theirs.logits) < 1e-5
    else:
        np.testing.assert_allclose(ours.logits, theirs.logits, atol=1e-5)


@pytest.mark.parametrize("task", ["masked_lm", "sequence_classification"])
def test_keras_serialization_round_trip(reference, task, tmp_path):
    auto = tfllm.AutoModelForMaskedLM if task == "masked_lm" else tfllm.AutoModelForSequenceClassification
    model = auto.from_pretrained(reference["root"] / task)
    model.save(tmp_path / "model.keras")
    restored = keras.saving.load_model(tmp_path / "model.keras")
    assert type(restored) is type(model)
    np.testing.assert_allclose(model(BATCH), restored(BATCH), atol=1e-6)


def test_classifier_fit_lowers_the_loss(reference):
    model = tfllm.AutoModelForSequenceClassification.from_pretrained(reference["root"] / "sequence_classification")
    model.compile(optimizer=keras.optimizers.Adam(1e-2),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    labels = np.array([0, 1, 2])
    history = model.fit(BATCH, labels, epochs=20, batch_size=3, verbose=0)
    assert history.history["loss"][-1] < 0.5 * history.history["loss"][0]


def test_masked_lm_fit_lowers_the_loss(reference):
    model = tfllm.AutoModelForMaskedLM.from_pretrained(reference["root"] / "masked_lm")
    model.compile(optimizer=keras.optimizers.Adam(1e-2),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    history = model.fit(BATCH, IDS, epochs=10, batch_size=3, verbose=0)  # reconstruct every token
    assert history.history["loss"][-1] < 0.5 * history.history["loss"][0]


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
