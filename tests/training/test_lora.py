"""LoRA: only adapters train, an adapter starts as a no-op, merging and adapter files reproduce the logits,
on GPT-2, Llama (grouped-query attention), a BERT classifier and T5 (cross-attention)."""

import json
import os
import re

import keras
import numpy as np
import pytest

from testing import run_serialization_test
from tfllm.checkpoints import CheckpointError
from tfllm.models import (BertBackbone, BertSequenceClassification, GPT2Backbone, GPT2CausalLM, LlamaBackbone,
                          LlamaCausalLM, T5Backbone, T5Seq2SeqLM)
from tfllm.training.lora import (ADAPTER_CONFIG_NAME, ADAPTER_WEIGHTS_NAME, DEFAULT_TARGETS, LoRADense, apply_lora,
                                 load_adapters, lora_parameter_count, merge_lora, save_adapters)

VOCAB = 64
RNG = np.random.default_rng(0)
IDS = RNG.integers(1, VOCAB, (4, 9)).astype("int32")
X = {"input_ids": IDS[:, :-1], "attention_mask": np.ones((4, 8), "int32")}
Y = IDS[:, 1:]


def gpt2(**kwargs):
    keras.utils.set_random_seed(1)
    model = GPT2CausalLM(GPT2Backbone(vocabulary_size=VOCAB, num_layers=2, num_heads=2, hidden_dim=16,
                                      intermediate_dim=32, max_sequence_length=32, initializer_range=0.2, **kwargs))
    model.build()
    return model


def llama():
    keras.utils.set_random_seed(2)
    model = LlamaCausalLM(LlamaBackbone(vocabulary_size=VOCAB, num_layers=2, num_heads=4, num_key_value_heads=2,
                                        hidden_dim=16, intermediate_dim=32, max_sequence_length=32,
                                        initializer_range=0.2))
    model.build()
    return model


def bert_classifier():
    keras.utils.set_random_seed(3)
    model = BertSequenceClassification(BertBackbone(vocabulary_size=VOCAB, num_layers=2, num_heads=2, hidden_dim=16,
                                                    intermediate_dim=32, max_sequence_length=16,
                                                    initializer_range=0.2), num_labels=3)
    model.build()
    return model


def t5():
    keras.utils.set_random_seed(4)
    model = T5Seq2SeqLM(T5Backbone(vocabulary_size=VOCAB, num_layers=1, num_heads=2, hidden_dim=16, intermediate_dim=32,
                                   head_dim=8, relative_attention_num_buckets=8, relative_attention_max_distance=20,
                                   activation="gelu_tanh", gated_ffn=True),
                        tie_word_embeddings=False)
    model.build()
    return model


T5_X = {"input_ids": IDS[:, :6], "attention_mask": np.ones((4, 6), "int32"), "decoder_input_ids": IDS[:, 3:]}


def randomize_adapters(model, seed=0):
    """Gives every B a non-zero value, so the adapters change the outputs."""
    rng = np.random.default_rng(seed)
    for variable in model.weights:
        if variable.path.endswith("lora_b"):
            variable.assign(rng.normal(0.0, 0.2, variable.shape).astype("float32"))


def snapshot(model):
    return {id(v): np.array(v.numpy()) for v in model.weights}


# --- Parameter counts and freezing -------------------------------------------------------------------


def test_trainable_parameters_are_the_adapters_only():
    model = gpt2()
    rank, hidden = 4, 16
    # per block: qkv (16 -> 48), output (16 -> 16), up (16 -> 32), down (32 -> 16); A is (in, r), B (r, out)
    by_hand = 2 * rank * ((hidden + 3 * hidden) + (hidden + hidden) + (hidden + 32) + (32 + hidden))
    returned = apply_lora(model, rank=rank, target_modules=["qkv", "output", "up", "down"])
    assert returned == by_hand == lora_parameter_count(model) == 1536
    assert sum(int(np.prod(v.shape)) for v in model.trainable_weights) == by_hand
    assert {v.path.rsplit("/", 1)[-1] for v in model.trainable_weights} == {"lora_a", "lora_b"}
    # Layer names get a numeric suffix when other models were built in this process first.
    assert re.fullmatch(r"gpt2_causal_lm(_\d+)?/gpt2_backbone(_\d+)?/transformer_layer_0/attention/qkv/lora_a",
                        model.trainable_weights[0].path), model.trainable_weights[0].path


