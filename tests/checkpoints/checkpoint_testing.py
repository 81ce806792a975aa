"""Helpers shared by the checkpoint tests: tiny configs and state dict comparisons."""

import re

import numpy as np

GPT2_KWARGS = dict(n_layer=2, n_embd=32, n_head=4, vocab_size=99, n_positions=64)
BERT_KWARGS = dict(
    vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
    max_position_embeddings=64,
)
# Keys a PyTorch state dict may hold that a checkpoint need not: the tied head and causal-mask buffers.
PT_ONLY = (r"lm_head\.weight", r".*\.attn\.(masked_)?bias", r".*position_ids")


def torch_state_dict(model):
    """The model's state dict as float32 numpy arrays."""
    return {key: value.detach().float().numpy() for key, value in model.state_dict().items()}


def without_pt_only(state_dict):
    """Drops the keys matched by `PT_ONLY`."""
    return {k: v for k, v in state_dict.items() if not any(re.fullmatch(p, k) for p in PT_ONLY)}


def assert_state_dicts_equal(actual, expected):
    """Same keys, shapes and values, and every array float32."""
    assert sorted(actual) == sorted(expected)
    for key, value in expected.items():
        assert actual[key].shape == value.shape, key
        assert actual[key].dtype == np.float32, key
        np.testing.assert_array_equal(actual[key], value, err_msg=key)
