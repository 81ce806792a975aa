"""`inspect` (task models) and `output_attentions` / `output_hidden_states` (backbones) against transformers."""

import os

import keras
import numpy as np
import pytest
import torch

import tfllm
from testing import TINY_BERT, TINY_GPT2, TINY_LLAMA, hf_position_ids, left_padded_batch, make_hf_model

# family -> (transformers class, tiny config, overrides, tfllm loader)
FAMILIES = {
    "gpt2": ("GPT2LMHeadModel", TINY_GPT2, {}, tfllm.AutoModelForCausalLM),
    "llama": ("LlamaForCausalLM", TINY_LLAMA, dict(tie_word_embeddings=False), tfllm.AutoModelForCausalLM),
    "bert": ("BertForMaskedLM", TINY_BERT, {}, tfllm.AutoModelForMaskedLM),
}
# BERT pads on the right and has token types; the second row has two segments.
BERT_IDS = np.array([[2, 15, 61, 7, 44, 3], [2, 9, 3, 30, 3, 0], [2, 71, 3, 0, 0, 0]])
BERT_TYPES = np.array([[0, 0, 0, 0, 0, 0], [0, 0, 0, 1, 1, 0], [0, 0, 0, 0, 0, 0]])
FLAGS = dict(output_attentions=True, output_hidden_states=True)


def _batch(family):
    if family == "bert":
        return {"input_ids": BERT_IDS, "attention_mask": (BERT_IDS > 0).astype(np.int64), "token_type_ids": BERT_TYPES}
    ids, mask = left_padded_batch()
    return {"input_ids": ids, "attention_mask": mask}


def _hf_outputs(hf_model, family, batch):
    inputs = {key: torch.tensor(value) for key, value in batch.items()}
    if family != "bert":  # the position ids tfllm derives from the mask (see README)
        inputs["position_ids"] = torch.tensor(hf_position_ids(batch["attention_mask"]))
    with torch.no_grad():
        return hf_model(**inputs, **FLAGS)


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def reference(request, tmp_path_factory):
    family = request.param
    class_name, tiny, overrides, loader = FAMILIES[family]
    folder = tmp_path_factory.mktemp(family)
    hf_model = make_hf_model(folder, class_name, tiny, **overrides)
    batch = _batch(family)
    return dict(family=family, folder=folder, batch=batch, hf=_hf_outputs(hf_model, family, batch),
                model=loader.from_pretrained(folder), num_layers=hf_model.config.num_hidden_layers,
                num_heads=hf_model.config.num_attention_heads)


def _attention_diff(ours, theirs, mask):
    """Largest difference over real query rows (padded keys carry probability 0 in both)."""
    return np.abs((np.asarray(ours) - theirs.numpy()) * mask[:, None, :, None]).max()


def _hidden_diff(ours, theirs, mask):
    return np.abs((np.asarray(ours) - theirs.numpy()) * mask[:, :, None]).max()


def assert_matches_transformers(outputs, reference):
    """Every attention map and hidden state within 1e-4 of transformers' over real positions."""
    hf = reference["hf"]
    assert len(outputs["attentions"]) == reference["num_layers"]
    assert_stack_matches(outputs["attentions"], outputs["hidden_states"], hf.attentions, hf.hidden_states,
                         reference["batch"]["attention_mask"], reference["num_heads"])


def assert_stack_matches(attentions, hidden_states, hf_attentions, hf_hidden_states, mask, num_heads):
    """One stack's attention maps and hidden states against transformers', over the real query rows of `mask`."""
    length = mask.shape[1]
    assert isinstance(attentions, tuple) and len(attentions) == len(hf_attentions)
    assert isinstance(hidden_states, tuple)
    assert len(hidden_states) == len(attentions) + 1 == len(hf_hidden_states)
    for ours, theirs in zip(attentions, hf_attentions):
        assert tuple(ours.shape) == (len(mask), num_heads, length, length) == tuple(theirs.shape)
        assert _attention_diff(ours, theirs, mask) < 1e-4
        rows = np.asarray(ours).sum(-1)[mask.astype(bool)[:, None, :].repeat(num_heads, 1)]
        np.testing.assert_allclose(rows, 1.0, atol=1e-5)
    for ours, theirs in zip(hidden_states, hf_hidden_states):
        assert _hidden_diff(ours, theirs, mask) < 1e-4