def test_default_targets_are_the_attention_input_projections():
    assert DEFAULT_TARGETS == ("qkv", "query", "key_value")
    model = GPT2CausalLM(GPT2Backbone(vocabulary_size=VOCAB, num_layers=2, num_heads=2, hidden_dim=16,
                                      intermediate_dim=32, max_sequence_length=32))  # not built: apply_lora builds it
    assert apply_lora(model, rank=2) == 2 * 2 * (16 + 48)  # GPT-2 has only "qkv" of the three


def test_t5_default_targets_cover_self_and_cross_attention(tmp_path):
    model = t5()
    rank = 3
    encoder = rank * (16 + 48)  # qkv: 16 -> 3 * 2 heads * 8
    decoder = rank * (16 + 48) + rank * (16 + 16) + rank * (16 + 32)  # qkv, query, key_value
    assert apply_lora(model, rank=rank) == encoder + decoder
    randomize_adapters(model)
    save_adapters(model, tmp_path)
    config = json.loads((tmp_path / ADAPTER_CONFIG_NAME).read_text())
    assert config["target_modules"] == ["qkv", "query", "key_value"]
    assert config["model_type"] == "t5" and config["task"] == "seq2seq_lm"
    fresh = t5()
    assert np.abs(np.asarray(fresh(T5_X)) - np.asarray(model(T5_X))).max() > 1e-2
    load_adapters(fresh, tmp_path)
    np.testing.assert_allclose(np.asarray(fresh(T5_X)), np.asarray(model(T5_X)), atol=1e-6)


# --- An adapter starts as a no-op; generation uses the adapters ---------------------------------------


@pytest.mark.parametrize("make", [gpt2, llama], ids=["gpt2", "llama_gqa"])
def test_new_adapters_change_nothing_and_generate_uses_them(make):
    model = make()
    prompt = IDS[:2, :4]
    base_logits = np.asarray(model(X))
    base_tokens = model.generate(prompt, max_new_tokens=6).numpy()  # traced before apply_lora
    apply_lora(model, rank=4, target_modules=["qkv", "output", "up", "down"])
    np.testing.assert_array_equal(np.asarray(model(X)), base_logits)
    np.testing.assert_array_equal(model.generate(prompt, max_new_tokens=6).numpy(), base_tokens)
    if make is gpt2:
        np.testing.assert_array_equal(model.generate(prompt, max_new_tokens=6, jit_compile=True).numpy(), base_tokens)
    randomize_adapters(model)
    # The first generated token is the arg-max of the adapted model's full pass, with and without XLA.
    expected = np.argmax(np.asarray(model({"input_ids": prompt, "attention_mask": np.ones_like(prompt)}))[:, -1], -1)
    assert not np.array_equal(expected, base_tokens[:, 4])
    for jit in (False, True) if make is gpt2 else (False,):  # one XLA compile is enough
        np.testing.assert_array_equal(model.generate(prompt, max_new_tokens=1, jit_compile=jit).numpy()[:, 4], expected)


def test_t5_new_adapters_change_nothing():
    model = t5()
    base_logits = np.asarray(model(T5_X))
    base_tokens = model.generate(IDS[:2, :6], max_new_tokens=4).numpy()
    apply_lora(model, rank=2)
    np.testing.assert_array_equal(np.asarray(model(T5_X)), base_logits)
    np.testing.assert_array_equal(model.generate(IDS[:2, :6], max_new_tokens=4).numpy(), base_tokens)


def test_adapter_dropout_acts_in_training_only():
    model = gpt2()  # no dropout of its own
    apply_lora(model, rank=4, dropout=0.5)
    randomize_adapters(model)
    inference = np.asarray(model(X))
    np.testing.assert_array_equal(np.asarray(model(X, training=False)), inference)
    assert np.abs(np.asarray(model(X, training=True)) - inference).max() > 1e-3


# --- Training --------------------------------------------------------------------------------------


def _compile(model, learning_rate=1e-2):
    model.compile(optimizer=keras.optimizers.AdamW(learning_rate),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))


def test_fit_lowers_the_loss_and_leaves_every_other_weight_bit_identical():
    model = gpt2()
    apply_lora(model, rank=4, dropout=0.1, target_modules=["qkv", "output", "up", "down"])
    before = snapshot(model)
    _compile(model, 3e-2)
    loss_before = model.evaluate(X, Y, verbose=0)
    model.fit(X, Y, batch_size=4, epochs=10, verbose=0)
    loss_after = model.evaluate(X, Y, verbose=0)
    assert loss_after < 0.8 * loss_before, (loss_before, loss_after)
    adapters = [v for v in model.weights if v.path.endswith(("lora_a", "lora_b"))]
    others = [v for v in model.weights if not v.path.endswith(("lora_a", "lora_b"))]
    assert len(adapters) == 16 and len(others) == 28
    assert all(np.array_equal(before[id(v)], v.numpy()) for v in others)
    assert not any(np.array_equal(before[id(v)], v.numpy()) for v in adapters)


