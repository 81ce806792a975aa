"""The family harness: every entry of tests/family_cases.py against transformers, through public API only.

Each check is one test, parametrized over the entries that list it: logits on a padded batch,
greedy and beam search token for token, cached decoding equal to a full pass, a `.keras` round
trip, `save_pretrained` loading in transformers, `fit` lowering the loss, an export smoke test.
Each entry's checkpoint and model are built once for the module (see `family`).
"""

import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf
import torch
import transformers

import tfllm
import tfllm.export
from family_cases import (
    BEAM, CACHED, CASES, DECODER, EXPORT, FIT, GREEDY, KERAS, LOGITS, SAVE_PRETRAINED, SEQ2SEQ, hf_logits,
    write_checkpoint,
)
from testing import assert_beam_matches_transformers, assert_greedy_matches_transformers, train_tiny_spiece
from tfllm.export import signatures

MAX_NEW = 12  # greedy tokens compared with transformers
ATOL = 1e-4  # logits against transformers, over real positions


def with_check(check, slow=()):
    """The entries that list `check`, as pytest params (`slow`: kinds whose test is marked slow)."""
    return [pytest.param(case, id=case.name, marks=[pytest.mark.slow] if case.kind in slow else [])
            for case in CASES if check in case.checks]


@pytest.fixture(scope="module")
def family(tmp_path_factory):
    """`family(case)`: the entry's reference (folder, transformers model, batch, logits) and tfllm model, built once."""
    built = {}

    def get(case):
        if case.name not in built:
            folder = tmp_path_factory.mktemp(case.name) / "hf"
            hf_model = write_checkpoint(case, folder)
            batch = case.kind.batch()
            built[case.name] = dict(folder=folder, hf_model=hf_model, batch=batch,
                                    logits=hf_logits(case, hf_model, batch),
                                    model=getattr(tfllm, case.auto).from_pretrained(folder))
        return built[case.name]

    return get


def real_diff(case, ours, theirs, batch):
    """Largest absolute difference over the real positions (all of them for `(batch, labels)` logits)."""
    diff = np.abs(np.asarray(ours) - theirs)
    if diff.ndim == 3:
        diff = diff * batch[case.kind.mask_key][:, :, None]
    return diff.max()


def prompts(batch):
    """What `generate` takes: the prompts (decoders) or the encoder inputs (seq2seq)."""
    return batch["input_ids"], batch["attention_mask"]


def output_prefix(case, ids):
    """What `generate`'s output starts with: the prompts, or the decoder start token."""
    return ids if case.kind is DECODER else np.full((len(ids), 1), case.config["decoder_start_token_id"])


# === Loading and logits ===


@pytest.mark.parametrize("case", with_check(LOGITS))
def test_auto_class_returns_the_family_model_with_the_checkpoint_options(family, case):
    model = family(case)["model"]
    assert isinstance(model, case.model_type())
    for path, expected in case.attributes.items():
        assert case.attribute(model, path) == expected, path


@pytest.mark.parametrize("case", with_check(LOGITS))
def test_logits_match_transformers_on_a_padded_batch(family, case):
    reference = family(case)
    logits = reference["model"](reference["batch"])
    assert logits.shape == reference["logits"].shape
    assert np.abs(reference["logits"]).max() > 1.0  # a real comparison, not two near-zero tensors
    assert real_diff(case, logits, reference["logits"], reference["batch"]) < ATOL


# === Generation ===


@pytest.mark.parametrize("case", with_check(GREEDY))
def test_greedy_generate_equals_transformers(family, case):
    reference = family(case)
    ids, mask = prompts(reference["batch"])
    ours = assert_greedy_matches_transformers(reference["model"], reference["hf_model"], ids, mask,
                                              pad_token_id=case.pad_token_id, max_new_tokens=MAX_NEW)
    prefix = output_prefix(case, ids)
    np.testing.assert_array_equal(ours[:, :prefix.shape[1]], prefix)
    generated = ours[:, prefix.shape[1]:]
    assert len({tuple(row) for row in generated}) > 1  # the input matters
    if not case.repeats_itself:
        assert max(len(set(row)) for row in generated) > 4


