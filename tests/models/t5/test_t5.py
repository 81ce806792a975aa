"""T5 (v1.0 and v1.1) against transformers: logits, greedy generation, cached decoding, saving, training."""

import json

import keras
import numpy as np
import pytest
import torch

import tfllm
from testing import edited_copy
from tfllm.models.t5 import T5Backbone, T5Seq2SeqLM

TINY = dict(vocab_size=99, d_model=32, d_ff=64, relative_attention_num_buckets=8, relative_attention_max_distance=20,
            dropout_rate=0.0, decoder_start_token_id=0, eos_token_id=1, pad_token_id=0)

# name -> config overrides. v1.1 has 3 heads of width 6 (not d_model / num_heads), more encoder than
# decoder layers (transformers' generate fails with more decoder layers) and a non-default epsilon.
VARIANTS = {
    "v1_0": dict(feed_forward_proj="relu", tie_word_embeddings=True, num_layers=2, num_heads=4, d_kv=8),
    "v1_1": dict(feed_forward_proj="gated-gelu", tie_word_embeddings=False, num_layers=3, num_decoder_layers=2,
                 num_heads=3, d_kv=6, layer_norm_epsilon=1e-3),
}


def make_hf_t5(folder, name, seed=0):
    """Writes a random `transformers.T5ForConditionalGeneration` to `folder` and returns it (eval mode).

    The token embedding is N(0, 1) as T5 initializes it, other matrices N(0, 0.2) and norm scales
    N(1, 0.1): wider than the default init, so greedy choices are decisive.
    """
    import transformers

    torch.manual_seed(seed)
    config = transformers.T5Config(**{**TINY, **VARIANTS[name]})
    model = transformers.T5ForConditionalGeneration(config).eval()
    with torch.no_grad():
        for key, parameter in model.named_parameters():
            if key == "shared.weight":
                parameter.normal_(0.0, 1.0)
            elif parameter.dim() > 1:
                parameter.normal_(0.0, 0.2)
            else:
                parameter.normal_(1.0, 0.1)
    model.save_pretrained(folder)
    return model