def test_bert_classifier_trains_adapters_and_its_new_head(tmp_path):
    model = bert_classifier()
    model.save_pretrained(tmp_path / "base")
    batch = {"input_ids": IDS[:, :8], "attention_mask": np.ones((4, 8), "int32")}
    labels = np.array([0, 1, 2, 1])
    rank = 4
    trainable = apply_lora(model, rank=rank)  # the default keeps "classifier" trainable
    assert trainable == 2 * rank * (16 + 48) + (16 * 3 + 3)
    assert lora_parameter_count(model) == 2 * rank * (16 + 48)
    head = {id(model.classifier.kernel), id(model.classifier.bias)}
    before = snapshot(model)
    _compile(model, 3e-2)
    loss_before = model.evaluate(batch, labels, verbose=0)
    model.fit(batch, labels, batch_size=4, epochs=10, verbose=0)
    loss_after = model.evaluate(batch, labels, verbose=0)
    assert loss_after < 0.7 * loss_before, (loss_before, loss_after)
    frozen = [v for v in model.weights if not v.path.endswith(("lora_a", "lora_b")) and id(v) not in head]
    assert len(frozen) > 20 and all(np.array_equal(before[id(v)], v.numpy()) for v in frozen)
    assert not np.array_equal(before[id(model.classifier.kernel)], model.classifier.kernel.numpy())
    # The trained head travels with the adapters: the base model (with its untrained head) reproduces the logits.
    save_adapters(model, tmp_path / "adapter")
    fresh = BertSequenceClassification.from_pretrained(tmp_path / "base")
    assert np.abs(np.asarray(fresh(batch)) - np.asarray(model(batch))).max() > 1e-3
    load_adapters(fresh, tmp_path / "adapter")
    np.testing.assert_allclose(np.asarray(fresh(batch)), np.asarray(model(batch)), atol=1e-6)
    assert sum(int(np.prod(v.shape)) for v in fresh.trainable_weights) == trainable


def test_only_the_adapters_train_when_train_modules_is_empty():
    model = bert_classifier()
    assert apply_lora(model, rank=2, train_modules=()) == lora_parameter_count(model) == 2 * 2 * (16 + 48)


# --- Merging ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("make", [gpt2, llama], ids=["gpt2", "llama_gqa"])
def test_merged_weights_give_the_adapted_logits_and_save_pretrained_round_trips(make, tmp_path):
    model = make()
    num_weights = len(model.weights)
    targets = ["qkv", "output", "up", "gate", "down"] if make is llama else None  # llama: every projection
    apply_lora(model, rank=4, alpha=8, target_modules=targets)
    randomize_adapters(model)
    adapted = np.asarray(model(X))
    assert merge_lora(model) is model
    merged = np.asarray(model(X))
    np.testing.assert_allclose(merged, adapted, rtol=1e-5, atol=1e-5)
    assert np.abs(adapted).max() > 1.0  # the comparison is not between near-zero logits
    assert lora_parameter_count(model) == 0 and len(model.weights) == num_weights
    assert all(v.trainable for v in model.weights)  # what apply_lora froze trains again
    assert not any(isinstance(layer, LoRADense) for layer in model._flatten_layers())
    model.save_pretrained(tmp_path / "merged")
    restored = type(model).from_pretrained(tmp_path / "merged")
    np.testing.assert_allclose(np.asarray(restored(X)), merged, atol=1e-6)


def test_t5_merged_weights_give_the_adapted_logits():
    model = t5()
    apply_lora(model, rank=2, target_modules=["qkv", "query", "key_value", "output", "up", "gate", "down"])
    randomize_adapters(model)
    adapted = np.asarray(model(T5_X))
    merged = np.asarray(merge_lora(model)(T5_X))
    # float32 rounding of W + BA against xW + xBA grows with the logits' size (up to ~8 here): an
    # absolute tolerance of 1e-5 of the largest logit (1.3e-5 was seen at a logit near 0 on this
    # machine, on the commit before the architecture change too).
    np.testing.assert_allclose(merged, adapted, rtol=1e-5, atol=1e-5 * np.abs(adapted).max())
    assert np.abs(adapted - np.asarray(t5()(T5_X))).max() > 1e-2  # the adapters did change the logits


def test_save_pretrained_of_an_unmerged_model_is_refused(tmp_path):
    model = gpt2()
    apply_lora(model)
    with pytest.raises(RuntimeError, match=r"merge_lora\(model\) before save_pretrained"):
        model.save_pretrained(tmp_path / "out")
    assert not (tmp_path / "out").exists()


