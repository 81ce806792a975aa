"""The shared test harness: tiny reference checkpoints made with transformers, and layer checks."""

import os

import keras
import numpy as np

TINY_GPT2 = dict(n_layer=2, n_embd=32, n_head=4, n_inner=64, vocab_size=99, n_positions=48,
                 bos_token_id=97, eos_token_id=98, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)


def make_hf_gpt2(folder, seed=0, **overrides):
    """Writes a random transformers GPT2LMHeadModel to `folder` (safetensors) and returns it (eval mode)."""
    import torch
    import transformers

    torch.manual_seed(seed)
    config = transformers.GPT2Config(**{**TINY_GPT2, **overrides})
    model = transformers.GPT2LMHeadModel(config).eval()
    # A wider init than the default makes next-token choices decisive, so greedy comparisons test
    # the model and not float rounding between near-tied logits.
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.dim() > 1:
                parameter.normal_(0.0, 0.2)
    model.save_pretrained(folder)
    return model


def left_padded_batch(vocab_size=90, lengths=(7, 4, 1), seed=0):
    """Random token ids with left padding: returns (input_ids, attention_mask) int64 numpy arrays."""
    rng = np.random.default_rng(seed)
    width = max(lengths)
    ids = np.zeros((len(lengths), width), np.int64)
    mask = np.zeros_like(ids)
    for row, length in enumerate(lengths):
        ids[row, width - length:] = rng.integers(0, vocab_size, length)
        mask[row, width - length:] = 1
    return ids, mask


def hf_position_ids(mask):
    """Position ids as transformers' generate computes them for left-padded prompts."""
    positions = np.cumsum(mask, axis=1) - 1
    return np.where(mask == 0, 1, positions)


def hf_logits(hf_model, ids, mask):
    """transformers' logits for a left-padded batch, with the position ids its `generate` would use."""
    import torch

    with torch.no_grad():
        return hf_model(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
                        position_ids=torch.tensor(hf_position_ids(mask))).logits.float().numpy()


def real_positions_diff(ours, theirs, mask):
    """Largest absolute difference over real (unpadded) positions of two `(batch, seq, ...)` arrays."""
    return np.abs((np.asarray(ours) - theirs) * mask[:, :, None]).max()


def assert_greedy_matches_transformers(model, hf_model, ids, mask, pad_token_id, max_new_tokens=12):
    """tfllm's greedy `generate` must give transformers' greedy tokens, token for token."""
    import torch

    ours = model.generate(ids, attention_mask=mask, max_new_tokens=max_new_tokens).numpy()
    with torch.no_grad():
        theirs = hf_model.generate(
            torch.tensor(ids), attention_mask=torch.tensor(mask), max_new_tokens=max_new_tokens, do_sample=False,
            pad_token_id=pad_token_id,
        ).numpy()
    np.testing.assert_array_equal(ours, theirs)


def run_serialization_test(layer, *args, **kwargs):
    """Checks `get_config` round-trips and a `.keras` save/load of a model wrapping `layer` gives the same outputs.

    `layer` is called on `args` and `kwargs` (the first positional argument is its main input, whose
    shape builds the restored layer). The model is saved with `model.save` and restored with
    `keras.saving.load_model`, so the layer must be registered and its config must rebuild it.
    """
    import tempfile

    config = layer.get_config()
    clone = type(layer).from_config(config)
    assert clone.get_config() == config
    expected = layer(*args, **kwargs)
    model = SerializationWrapper(layer, input_shape=tuple(np.shape(args[0])))
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.keras")
        model.save(path)
        restored = keras.saving.load_model(path)
    assert isinstance(restored, SerializationWrapper)
    assert type(restored.inner) is type(layer)
    assert restored.inner is not layer
    assert restored.inner.get_config() == config
    assert len(restored.inner.weights) == len(layer.weights)
    # The restored layer is called directly: Keras refuses a model call whose `**kwargs` mix tensors
    # and Python values (such as `cache_index=0`).
    _assert_nested_close(expected, restored.inner(*args, **kwargs))


@keras.saving.register_keras_serializable(package="tfllm_tests")
class SerializationWrapper(keras.Model):
    """A model holding one layer, so the layer goes through a real `.keras` save and load.

    Args:
        inner: the layer (or its serialized config, when restored).
        input_shape: the shape of the layer's main input; the restored layer is built with it so
            the saved weights have variables to load into.
    """

    def __init__(self, inner, input_shape, **kwargs):
        super().__init__(**kwargs)
        if isinstance(inner, dict):
            inner = keras.saving.deserialize_keras_object(inner)
        self.inner = inner
        self.inner_input_shape = tuple(input_shape)
        if not inner.built:
            inner.build(self.inner_input_shape)
        self.built = True

    def call(self, *args, **kwargs):
        return self.inner(*args, **kwargs)

    def get_build_config(self):
        # The inner layer is built from `input_shape` in `__init__`; Keras' own record of the call's
        # arguments cannot rebuild a model called with keyword tensors and a cache.
        return None

    def get_config(self):
        return {
            "name": self.name,
            "inner": keras.saving.serialize_keras_object(self.inner),
            "input_shape": list(self.inner_input_shape),
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def _assert_nested_close(a, b, atol=1e-6):
    if isinstance(a, (tuple, list)):
        assert isinstance(b, (tuple, list)) and len(a) == len(b), f"structure differs: {len(a)} outputs vs {b!r}"
        for x, y in zip(a, b):
            _assert_nested_close(x, y, atol)
    else:
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=atol)