@pytest.mark.parametrize("case", with_check(GREEDY))
def test_greedy_generate_stops_at_eos_like_transformers(family, case):
    reference = family(case)
    ids, mask = prompts(reference["batch"])
    prefix = output_prefix(case, ids).shape[1]
    kwargs = dict(max_new_tokens=8, pad_token_id=case.pad_token_id)
    with torch.no_grad():
        free_run = reference["hf_model"].generate(torch.tensor(ids), attention_mask=torch.tensor(mask),
                                                  do_sample=False, num_beams=1, **kwargs).numpy()
        eos = int(free_run[0, prefix + 2])  # row 0 ends at its third new token (or earlier)
        theirs = reference["hf_model"].generate(torch.tensor(ids), attention_mask=torch.tensor(mask),
                                                do_sample=False, num_beams=1, eos_token_id=eos, **kwargs).numpy()
    ours = reference["model"].generate(ids, attention_mask=mask, eos_token_id=eos, **kwargs).numpy()
    np.testing.assert_array_equal(ours, theirs)
    assert (ours[0, prefix + 3:] == case.pad_token_id).all()


@pytest.mark.parametrize("case", with_check(BEAM))
def test_beam_search_equals_transformers(family, case):
    reference = family(case)
    ids, mask = prompts(reference["batch"])
    out = assert_beam_matches_transformers(reference["model"], reference["hf_model"], ids, mask, num_beams=3,
                                           max_new_tokens=8, num_return_sequences=2, pad_token_id=case.pad_token_id)
    prefix = np.repeat(output_prefix(case, ids), 2, axis=0)
    assert out.shape[0] == 2 * len(ids)
    np.testing.assert_array_equal(out[:, :prefix.shape[1]], prefix)


@pytest.mark.parametrize("case", with_check(CACHED))
def test_cached_decoding_equals_a_full_pass(family, case):
    """`prefill` then `decode_step` token by token give the logits of one full forward pass."""
    reference = family(case)
    model, (ids, mask) = reference["model"], prompts(reference["batch"])
    steps = np.random.default_rng(1).integers(2, 90, (len(ids), 5))
    logits, state, prefix = model.prefill(tf.constant(ids, tf.int32), tf.constant(mask, tf.int32),
                                          max_new_tokens=steps.shape[1] + 1)
    np.testing.assert_array_equal(prefix, output_prefix(case, ids))
    for leaf in tf.nest.flatten(state):
        assert np.ndim(leaf) == 0 or np.shape(leaf)[0] == len(ids)  # batch-first: beam search reorders axis 0
    cached = [logits.numpy()]
    for step in range(steps.shape[1]):
        logits, state = model.decode_step(tf.constant(steps[:, step], tf.int32), step, state)
        cached.append(logits.numpy())
    np.testing.assert_allclose(np.stack(cached, axis=1), full_pass(case, model, ids, mask, prefix, steps), atol=ATOL)


def full_pass(case, model, ids, mask, prefix, steps):
    """The logits of one forward pass over `prefix` + `steps`, at the positions cached decoding predicts from."""
    tokens = np.concatenate([np.asarray(prefix), steps], axis=1)
    if case.kind is SEQ2SEQ:
        batch = dict(input_ids=ids, attention_mask=mask, decoder_input_ids=tokens,
                     decoder_attention_mask=np.ones_like(tokens))
    else:
        batch = dict(input_ids=tokens, attention_mask=np.concatenate([mask, np.ones_like(steps)], axis=1))
    return model(batch).numpy()[:, -(steps.shape[1] + 1):]


# === Saving and training ===


@pytest.mark.parametrize("case", with_check(KERAS))
def test_keras_round_trip_gives_the_same_logits(family, case, tmp_path):
    reference = family(case)
    model, batch = reference["model"], reference["batch"]
    model.save(tmp_path / "model.keras")
    restored = keras.saving.load_model(tmp_path / "model.keras")
    assert type(restored) is type(model)
    assert restored.backbone.get_config() == model.backbone.get_config()
    task_config = {key: value for key, value in model.get_config().items() if key != "backbone"}
    assert {key: restored.get_config()[key] for key in task_config} == task_config
    np.testing.assert_allclose(model(batch), restored(batch), atol=1e-6)