def test_task_model_matches_transformers(reference):
    model = reference["model"]
    outputs = model.inspect(reference["batch"], **FLAGS)
    assert set(outputs) == {"logits", "hidden_states", "attentions"}
    assert_matches_transformers(outputs, reference)
    assert _hidden_diff(outputs["logits"], reference["hf"].logits, reference["batch"]["attention_mask"]) < 1e-4


def test_backbone_matches_transformers(reference):
    backbone = reference["model"].backbone
    outputs = backbone(reference["batch"], **FLAGS)
    assert_matches_transformers(outputs, reference)
    pooled = {"sequence_output", "pooled_output"} if reference["family"] == "bert" else set()
    assert set(outputs) == {"last_hidden_state", "hidden_states", "attentions"} | pooled
    # transformers' convention: the last hidden state is the final output (after GPT-2's / Llama's final norm).
    np.testing.assert_array_equal(outputs["hidden_states"][-1], outputs["last_hidden_state"])


def test_backbone_from_auto_model_returns_the_flags(reference):
    backbone = tfllm.AutoModel.from_pretrained(reference["folder"])
    outputs = backbone(reference["batch"], output_attentions=True)
    assert "attentions" in outputs and "hidden_states" not in outputs
    assert_close_nested(outputs["attentions"], reference["model"].backbone(reference["batch"], **FLAGS)["attentions"])


def test_outputs_have_one_type_whatever_the_flags(reference):
    model, batch = reference["model"], reference["batch"]
    logits = model(batch)
    assert not isinstance(logits, dict)
    np.testing.assert_array_equal(logits, model.inspect(batch, **FLAGS)["logits"])
    assert set(model.inspect(batch)) == {"logits"}
    assert set(model.inspect(batch, output_hidden_states=True)) == {"logits", "hidden_states"}
    assert set(model.inspect(batch, output_attentions=True)) == {"logits", "attentions"}
    plain = model.backbone(batch)
    if reference["family"] == "bert":
        assert set(plain) == {"last_hidden_state", "sequence_output", "pooled_output"}
        assert plain["sequence_output"] is plain["last_hidden_state"]
    else:
        assert set(plain) == {"last_hidden_state"}


def test_task_call_takes_no_inspection_flags(reference):
    with pytest.raises(TypeError, match="output_attentions"):
        reference["model"](reference["batch"], output_attentions=True)


def test_keras_round_trip_keeps_the_flags(reference, tmp_path):
    model, batch = reference["model"], reference["batch"]
    path = os.path.join(tmp_path, "model.keras")
    model.save(path)
    restored = keras.saving.load_model(path)
    assert type(restored) is type(model)
    np.testing.assert_allclose(restored(batch), model(batch), atol=1e-6)
    assert_close_nested(restored.inspect(batch, **FLAGS), model.inspect(batch, **FLAGS))


