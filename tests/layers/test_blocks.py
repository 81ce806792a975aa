import keras
import numpy as np
import pytest
import tensorflow as tf

from layer_testing import LEFT_PADDED_MASK, assert_cached_decoding_matches_full, random_inputs, randomize_weights
from testing import run_serialization_test
from tfllm.layers import (
    DecoderBlock,
    LayerNorm,
    RMSNorm,
    TokenEmbedding,
    attention_mask,
    positions_from_mask,
)

PADDING = LEFT_PADDED_MASK
X = random_inputs((2, 6, 8))
POSITIONS = np.asarray(positions_from_mask(PADDING))
MASK = attention_mask(PADDING, 6)

LLAMA_LIKE = dict(
    num_key_value_heads=2,
    activation="silu",
    gated_ffn=True,
    norm="rms_norm",
    use_bias=False,
    rotary_max_wavelength=10000.0,
)


def _block(seed=0, **kwargs):
    block = DecoderBlock(num_heads=4, hidden_dim=8, intermediate_dim=16, **kwargs)
    block.build(X.shape)
    return randomize_weights(block, seed=seed)


@pytest.mark.parametrize("norm", ["layer_norm", "rms_norm"])
@pytest.mark.parametrize("norm_first", [True, False], ids=["pre_norm", "post_norm"])
def test_residual_wiring(norm_first, norm):
    block = _block(norm=norm, norm_first=norm_first, rotary_max_wavelength=100.0)
    assert isinstance(block.attention_norm, {"layer_norm": LayerNorm, "rms_norm": RMSNorm}[norm])

    def attend(x):
        return block.attention(x, attention_mask=MASK, positions=POSITIONS)

    if norm_first:
        hidden = X + attend(block.attention_norm(X))
        expected = hidden + block.ffn(block.ffn_norm(hidden))
    else:
        hidden = block.attention_norm(X + attend(X))
        expected = block.ffn_norm(hidden + block.ffn(hidden))
    out = np.asarray(block(X, attention_mask=MASK, positions=POSITIONS))
    np.testing.assert_allclose(out, np.asarray(expected), atol=1e-5)


def test_bias_arguments():
    block = DecoderBlock(num_heads=4, hidden_dim=8, intermediate_dim=16, use_bias=True, attention_bias=False)
    block.build(X.shape)
    assert block.attention.qkv.bias is None
    assert block.attention.output_dense.bias is not None
    assert block.ffn.up.bias is not None
    assert block.get_config()["attention_bias"] is False


@pytest.mark.parametrize("prefill_length", [0, 3], ids=["token_by_token", "prefill_then_steps"])
@pytest.mark.parametrize("kwargs", [LLAMA_LIKE, {}], ids=["rotary_gqa", "plain"])
def test_cached_decoding_matches_full_pass(kwargs, prefill_length):
    assert_cached_decoding_matches_full(_block(**kwargs), X, PADDING, prefill_length=prefill_length)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(norm="layer_norm", norm_first=True),
        dict(norm="layer_norm", norm_first=False, activation="gelu_tanh"),
        dict(norm="rms_norm", norm_first=True, **{k: v for k, v in LLAMA_LIKE.items() if k != "norm"}),
        dict(norm="rms_norm", norm_first=False, dropout=0.1, layer_norm_epsilon=1e-3),
    ],
    ids=["pre_layer_norm", "post_layer_norm", "pre_rms_norm_llama", "post_rms_norm"],
)
def test_serialization(kwargs):
    run_serialization_test(_block(**kwargs), X, attention_mask=MASK, positions=POSITIONS)


def test_dropout_only_in_training():
    block = _block(dropout=0.3)
    inference = np.asarray(block(X, attention_mask=MASK))
    np.testing.assert_array_equal(np.asarray(block(X, attention_mask=MASK, training=False)), inference)
    assert not np.allclose(np.asarray(block(X, attention_mask=MASK, training=True)), inference, atol=1e-3)


@pytest.mark.parametrize(
    "kwargs,argument",
    [
        ({"norm": "batch_norm"}, "norm"),
        ({"activation": "gelu_new"}, "activation"),
        ({"dropout": 1.5}, "dropout"),
        ({"num_key_value_heads": 3}, "num_key_value_heads"),
        ({"hidden_dim": 10}, "num_heads"),
        ({"intermediate_dim": 0}, "intermediate_dim"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs, argument):
    with pytest.raises(ValueError, match=f"Invalid value for argument `{argument}`"):
        DecoderBlock(**{"num_heads": 4, "hidden_dim": 8, "intermediate_dim": 16, **kwargs})


def test_negative_layer_norm_epsilon_names_the_argument():
    with pytest.raises(ValueError, match="`layer_norm_epsilon`"):
        DecoderBlock(num_heads=4, hidden_dim=8, intermediate_dim=16, layer_norm_epsilon=-1.0)


def test_per_layer_mixed_precision():
    block = DecoderBlock(num_heads=4, hidden_dim=8, intermediate_dim=16, dtype="mixed_float16")
    assert block(X, attention_mask=MASK).dtype == "float16"


@keras.saving.register_keras_serializable(package="tfllm_tests")
class TinyLM(keras.Model):
    """Embedding, one Llama-like block, a norm and the tied output projection."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.embedding = TokenEmbedding(vocabulary_size=20, hidden_dim=8, initializer_range=0.2)
        self.block = DecoderBlock(num_heads=4, hidden_dim=8, intermediate_dim=16, dropout=0.1, **LLAMA_LIKE)
        self.norm = RMSNorm()

    def call(self, token_ids, training=None):
        padding = tf.ones_like(token_ids)
        x = self.embedding(token_ids)
        x = self.block(
            x,
            attention_mask=attention_mask(padding, tf.shape(token_ids)[1]),
            positions=positions_from_mask(padding),
            training=training,
        )
        return self.embedding(self.norm(x), reverse=True)


def test_fit_one_step():
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 20, (4, 7))
    model = TinyLM()
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model(ids[:, :-1])
    before = [np.array(w) for w in model.trainable_weights]
    history = model.fit(ids[:, :-1], ids[:, 1:], batch_size=4, epochs=1, verbose=0)
    loss = history.history["loss"]
    assert len(loss) == 1 and np.isfinite(loss[0])
    assert np.isclose(loss[0], np.log(20), rtol=0.2)  # near-uniform logits at initialisation
    changed = [not np.array_equal(b, np.asarray(w)) for b, w in zip(before, model.trainable_weights)]
    assert all(changed), [w.path for w, c in zip(model.trainable_weights, changed) if not c]
