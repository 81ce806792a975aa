"""The default decoding path: one traced loop and one XLA-compiled chunk of decode steps across prompt lengths."""

import numpy as np
import pytest

from tfllm.generation.loop import (CACHE_BUCKET, CHUNK, MIN_PROMPT_BUCKET, _compiled, cache_room, pad_prompts,
                                   xla_greedy_steps, xla_prefill)
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


def test_prompt_lengths_share_one_trace_and_one_compiled_chunk(model):
    rng = np.random.default_rng(0)
    calls = [(3, 4), (5, 7), (9, 2), (17, 11)]  # prompt + new tokens all fit one 64-position bucket
    for prompt_length, new_tokens in calls:
        ids = rng.integers(0, 64, (2, prompt_length)).astype("int32")
        fast = model.generate(ids, max_new_tokens=new_tokens, eos_token_id=-1).numpy()
        plain = model.generate(ids, max_new_tokens=new_tokens, eos_token_id=-1, jit_compile=False).numpy()
        np.testing.assert_array_equal(fast, plain)  # the XLA step picks the tokens the plain loop picks
        assert fast.shape == (2, prompt_length + new_tokens)
    model.generate(rng.integers(0, 64, (2, 70)).astype("int32"), max_new_tokens=3, eos_token_id=-1)
    # One Python trace of the loop and of the chunk of steps it calls, whatever the prompt length.
    assert _compiled(model, False, None).experimental_get_tracing_count() == 1
    assert xla_greedy_steps(model).experimental_get_tracing_count() == 1
    # XLA compiles the chunk once per input shape; the cache length is its only varying dimension
    # and it is the same for every call in one bucket.
    assert {int(p + cache_room(p, n)) for p, n in calls} == {CACHE_BUCKET}


@pytest.mark.parametrize("new_tokens", [1, CHUNK - 1, CHUNK, CHUNK + 1, 2 * CHUNK + 3])
def test_chunk_boundaries_give_the_plain_loops_tokens(model, new_tokens):
    ids = np.random.default_rng(new_tokens).integers(0, 64, (3, 6)).astype("int32")
    fast = model.generate(ids, max_new_tokens=new_tokens, eos_token_id=-1).numpy()
    plain = model.generate(ids, max_new_tokens=new_tokens, eos_token_id=-1, jit_compile=False).numpy()
    np.testing.assert_array_equal(fast, plain)
    assert fast.shape == (3, 6 + new_tokens)


def test_end_of_sequence_inside_a_later_chunk_stops_and_pads_like_the_plain_loop(model):
    ids = np.random.default_rng(1).integers(0, 64, (2, 5)).astype("int32")
    plain = model.generate(ids, max_new_tokens=2 * CHUNK + 5, eos_token_id=-1, jit_compile=False).numpy()
    # Pick as end-of-sequence the token row 0 makes after the first chunk: row 0 ends there, row 1 goes on.
    eos = int(plain[0, 5 + CHUNK + 2])
    fast = model.generate(ids, max_new_tokens=2 * CHUNK + 5, eos_token_id=eos, pad_token_id=0).numpy()
    slow = model.generate(ids, max_new_tokens=2 * CHUNK + 5, eos_token_id=eos, pad_token_id=0,
                          jit_compile=False).numpy()
    np.testing.assert_array_equal(fast, slow)
    first_eos = 5 + list(plain[0, 5:]).index(eos)
    assert (fast[0, first_eos + 1:] == 0).all()


def test_seeded_sampling_draws_the_same_tokens_with_and_without_xla(model):
    # Sampling stays out of XLA (its stateless random numbers differ from TensorFlow's): a seed must
    # draw the same tokens in the default loop as in the XLA-free loop that exports contain.
    ids = np.random.default_rng(2).integers(0, 64, (2, 7)).astype("int32")
    options = dict(max_new_tokens=CHUNK + 4, do_sample=True, top_k=20, temperature=1.5, seed=11, eos_token_id=-1)
    fast = model.generate(ids, **options).numpy()
    np.testing.assert_array_equal(fast, model.generate(ids, jit_compile=False, **options).numpy())
    assert not np.array_equal(fast, model.generate(ids, **{**options, "seed": 12}).numpy())


def test_pad_prompts_left_pads_to_a_power_of_two_of_at_least_the_minimum():
    assert MIN_PROMPT_BUCKET == 8
    for length, padded in [(1, 8), (8, 8), (9, 16), (33, 64), (64, 64), (65, 128)]:
        ids, mask = np.arange(1, length + 1)[None, :], np.ones((1, length), "int32")
        new_ids, new_mask, added = pad_prompts(ids, mask)
        assert new_ids.shape == new_mask.shape == (1, padded) and added == padded - length
        np.testing.assert_array_equal(new_ids[:, added:], ids)
        assert new_mask[:, :added].sum() == 0 and new_mask[:, added:].all()


def test_prompt_pass_compiles_once_per_padded_length_and_matches_the_plain_loop(model):
    rng = np.random.default_rng(5)
    for prompt_length in (9, 12, 16):  # all padded to 16 positions
        ids = rng.integers(0, 64, (2, prompt_length)).astype("int32")
        mask = np.ones_like(ids)
        mask[1, :3] = 0  # a left-padded row stays left-padded
        fast = model.generate(ids, attention_mask=mask, max_new_tokens=5, eos_token_id=-1).numpy()
        plain = model.generate(ids, attention_mask=mask, max_new_tokens=5, eos_token_id=-1, jit_compile=False).numpy()
        np.testing.assert_array_equal(fast, plain)
        assert fast.shape == (2, prompt_length + 5)
    assert xla_prefill(model).experimental_get_tracing_count() == 1


def test_prompt_padded_past_the_position_table_still_decodes_like_the_plain_loop(model):
    # 100 real tokens pad to 128 positions, and the cache to 192: beyond the 128-position table, which
    # only counts real tokens.
    ids = np.random.default_rng(6).integers(0, 64, (1, 100)).astype("int32")
    fast = model.generate(ids, max_new_tokens=20, eos_token_id=-1).numpy()
    plain = model.generate(ids, max_new_tokens=20, eos_token_id=-1, jit_compile=False).numpy()
    np.testing.assert_array_equal(fast, plain)