def test_causal_lm_fit_is_unaffected(tmp_path):
    model = tfllm.AutoModelForCausalLM.from_pretrained(make_folder(tmp_path, "gpt2"))
    ids = np.random.default_rng(0).integers(0, 90, (4, 9))
    model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    history = model.fit(ids[:, :-1], ids[:, 1:], batch_size=2, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert set(model.inspect(ids, output_attentions=True)) == {"logits", "attentions"}


@pytest.mark.parametrize("reference", ["bert"], indirect=True)
def test_sequence_classification_returns_the_flags(reference):
    model = tfllm.AutoModelForSequenceClassification.from_pretrained(reference["folder"], num_labels=3)
    batch = reference["batch"]
    outputs = model.inspect(batch, **FLAGS)
    assert set(outputs) == {"logits", "hidden_states", "attentions"}
    np.testing.assert_array_equal(outputs["logits"], model(batch))
    assert outputs["logits"].shape == (len(BERT_IDS), 3)
    assert_matches_transformers(outputs, reference)


@pytest.mark.parametrize("reference", ["gpt2", "llama"], indirect=True)
def test_cached_pass_returns_attentions_over_the_cache(reference):
    model, batch = reference["model"], reference["batch"]
    ids, mask = batch["input_ids"].astype(np.int32), batch["attention_mask"].astype(np.int32)
    length = ids.shape[1]
    full_mask = np.concatenate([mask, np.ones((len(ids), 2), np.int32)], axis=1)
    cache = model.init_cache(len(ids), length + 2)
    outputs = model.backbone.forward(ids, full_mask, cache=cache, output_attentions=True)
    assert len(outputs["cache"]) == reference["num_layers"]
    full = model.backbone(batch, output_attentions=True)["attentions"]
    for cached, expected in zip(outputs["attentions"], full):
        assert cached.shape[-1] == length + 2
        rows = mask.astype(bool)
        np.testing.assert_allclose(np.asarray(cached)[..., :length].transpose(0, 2, 1, 3)[rows],
                                   np.asarray(expected).transpose(0, 2, 1, 3)[rows], atol=1e-5)


# T5 v1.1 (gated GELU, untied head) with more encoder than decoder layers, so the stacks cannot be mixed up.
TINY_T5 = dict(vocab_size=99, d_model=32, d_ff=64, num_layers=3, num_decoder_layers=2, num_heads=4, d_kv=8,
               relative_attention_num_buckets=8, relative_attention_max_distance=20, dropout_rate=0.0,
               feed_forward_proj="gated-gelu", tie_word_embeddings=False, decoder_start_token_id=0, eos_token_id=1,
               pad_token_id=0)
T5_STACKS = ("encoder", "decoder")


@pytest.fixture(scope="module")
def t5_reference(tmp_path_factory):
    folder = tmp_path_factory.mktemp("t5")
    hf_model = make_hf_model(folder, "T5ForConditionalGeneration", TINY_T5)
    rng = np.random.default_rng(0)
    mask = (np.arange(7)[None, :] < np.array([7, 4, 1])[:, None]).astype(np.int64)  # right-padded, as T5 pads
    decoder_mask = (np.arange(5)[None, :] < np.array([5, 3, 2])[:, None]).astype(np.int64)
    batch = dict(input_ids=rng.integers(2, 99, (3, 7)) * mask, attention_mask=mask,
                 decoder_input_ids=rng.integers(2, 99, (3, 5)) * decoder_mask, decoder_attention_mask=decoder_mask)
    with torch.no_grad():
        hf = hf_model(**{key: torch.tensor(value) for key, value in batch.items()}, **FLAGS)
    return dict(folder=folder, batch=batch, hf=hf, model=tfllm.AutoModelForSeq2SeqLM.from_pretrained(folder))


def assert_t5_matches_transformers(outputs, reference):
    batch, hf = reference["batch"], reference["hf"]
    masks = {"encoder": batch["attention_mask"], "decoder": batch["decoder_attention_mask"]}
    for stack in T5_STACKS:
        assert_stack_matches(outputs[f"{stack}_attentions"], outputs[f"{stack}_hidden_states"],
                             hf[f"{stack}_attentions"], hf[f"{stack}_hidden_states"], masks[stack], TINY_T5["num_heads"])
    assert len(outputs["encoder_attentions"]) == 3 and len(outputs["decoder_attentions"]) == 2


def test_t5_inspect_matches_transformers(t5_reference):
    model, batch = t5_reference["model"], t5_reference["batch"]
    outputs = model.inspect(batch, **FLAGS)
    assert set(outputs) == {"logits"} | {f"{stack}_{key}" for stack in T5_STACKS for key in ("attentions", "hidden_states")}
    assert_t5_matches_transformers(outputs, t5_reference)
    logits_diff = _hidden_diff(outputs["logits"], t5_reference["hf"].logits, batch["decoder_attention_mask"])
    assert logits_diff < 1e-4
    np.testing.assert_array_equal(outputs["logits"], model(batch))
    assert set(model.inspect(batch, output_attentions=True)) == {"logits", "encoder_attentions", "decoder_attentions"}


def test_t5_backbone_matches_transformers(t5_reference):
    backbone = tfllm.AutoModel.from_pretrained(t5_reference["folder"])
    batch = t5_reference["batch"]
    assert set(backbone(batch)) == {"last_hidden_state", "encoder_last_hidden_state"}
    outputs = backbone(batch, **FLAGS)
    assert_t5_matches_transformers(outputs, t5_reference)
    np.testing.assert_array_equal(outputs["decoder_hidden_states"][-1], outputs["last_hidden_state"])
    np.testing.assert_array_equal(outputs["encoder_hidden_states"][-1], outputs["encoder_last_hidden_state"])


def make_folder(root, family):
    class_name, tiny, overrides, _ = FAMILIES[family]
    make_hf_model(root / family, class_name, tiny, **overrides)
    return root / family


def assert_close_nested(a, b, atol=1e-6):
    if isinstance(a, dict):
        assert set(a) == set(b)
        for key in a:
            assert_close_nested(a[key], b[key], atol)
    elif isinstance(a, (tuple, list)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            assert_close_nested(x, y, atol)
    else:
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=atol)
