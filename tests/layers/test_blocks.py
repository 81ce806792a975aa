"""The transformer blocks each family composes on `tfllm.layers.TransformerBlock`: wiring, cache, serialization."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from layer_testing import LEFT_PADDED_MASK, assert_cached_decoding_matches_full, random_inputs, randomize_weights
from testing import run_serialization_test
from tfllm.layers import (
    LayerNorm,
    RMSNorm,
    TokenEmbedding,
    attention_mask,
    positions_from_mask,
)
from tfllm.models.bert.block import BertBlock
from tfllm.models.gpt2.block import GPT2Block
from tfllm.models.llama.block import LlamaBlock
from tfllm.models.t5.block import T5Block

PADDING = LEFT_PADDED_MASK
X = random_inputs((2, 6, 8))
POSITIONS = np.asarray(positions_from_mask(PADDING))
MASK = attention_mask(PADDING, 6)

LLAMA_LIKE = dict(num_key_value_heads=2, rope_max_wavelength=10000.0)
BLOCKS = {"gpt2": GPT2Block, "llama": LlamaBlock, "bert": BertBlock, "t5": T5Block}
NORMS = {"gpt2": LayerNorm, "llama": RMSNorm, "bert": LayerNorm, "t5": RMSNorm}


def _block(family="llama", seed=0, **kwargs):
    block = BLOCKS[family](num_heads=4, hidden_dim=8, intermediate_dim=16, **kwargs)
    block.build(X.shape)
    return randomize_weights(block, seed=seed)


@pytest.mark.parametrize("family", sorted(BLOCKS))
def test_residual_wiring(family):
    block = _block(family)
    assert isinstance(block.attention_norm, NORMS[family]) and isinstance(block.ffn_norm, NORMS[family])

    def attend(x):
        return block.attention(x, attention_mask=MASK, positions=POSITIONS)

    if family == "bert":  # post-norm: the norms after the residual sums
        hidden = block.attention_norm(X + attend(X))
        expected = block.ffn_norm(hidden + block.ffn(hidden))
    else:
        hidden = X + attend(block.attention_norm(X))
        expected = hidden + block.ffn(block.ffn_norm(hidden))
    out = np.asarray(block(X, attention_mask=MASK, positions=POSITIONS))
    np.testing.assert_allclose(out, np.asarray(expected), atol=1e-5)


def test_family_sublayers_are_configured_as_their_papers():
    gpt2, bert = _block("gpt2"), _block("bert")
    assert gpt2.ffn.activation == "gelu_tanh" and bert.ffn.activation == "gelu"
    assert gpt2.attention.qkv.bias is not None and gpt2.attention.rotary is None
    llama = _block("llama", **LLAMA_LIKE)
    assert llama.ffn.gate is not None and llama.ffn.activation == "silu" and llama.attention.rotary is not None
    assert llama.attention.num_key_value_heads == 2
    t5 = _block("t5", head_dim=4)
    assert t5.attention.scale == 1.0 and t5.attention.head_dim == 4 and t5.ffn.up.bias is None


@pytest.mark.parametrize("biases", [(True, True, False), (False, False, True), (True, False, False)],
                         ids=["attention_only", "mlp_only", "qwen2_like"])
def test_llama_biases_are_independent(biases):
    attention_bias, output_bias, mlp_bias = biases
    block = _block("llama", attention_bias=attention_bias, attention_output_bias=output_bias, mlp_bias=mlp_bias)
    assert (block.attention.qkv.bias is not None) == attention_bias
    assert (block.attention.output_dense.bias is not None) == output_bias
    assert all((dense.bias is not None) == mlp_bias for dense in (block.ffn.gate, block.ffn.up, block.ffn.down))
    config = block.get_config()
    assert (config["attention_bias"], config["attention_output_bias"], config["mlp_bias"]) == biases


@pytest.mark.parametrize("prefill_length", [0, 3], ids=["token_by_token", "prefill_then_steps"])
@pytest.mark.parametrize("family, kwargs", [("llama", LLAMA_LIKE), ("gpt2", {})], ids=["rotary_gqa", "plain"])
def test_cached_decoding_matches_full_pass(family, kwargs, prefill_length):
    assert_cached_decoding_matches_full(_block(family, **kwargs), X, PADDING, prefill_length=prefill_length)


@pytest.mark.parametrize(
    "family, kwargs",
    [
        ("gpt2", {}),
        ("bert", dict(activation="gelu_tanh")),
        ("llama", dict(LLAMA_LIKE, attention_bias=True, mlp_bias=True)),
        ("t5", dict(gated_ffn=True, activation="gelu_tanh", dropout=0.1, layer_norm_epsilon=1e-3, head_dim=4)),
    ],
    ids=["gpt2", "bert", "llama", "t5"],
)
def test_serialization(family, kwargs):
    run_serialization_test(_block(family, **kwargs), X, attention_mask=MASK, positions=POSITIONS)


@pytest.mark.parametrize("family", sorted(BLOCKS))
def test_dropout_only_in_training(family):
    block = _block(family, dropout=0.3)
    inference = np.asarray(block(X, attention_mask=MASK, positions=POSITIONS))
    np.testing.assert_array_equal(np.asarray(block(X, attention_mask=MASK, positions=POSITIONS, training=False)),
                                  inference)
    trained = block(X, attention_mask=MASK, positions=POSITIONS, training=True)
    assert not np.allclose(np.asarray(trained), inference, atol=1e-3)


@pytest.mark.parametrize(
    "family, kwargs, argument",
    [
        ("gpt2", {"activation": "gelu_new"}, "activation"),
        ("bert", {"dropout": 1.5}, "dropout"),
        ("llama", {"num_key_value_heads": 3}, "num_key_value_heads"),
        ("gpt2", {"hidden_dim": 10}, "num_heads"),
        ("bert", {"intermediate_dim": 0}, "intermediate_dim"),
        ("t5", {"layer_norm_epsilon": -1.0}, "layer_norm_epsilon"),
        ("llama", {"layer_norm_epsilon": -1.0}, "layer_norm_epsilon"),
    ],
)
def test_bad_arguments_name_the_argument(family, kwargs, argument):
    with pytest.raises(ValueError, match=f"Invalid value for argument `{argument}`"):
        BLOCKS[family](**{"num_heads": 4, "hidden_dim": 8, "intermediate_dim": 16, **kwargs})


@pytest.mark.parametrize("family", sorted(BLOCKS))
def test_per_layer_mixed_precision(family):
    block = BLOCKS[family](num_heads=4, hidden_dim=8, intermediate_dim=16, dtype="mixed_float16")
    assert block(X, attention_mask=MASK, positions=POSITIONS).dtype == "float16"


@keras.saving.register_keras_serializable(package="tfllm_tests")
class TinyLM(keras.Model):
    """Embedding, one Llama-like block, a norm and the tied output projection."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.embedding = TokenEmbedding(vocabulary_size=20, hidden_dim=8, initializer_range=0.2)
        self.block = LlamaBlock(num_heads=4, hidden_dim=8, intermediate_dim=16, dropout=0.1, **LLAMA_LIKE)
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