@pytest.mark.parametrize("case", with_check(SAVE_PRETRAINED))
def test_save_pretrained_loads_in_transformers_with_the_same_logits(family, case, tmp_path):
    reference = family(case)
    reference["model"].save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["architectures"] == [case.hf_class]
    reloaded = getattr(transformers, case.auto).from_pretrained(tmp_path).eval()
    assert type(reloaded).__name__ == case.hf_class
    assert reloaded.config.model_type == reference["hf_model"].config.model_type
    keys = [key for key in case.config if key not in case.not_saved]
    assert {key: getattr(reloaded.config, key) for key in keys} == {
        key: getattr(reference["hf_model"].config, key) for key in keys}
    batch = reference["batch"]
    assert real_diff(case, hf_logits(case, reloaded, batch), reference["logits"], batch) < 1e-5
    again = getattr(tfllm, case.auto).from_pretrained(tmp_path)
    assert real_diff(case, again(batch), reference["logits"], batch) < ATOL


@pytest.mark.parametrize("case", with_check(FIT))
def test_fit_lowers_the_loss(family, case):
    model = getattr(tfllm, case.auto).from_pretrained(family(case)["folder"])  # a fresh copy to train
    x, y, epochs, ratio = case.fit_data(model)
    model.compile(optimizer=keras.optimizers.Adam(1e-2),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=-100))
    history = model.fit(x, y, epochs=epochs, batch_size=len(y), verbose=0).history["loss"]
    assert np.isfinite(history).all()
    assert history[-1] < ratio * history[0], history


# === Export ===


def export_decoder(case, model, batch, folder):
    """TFLite: LiteRT's greedy tokens equal `generate`'s (the export checks them too before writing)."""
    path = tfllm.export.tflite(model, folder / "model.tflite", cache_length=16, prefill_length=8)
    prompt = batch["input_ids"][0][batch["attention_mask"][0] == 1]
    ours = tfllm.export.LiteRTGenerator(path).generate_ids(prompt.tolist(), 4, eos_token_id=-1)
    assert ours == model.generate(prompt[None], max_new_tokens=4, eos_token_id=-1).numpy()[0].tolist()


def export_encoder(case, model, batch, folder):
    """TFLite: the `encode` signature's logits equal the Keras model's (token types left at 0)."""
    from ai_edge_litert.interpreter import Interpreter  # the `tflite` extra

    ids, mask = batch["input_ids"], batch["attention_mask"]
    path = tfllm.export.tflite(model, folder / "model.tflite", sequence_length=ids.shape[1], batch_size=len(ids))
    runner = Interpreter(model_path=path).get_signature_runner(signatures.ENCODE)
    outputs = runner(input_ids=ids.astype(np.int32), attention_mask=mask.astype(np.int32))
    expected = model({"input_ids": ids, "attention_mask": mask})
    np.testing.assert_allclose(outputs[signatures.LOGITS], expected, atol=1e-4)


def export_seq2seq(case, model, batch, folder):
    """SavedModel (needs a tokenizer: a tiny SentencePiece one): the export's own check against `generate`."""
    pytest.importorskip("tensorflow_text")
    train_tiny_spiece(folder / "tokenizer", vocab_size=case.config["vocab_size"])
    tokenizer = tfllm.AutoTokenizer.from_pretrained(folder / "tokenizer")
    path = tfllm.export.saved_model(model, tokenizer, folder / "saved_models" / case.name, max_new_tokens=4)
    assert os.path.isfile(os.path.join(path, "saved_model.pb"))


EXPORTS = {"decoder": export_decoder, "encoder": export_encoder, "seq2seq": export_seq2seq}


@pytest.mark.parametrize("case", with_check(EXPORT, slow=(SEQ2SEQ,)))
def test_export_smoke(family, case, tmp_path):
    reference = family(case)
    EXPORTS[case.kind.name](case, reference["model"], reference["batch"], tmp_path)