# --- Adapter files ---------------------------------------------------------------------------------


@pytest.fixture()
def saved(tmp_path):
    """A GPT-2 base folder and adapters (qkv + up, random B) trained on it; returns (paths, adapted logits)."""
    model = gpt2()
    model.save_pretrained(tmp_path / "base")
    apply_lora(model, rank=4, alpha=8, dropout=0.1, target_modules=["qkv", "up"])
    randomize_adapters(model)
    save_adapters(model, tmp_path / "adapter")
    return tmp_path, np.asarray(model(X))


def test_adapter_files_hold_the_adapters_only_and_reload_onto_the_base(saved):
    root, adapted = saved
    assert sorted(os.listdir(root / "adapter")) == [ADAPTER_CONFIG_NAME, ADAPTER_WEIGHTS_NAME]
    config = json.loads((root / "adapter" / ADAPTER_CONFIG_NAME).read_text())
    assert config == dict(format_version=1, rank=4, alpha=8.0, dropout=0.1, target_modules=["qkv", "up"],
                          train_modules=[], model_type="gpt2", task="causal_lm")
    from safetensors.numpy import load_file

    tensors = load_file(root / "adapter" / ADAPTER_WEIGHTS_NAME)
    assert len(tensors) == 2 * 2 * 2
    assert tensors["backbone.transformer_layers.0.attention.qkv.lora_a"].shape == (16, 4)
    assert tensors["backbone.transformer_layers.1.ffn.up.lora_b"].shape == (4, 32)
    model = GPT2CausalLM.from_pretrained(root / "base")
    base = np.asarray(model(X))
    assert load_adapters(model, root / "adapter") is model
    np.testing.assert_allclose(np.asarray(model(X)), adapted, atol=1e-6)
    assert np.abs(adapted - base).max() > 1e-2
    assert sum(int(np.prod(v.shape)) for v in model.trainable_weights) == lora_parameter_count(model) == 2 * 4 * 112


def _edit_config(root, **changes):
    path = root / "adapter" / ADAPTER_CONFIG_NAME
    config = json.loads(path.read_text())
    path.write_text(json.dumps({**config, **changes}))


def _assert_untouched(model, base_logits):
    assert lora_parameter_count(model) == 0 and all(v.trainable for v in model.weights)
    np.testing.assert_array_equal(np.asarray(model(X)), base_logits)


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(rank=2), r"adapter_model\.safetensors do not fit this model: .*lora_a` has shape \(16, 4\), "
                       r"expected \(16, 2\)"),
        (dict(target_modules=["qkv"]), r"adapter_model\.safetensors do not fit.*unexpected "
                                       r"`backbone\.transformer_layers\.0\.ffn\.up\.lora_a`"),
        (dict(target_modules=["qkv", "up", "down"]), r"missing `backbone\.transformer_layers\.0\.ffn\.down\.lora_a`"),
        (dict(target_modules=["query"]), r"adapter.*do not fit this model.*none is named 'query'"),
        (dict(model_type="llama"), r"adapter_config\.json holds adapters for a `llama` model; this model is `gpt2`"),
        (dict(rank=0), r"adapter_config\.json is not a valid LoRA adapter config"),
    ],
    ids=["rank", "fewer_targets", "more_targets", "absent_target", "family", "bad_rank"],
)
def test_mismatched_adapters_are_refused_naming_the_file(saved, changes, message):
    root, _ = saved
    _edit_config(root, **changes)
    model = GPT2CausalLM.from_pretrained(root / "base")
    base = np.asarray(model(X))
    with pytest.raises(CheckpointError, match=message):
        load_adapters(model, root / "adapter")
    _assert_untouched(model, base)


def test_adapters_for_another_shape_are_refused(saved):
    root, _ = saved
    keras.utils.set_random_seed(1)
    wider = GPT2CausalLM(GPT2Backbone(vocabulary_size=VOCAB, num_layers=2, num_heads=2, hidden_dim=24,
                                      intermediate_dim=32, max_sequence_length=32))
    wider.build()
    with pytest.raises(CheckpointError, match=r"qkv\.lora_a` has shape \(16, 4\), expected \(24, 4\)"):
        load_adapters(wider, root / "adapter")
    assert lora_parameter_count(wider) == 0


def test_missing_adapter_files_are_named(saved):
    root, _ = saved
    model = GPT2CausalLM.from_pretrained(root / "base")
    with pytest.raises(FileNotFoundError, match=r"empty.adapter_config\.json"):
        load_adapters(model, root / "empty")
    (root / "adapter" / ADAPTER_WEIGHTS_NAME).unlink()
    with pytest.raises(FileNotFoundError, match=r"adapter_model\.safetensors"):
        load_adapters(model, root / "adapter")
    assert lora_parameter_count(model) == 0


