"""Weight-only quantization (`tfllm.quantize`): numbers against the float32 model it came from."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfllm.models.gpt2 import GPT2Backbone, GPT2CausalLM
from tfllm.models.llama import LlamaBackbone, LlamaCausalLM
from tfllm.models.pretrained import build_model
from tfllm.quantize import QUANTIZATION_MODES, QuantizedDense, QuantizedTokenEmbedding, quantize, quantization_mode
from tfllm.training.lora import apply_lora

# Max |logits - float32 logits| allowed, relative to max |float32 logits|: int8 keeps ~2 decimal
# digits per weight, bfloat16 ~3, float16 ~4.
RELATIVE_TOLERANCE = {"int8": 0.03, "bfloat16": 0.01, "float16": 1e-3}


def make_gpt2(seed=0):
    keras.utils.set_random_seed(seed)
    backbone = GPT2Backbone(vocabulary_size=99, num_layers=2, num_heads=4, hidden_dim=32, intermediate_dim=64,
                            max_sequence_length=48)
    return build_model(GPT2CausalLM(backbone, eos_token_id=0))


def make_llama(seed=0):
    keras.utils.set_random_seed(seed)
    backbone = LlamaBackbone(vocabulary_size=99, num_layers=2, num_heads=4, num_key_value_heads=2, hidden_dim=32,
                             intermediate_dim=64, max_sequence_length=48)
    return build_model(LlamaCausalLM(backbone, eos_token_id=0))


IDS = np.random.default_rng(0).integers(1, 99, (2, 9)).astype("int32")


@pytest.mark.parametrize("make", [make_gpt2, make_llama], ids=["gpt2", "llama"])
@pytest.mark.parametrize("mode", QUANTIZATION_MODES)
def test_logits_close_to_float32(make, mode):
    reference = keras.ops.convert_to_numpy(make()(IDS))
    model = quantize(make(), mode)
    logits = keras.ops.convert_to_numpy(model(IDS))
    assert logits.dtype == np.float32
    assert np.abs(logits - reference).max() <= RELATIVE_TOLERANCE[mode] * np.abs(reference).max()
    # Incremental decoding (the XLA matrix-vector path) computes what the full pass computes.
    logits0, state, _ = model.prefill(IDS[:, :-1], np.ones((2, 8), "int32"), 4)
    step_logits, _ = model.decode_step(tf.constant(IDS[:, -1]), tf.constant(0), state)
    np.testing.assert_allclose(logits0.numpy(), logits[:, -2], atol=1e-5)
    np.testing.assert_allclose(step_logits.numpy(), logits[:, -1], atol=1e-5)
    assert quantization_mode(model) == mode


def test_every_projection_and_the_tied_head_are_replaced():
    model = quantize(make_gpt2(), "int8")
    block = model.backbone.transformer_layers[0]
    assert isinstance(block.attention.qkv, QuantizedDense) and isinstance(block.ffn.down, QuantizedDense)
    assert isinstance(model.backbone.token_embedding, QuantizedTokenEmbedding)
    assert model.backbone.token_embedding.table.dtype == "int8"
    assert not any("kernel" == v.path.split("/")[-1] for v in model.weights)  # no float kernel left
    llama = quantize(make_llama(), "bfloat16")
    assert isinstance(llama.lm_head.dense, QuantizedDense) and llama.lm_head.dense.table.dtype == "bfloat16"


def test_int8_is_per_output_channel_symmetric():
    dense = keras.layers.Dense(3, use_bias=False)
    dense.build((None, 2))
    dense.kernel.assign(np.array([[1.0, -0.5, 0.0], [-2.0, 0.25, 0.0]], "float32"))  # (in, out)
    layer = QuantizedDense(dense, "int8")
    np.testing.assert_array_equal(layer.table.numpy(), [[64, -127], [-127, 64], [0, 0]])  # (out, in)
    np.testing.assert_allclose(layer.scale.numpy(), [2 / 127, 0.5 / 127, 1.0])
    x = np.array([[[1.0, 1.0]]], "float32")
    np.testing.assert_allclose(layer(x).numpy(), [[[64 * 2 / 127 - 2, -0.5 + 64 * 0.5 / 127, 0.0]]], rtol=1e-6)


@pytest.mark.parametrize("mode", QUANTIZATION_MODES)
def test_greedy_generate_after_quantize(mode):
    model = make_gpt2()
    model.generate(IDS, max_new_tokens=3, eos_token_id=-1)  # a traced loop over the float layers, forgotten
    quantize(model, mode)
    out = model.generate(IDS, max_new_tokens=6, eos_token_id=-1).numpy()
    assert out.shape == (2, 15)
    np.testing.assert_array_equal(out[:, :9], IDS)
    expected = np.argmax(model(out[:, :-1]).numpy()[:, 8:], axis=-1)  # greedy = argmax of the full pass
    np.testing.assert_array_equal(out[:, 9:], expected)
    # Without the XLA decode step (how quantized models decode fastest), the same tokens.
    np.testing.assert_array_equal(model.generate(IDS, max_new_tokens=6, eos_token_id=-1, jit_compile=False), out)


def test_errors():
    with pytest.raises(ValueError, match=r"Invalid value for argument `mode`.*'int8'.*Received: mode='int4'"):
        quantize(make_gpt2(), "int4")
    model = quantize(make_gpt2(), "int8")
    with pytest.raises(ValueError, match="not quantized yet.*Received: model='GPT2CausalLM quantized to int8'"):
        quantize(model, "float16")
    adapted = make_gpt2()
    apply_lora(adapted, rank=2)
    with pytest.raises(ValueError, match="without LoRA adapters"):
        quantize(adapted, "int8")
    with pytest.raises(RuntimeError, match="Save or export the model before quantizing"):
        model.backbone.token_embedding.embeddings  # noqa: B018


def _char_batches(text, length, batch_size, steps, seed):
    data = np.frombuffer(text.encode("ascii", "ignore"), np.uint8).astype("int32") % 128
    starts = np.random.default_rng(seed).integers(0, len(data) - length - 1, (steps, batch_size))
    windows = data[starts[..., None] + np.arange(length + 1)]  # (steps, B, T + 1)
    return windows[..., :-1], windows[..., 1:]


def test_next_token_agreement_on_a_trained_model():
    """A character-level GPT-2 trained briefly on the Python docs: every mode picks float32's next token
    at >= 99% of held-out positions."""
    from pydoc_data.topics import topics

    text = "\n".join(topics[name] for name in sorted(topics))
    keras.utils.set_random_seed(0)
    backbone = GPT2Backbone(vocabulary_size=128, num_layers=2, num_heads=2, hidden_dim=64, intermediate_dim=256,
                            max_sequence_length=64)
    model = GPT2CausalLM(backbone)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss=loss)
    inputs, labels = _char_batches(text[: len(text) // 2], 64, 16, 250, seed=0)
    history = model.fit(inputs.reshape(-1, 64), labels.reshape(-1, 64), batch_size=16, epochs=1, verbose=0)
    assert history.history["loss"][-1] < 3.5  # the epoch mean: well below the uniform ln(128) = 4.85
    held_out, _ = _char_batches(text[len(text) // 2:], 64, 32, 1, seed=1)
    reference = model.predict(held_out[0], verbose=0).argmax(-1)
    agreements = {}
    weights = model.get_weights()
    for mode in QUANTIZATION_MODES:
        copy = build_model(GPT2CausalLM(GPT2Backbone(**backbone.get_config())))
        copy.set_weights(weights)
        quantize(copy, mode)
        agreements[mode] = float((copy.predict(held_out[0], verbose=0).argmax(-1) == reference).mean())
    assert min(agreements.values()) >= 0.99, agreements
