"""The default decoding path: one traced loop and one XLA-compiled decode step across prompt lengths."""

import numpy as np
import pytest

from tfllm.generation.loop import CACHE_BUCKET, _compiled, cache_room, xla_decode_step
from tfllm.models.gpt2 import GPT2Backbone, GPT2CausalLM


@pytest.fixture(scope="module")
def model():
    backbone = GPT2Backbone(vocabulary_size=64, num_layers=2, num_heads=2, hidden_dim=16, intermediate_dim=32,
                            max_sequence_length=128)
    model = GPT2CausalLM(backbone)
    model.build()
    return model


def test_cache_room_rounds_prompt_plus_new_tokens_up_to_a_bucket():
    assert CACHE_BUCKET == 64
    assert [int(cache_room(p, n)) for p, n in [(3, 4), (32, 32), (32, 33), (60, 1)]] == [61, 32, 96, 4]


def test_prompt_lengths_share_one_trace_and_one_compiled_step(model):
    rng = np.random.default_rng(0)
    calls = [(3, 4), (5, 7), (9, 2), (17, 11)]  # prompt + new tokens all fit one 64-position bucket
    for prompt_length, new_tokens in calls:
        ids = rng.integers(0, 64, (2, prompt_length)).astype("int32")
        fast = model.generate(ids, max_new_tokens=new_tokens, eos_token_id=-1).numpy()
        plain = model.generate(ids, max_new_tokens=new_tokens, eos_token_id=-1, jit_compile=False).numpy()
        np.testing.assert_array_equal(fast, plain)  # the XLA step picks the tokens the plain loop picks
        assert fast.shape == (2, prompt_length + new_tokens)
    model.generate(rng.integers(0, 64, (2, 70)).astype("int32"), max_new_tokens=3, eos_token_id=-1)
    # One Python trace of the loop and of the step it calls, whatever the prompt length.
    assert _compiled(model, False, None).experimental_get_tracing_count() == 1
    assert xla_decode_step(model).experimental_get_tracing_count() == 1
    # XLA compiles the step once per input shape; the cache length is its only varying dimension
    # and it is the same for every call in one bucket.
    assert {int(p + cache_room(p, n)) for p, n in calls} == {CACHE_BUCKET}