def seq2seq_batch(seed=0):
    """Right-padded encoder inputs (lengths 7, 4, 1) and teacher-forced decoder inputs (lengths 6, 4, 2)."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(2, 99, (3, 7))
    mask = (np.arange(7)[None, :] < np.array([7, 4, 1])[:, None]).astype(np.int64)
    labels = rng.integers(2, 99, (3, 6))
    decoder_mask = (np.arange(6)[None, :] < np.array([6, 4, 2])[:, None]).astype(np.int64)
    decoder_ids = np.concatenate([np.zeros((3, 1), np.int64), labels[:, :-1]], axis=1)
    return dict(input_ids=ids * mask, attention_mask=mask, decoder_input_ids=decoder_ids,
                decoder_attention_mask=decoder_mask), labels


def hf_outputs(hf_model, batch):
    with torch.no_grad():
        return hf_model(**{key: torch.tensor(value) for key, value in batch.items()})


def decoder_diff(ours, theirs, batch):
    return np.abs((np.asarray(ours) - theirs) * batch["decoder_attention_mask"][:, :, None]).max()


@pytest.fixture(scope="module", params=sorted(VARIANTS))
def reference(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp(request.param) / "hf"
    hf_model = make_hf_t5(folder, request.param)
    batch, labels = seq2seq_batch()
    return dict(name=request.param, folder=folder, hf_model=hf_model, batch=batch, labels=labels,
                logits=hf_outputs(hf_model, batch).logits.numpy())


@pytest.fixture(scope="module")
def model(reference):
    return tfllm.AutoModelForSeq2SeqLM.from_pretrained(reference["folder"])


def test_auto_model_dispatches_and_logits_match(model, reference):
    assert isinstance(model, T5Seq2SeqLM)
    assert model.tie_word_embeddings == (reference["name"] == "v1_0")
    backbone = model.backbone
    assert backbone.head_dim == VARIANTS[reference["name"]]["d_kv"]
    assert backbone.num_decoder_layers == VARIANTS[reference["name"]].get("num_decoder_layers", backbone.num_layers)
    logits = model(reference["batch"])
    assert logits.shape == reference["logits"].shape
    assert np.abs(reference["logits"]).max() > 1.0  # a real comparison, not two near-zero tensors
    assert decoder_diff(logits, reference["logits"], reference["batch"]) < 1e-4


def test_encoder_padding_side_does_not_matter(model, reference):
    batch = dict(reference["batch"])
    order = np.argsort(batch["attention_mask"], axis=1, kind="stable")  # padding moved to the left
    batch["input_ids"] = np.take_along_axis(batch["input_ids"], order, axis=1)
    batch["attention_mask"] = np.take_along_axis(batch["attention_mask"], order, axis=1)
    assert decoder_diff(model(batch), reference["logits"], batch) < 1e-4


def test_greedy_generate_equals_transformers(model, reference):
    batch, hf_model = reference["batch"], reference["hf_model"]
    ids, mask = batch["input_ids"], batch["attention_mask"]
    with torch.no_grad():
        theirs = hf_model.generate(torch.tensor(ids), attention_mask=torch.tensor(mask), max_new_tokens=12,
                                   do_sample=False, num_beams=1).numpy()
    ours = model.generate(ids, attention_mask=mask, max_new_tokens=12).numpy()
    np.testing.assert_array_equal(ours, theirs)
    assert (ours[:, 0] == 0).all()  # the decoder start token leads, as in transformers' output
    assert len({tuple(row) for row in ours}) > 1  # the encoder output matters
    if reference["name"] == "v1_1":  # (v1.0's tied head repeats the last token on random weights)
        assert max(len(set(row[1:])) for row in ours) > 4


def test_greedy_generate_stops_at_eos_like_transformers(model, reference):
    batch, hf_model = reference["batch"], reference["hf_model"]
    ids, mask = batch["input_ids"], batch["attention_mask"]
    unstopped = model.generate(ids, attention_mask=mask, max_new_tokens=8, eos_token_id=-1).numpy()
    eos = int(unstopped[0, 3])  # row 0 ends at its third new token (or earlier)
    with torch.no_grad():
        theirs = hf_model.generate(torch.tensor(ids), attention_mask=torch.tensor(mask), max_new_tokens=8,
                                   do_sample=False, num_beams=1, eos_token_id=eos, pad_token_id=0).numpy()
    ours = model.generate(ids, attention_mask=mask, max_new_tokens=8, eos_token_id=eos).numpy()
    np.testing.assert_array_equal(ours, theirs)
    assert (ours[0, 4:] == 0).all()


def test_beam_search_equals_transformers(model, reference):
    import testing

    check = getattr(testing, "assert_beam_matches_transformers", None)
    if check is None:
        pytest.skip("beam search is not in this tree")
    batch = reference["batch"]
    out = check(model, reference["hf_model"], batch["input_ids"], batch["attention_mask"], num_beams=3,
                max_new_tokens=8, num_return_sequences=2)
    assert out.shape[0] == 6 and (out[:, 0] == 0).all()


def test_cached_decoding_matches_full_pass(model, reference):
    batch = reference["batch"]
    full = model({**batch, "decoder_attention_mask": np.ones_like(batch["decoder_input_ids"])}).numpy()
    logits, state, prefix = model.prefill(
        tf_int(batch["input_ids"]), tf_int(batch["attention_mask"]), max_new_tokens=8
    )
    assert prefix.shape == (3, 1)
    for leaf in [state["encoder_mask"], *state["cache"], *state["cross_cache"]]:
        assert leaf.shape[0] == 3  # batch-first, as beam search reorders along axis 0
    steps = [logits.numpy()]
    for step in range(batch["decoder_input_ids"].shape[1] - 1):
        logits, state = model.decode_step(tf_int(batch["decoder_input_ids"][:, step + 1]), step, state)
        steps.append(logits.numpy())
    np.testing.assert_allclose(np.stack(steps, axis=1), full, atol=1e-4)


def tf_int(array):
    import tensorflow as tf

    return tf.constant(array, tf.int32)


def test_save_pretrained_loads_in_transformers_with_same_logits(model, reference, tmp_path):
    import transformers

    model.save_pretrained(tmp_path / "out")
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["architectures"] == ["T5ForConditionalGeneration"]
    assert config["feed_forward_proj"] == VARIANTS[reference["name"]]["feed_forward_proj"]
    reloaded = transformers.T5ForConditionalGeneration.from_pretrained(tmp_path / "out").eval()
    batch = reference["batch"]
    assert decoder_diff(hf_outputs(reloaded, batch).logits.numpy(), reference["logits"], batch) < 1e-4
    again = tfllm.AutoModelForSeq2SeqLM.from_pretrained(tmp_path / "out")
    assert decoder_diff(again(batch), reference["logits"], batch) < 1e-4


def test_pytorch_bin_with_tied_copies_loads(reference, tmp_path):
    reference["hf_model"].save_pretrained(tmp_path / "bin", safe_serialization=False)
    model = tfllm.AutoModelForSeq2SeqLM.from_pretrained(tmp_path / "bin")
    assert decoder_diff(model(reference["batch"]), reference["logits"], reference["batch"]) < 1e-4


def test_keras_serialization_round_trip(model, reference, tmp_path):
    path = tmp_path / "model.keras"
    model.save(path)
    restored = keras.saving.load_model(path)
    assert isinstance(restored, T5Seq2SeqLM)
    assert restored.backbone.get_config() == model.backbone.get_config()
    assert restored.task_config() == model.task_config()
    np.testing.assert_allclose(model(reference["batch"]), restored(reference["batch"]), atol=1e-6)


def test_backbone_matches_transformers_t5_model(reference, tmp_path):
    import transformers

    backbone = tfllm.AutoModel.from_pretrained(reference["folder"])
    assert isinstance(backbone, T5Backbone)
    batch = reference["batch"]
    hf_base = transformers.T5Model.from_pretrained(reference["folder"]).eval()
    expected = hf_outputs(hf_base, batch)
    assert decoder_diff(backbone(batch)["last_hidden_state"], expected.last_hidden_state.numpy(), batch) < 1e-4
    encoded = backbone.encode(tf_int(batch["input_ids"]), tf_int(batch["attention_mask"]))["last_hidden_state"].numpy()
    real = batch["attention_mask"][:, :, None]
    assert np.abs((encoded - expected.encoder_last_hidden_state.numpy()) * real).max() < 1e-4
    backbone.save_pretrained(tmp_path / "base")
    assert json.loads((tmp_path / "base" / "config.json").read_text())["architectures"] == ["T5Model"]
    reloaded = transformers.T5Model.from_pretrained(tmp_path / "base").eval()
    assert decoder_diff(hf_outputs(reloaded, batch).last_hidden_state.numpy(), expected.last_hidden_state.numpy(),
                        batch) < 1e-4


def test_prepare_decoder_input_ids_matches_transformers(model, reference):
    labels = reference["labels"].copy()
    labels[2, 2:] = -100
    expected = reference["hf_model"].prepare_decoder_input_ids_from_labels(torch.tensor(labels)).numpy()
    np.testing.assert_array_equal(model.prepare_decoder_input_ids_from_labels(labels).numpy(), expected)


# --- Training ---------------------------------------------------------------------------------------


def test_fit_lowers_the_loss():
    backbone = T5Backbone(vocabulary_size=40, num_layers=1, num_heads=2, hidden_dim=16, intermediate_dim=32,
                          head_dim=8, relative_attention_num_buckets=8, relative_attention_max_distance=20,
                          activation="gelu_tanh", gated_ffn=True, dropout=0.1)
    model = T5Seq2SeqLM(backbone, tie_word_embeddings=False)
    rng = np.random.default_rng(0)
    ids = rng.integers(2, 40, (8, 6)).astype("int32")
    labels = ids[:, ::-1].copy()  # learn to reverse the input
    labels[:4, 4:] = -100  # ignored (padded) target positions
    x = {"input_ids": ids, "attention_mask": np.ones_like(ids),
         "decoder_input_ids": model.prepare_decoder_input_ids_from_labels(labels).numpy(),
         "decoder_attention_mask": (labels != -100).astype("int32")}
    model.compile(optimizer=keras.optimizers.Adam(1e-2),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=-100))
    history = model.fit(x, labels, batch_size=8, epochs=15, verbose=0).history["loss"]
    assert np.isfinite(history).all()
    assert history[-1] < 0.7 * history[0], history


# --- Refusals ---------------------------------------------------------------------------------------


def _edited(folder, tmp_path, **changes):
    return edited_copy(folder, tmp_path / "edited", **changes)


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(feed_forward_proj="gated-silu"), "`feed_forward_proj='gated-silu'`"),
        (dict(feed_forward_proj="gelu"), "`feed_forward_proj='gelu'`"),
        (dict(is_encoder_decoder=False), "`is_encoder_decoder=False`"),
    ],
)
def test_unsupported_option_raises_not_implemented_naming_it(reference, tmp_path, changes, message):
    with pytest.raises(NotImplementedError, match=message):
        tfllm.AutoModelForSeq2SeqLM.from_pretrained(_edited(reference["folder"], tmp_path, **changes))


def test_causal_lm_task_is_refused(reference):
    with pytest.raises(NotImplementedError, match="`t5` models have no `causal_lm` task"):
        tfllm.AutoModelForCausalLM.from_pretrained(reference["folder"])


def test_call_without_a_dict_names_the_argument(model):
    with pytest.raises(ValueError, match="Invalid value for argument `inputs`"):
        model(np.array([[5, 6, 1]]))


def test_saving_an_unmappable_feed_forward_is_refused(tmp_path):
    backbone = T5Backbone(vocabulary_size=10, num_layers=1, num_heads=2, hidden_dim=8, intermediate_dim=16,
                          activation="silu", gated_ffn=True)
    backbone.build()
    with pytest.raises(ValueError, match="activation='silu' and gated_ffn=True"):
        backbone.save_pretrained(tmp_path / "out")


def test_generate_builds_an_unbuilt_model():
    backbone = T5Backbone(vocabulary_size=40, num_layers=1, num_heads=2, hidden_dim=16, intermediate_dim=32,
                          head_dim=8, relative_attention_num_buckets=8, relative_attention_max_distance=20)
    model = T5Seq2SeqLM(backbone)
    assert not model.built
    ids = model.generate(np.array([[5, 6, 7, 1]]), max_new_tokens=3)
    assert ids.shape == (1, 4)