def test_loading_onto_a_model_with_adapters_is_refused(saved):
    root, _ = saved
    model = GPT2CausalLM.from_pretrained(root / "base")
    load_adapters(model, root / "adapter")
    with pytest.raises(ValueError, match="Invalid value for argument `model`. Expected a model without LoRA adapters"):
        load_adapters(model, root / "adapter")


# --- Argument checks -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(rank=0), r"`rank`. Expected an integer >= 1. Received: rank=0"),
        (dict(rank=2.5), r"`rank`. Expected an integer >= 1. Received: rank=2.5"),
        (dict(alpha=0), r"`alpha`. Expected a number in \(0.0, inf\]. Received: alpha=0.0"),
        (dict(dropout=1.0), r"`dropout`. Expected a number in \[0.0, 1.0\). Received: dropout=1.0"),
        (dict(target_modules=["attn"]), r"`target_modules`. Expected a non-empty list of names among 'qkv', "
                                        r"'query', 'key_value', 'output', 'up', 'gate', 'down'. "
                                        r"Received: target_modules=\['attn'\]"),
        (dict(target_modules=[]), r"`target_modules`. Expected a non-empty list"),
        (dict(target_modules=["qkv", "gate"]), r"`target_modules`. Expected names of projections that GPT2CausalLM has "
                                               r"\(qkv, output, up, down\); none is named 'gate'"),
        (dict(train_modules=["head"]), r"`train_modules`. Expected names or paths of layers of GPT2CausalLM \(such as "
                                       r"backbone, lm_head\); none is named 'head'"),
        (dict(target_modules=[3]), r"`target_modules`. Expected a non-empty list of names"),
    ],
)
def test_bad_arguments_are_refused_and_leave_the_model_alone(kwargs, message):
    model = gpt2()
    with pytest.raises(ValueError, match=r"Invalid value for argument " + message):
        apply_lora(model, **kwargs)
    assert lora_parameter_count(model) == 0 and all(v.trainable for v in model.weights)


def test_applying_twice_and_merging_or_saving_without_adapters_are_refused(tmp_path):
    model = gpt2()
    with pytest.raises(ValueError, match=r"Expected a model with LoRA adapters to merge \(see apply_lora\)"):
        merge_lora(model)
    with pytest.raises(ValueError, match=r"Expected a model with LoRA adapters to save"):
        save_adapters(model, tmp_path)
    apply_lora(model)
    with pytest.raises(ValueError, match=r"`model`. Expected a model without LoRA adapters .*Received: "
                                         r"model='GPT2CausalLM with adapters'"):
        apply_lora(model)
    assert lora_parameter_count(model) == 2 * 8 * (16 + 48)


# --- Keras saving and mixed precision --------------------------------------------------------------


def test_save_weights_round_trips_between_adapted_models_and_keras_files_are_refused_loudly(tmp_path):
    model = gpt2()
    apply_lora(model, rank=2, target_modules=["qkv", "down"])
    randomize_adapters(model)
    model.save_weights(tmp_path / "model.weights.h5")  # what BackupAndRestore and checkpoints write
    other = gpt2()
    apply_lora(other, rank=2, target_modules=["qkv", "down"])
    other.load_weights(tmp_path / "model.weights.h5")
    np.testing.assert_array_equal(np.asarray(other(X)), np.asarray(model(X)))
    # .keras configs do not record adapters, so loading one cannot rebuild them: it fails, never half-loads.
    model.save(tmp_path / "model.keras")
    with pytest.raises(ValueError, match="could not be loaded"):
        keras.saving.load_model(tmp_path / "model.keras")


def test_lora_dense_serialization():
    base = keras.layers.Dense(6, name="qkv")
    base.build((None, 4))
    layer = LoRADense(base, rank=2, alpha=4.0, dropout=0.1)
    layer.lora_b.assign(np.ones((2, 6), "float32"))
    run_serialization_test(layer, np.ones((2, 3, 4), "float32"))


def test_adapters_stay_float32_under_mixed_bfloat16():
    model = gpt2(dtype="mixed_bfloat16")
    base = model(X)
    apply_lora(model, rank=2)
    assert {v.dtype for v in model.trainable_weights} == {"float32"}
    randomize_adapters(model)
    adapted = model(X)
    assert adapted.dtype == base.dtype
    assert np.isfinite(np.asarray(adapted, "float32")).all()
