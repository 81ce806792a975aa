"""`host_decode`: the host-side loop the TFLite/ONNX runners and the server's token stream share."""

import numpy as np
import pytest
import tensorflow as tf
import torch

import tfllm
from testing import make_hf_gpt2
from tfllm.generation.host_loop import greedy, host_decode
from tfllm.generation.loop import cache_room

VOCABULARY = 5


def scripted(tokens):
    """Steps that make `greedy` choose `tokens` in order, recording every call."""
    calls = []

    def logits_for(index):
        return np.eye(VOCABULARY)[tokens[index]] if index < len(tokens) else np.zeros(VOCABULARY)

    def prefill():
        calls.append("prefill")
        return logits_for(0), "state"

    def step(token, index, state):
        calls.append((token, index, state))
        return logits_for(index + 1), state

    return prefill, step, calls


def test_it_stops_at_max_new_tokens_without_a_wasted_step():
    prefill, step, calls = scripted([1, 2, 3, 4, 1])
    assert list(host_decode(prefill, step, greedy, 3)) == [1, 2, 3]
    assert calls == ["prefill", (1, 0, "state"), (2, 1, "state")]


@pytest.mark.parametrize("include_eos, expected", [(True, [1, 4]), (False, [1])])
def test_it_stops_at_the_first_end_of_sequence_id(include_eos, expected):
    prefill, step, calls = scripted([1, 4, 2, 3])
    assert list(host_decode(prefill, step, greedy, 10, eos_token_ids=(4, 3), include_eos=include_eos)) == expected
    assert calls == ["prefill", (1, 0, "state")]


def test_nothing_runs_until_the_first_token_is_asked_for():
    prefill, step, calls = scripted([1])
    tokens = host_decode(prefill, step, greedy, 1)
    assert calls == []
    assert list(tokens) == [1] and calls == ["prefill"]


def test_max_new_tokens_is_checked():
    prefill, step, _ = scripted([1])
    with pytest.raises(ValueError, match=r"Invalid value for argument `max_new_tokens`. Expected an integer >= 1"):
        list(host_decode(prefill, step, greedy, 0))


@pytest.fixture(scope="module")
def gpt2(tmp_path_factory):
    folder = tmp_path_factory.mktemp("gpt2")
    return make_hf_gpt2(folder), tfllm.AutoModelForCausalLM.from_pretrained(folder)


def keras_steps(model, ids, max_new_tokens):
    """`host_decode`'s steps over a Keras causal LM's own `prefill` and `decode_step` (one prompt)."""
    token_ids = tf.constant([ids], tf.int32)

    def prefill():
        logits, state, _ = model.prefill(token_ids, tf.ones_like(token_ids), cache_room(len(ids), max_new_tokens))
        return logits[0], state

    def step(token, index, state):
        logits, state = model.decode_step(tf.constant([token], tf.int32), tf.constant(index, tf.int32), state)
        return logits[0], state

    return prefill, step


def test_greedy_over_keras_steps_gives_transformers_tokens_and_generates(gpt2):
    """The plain reference loop beside the compiled `generate`: both give transformers' greedy tokens."""
    hf_model, model = gpt2
    ids, new = [5, 17, 42, 8, 63], 12
    with torch.no_grad():
        theirs = hf_model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                                   max_new_tokens=new, do_sample=False, pad_token_id=0, eos_token_id=None)
    expected = theirs[0, len(ids):].tolist()
    assert list(host_decode(*keras_steps(model, ids, new), greedy, new)) == expected
    assert np.asarray(model.generate(np.array([ids]), max_new_tokens=new, eos_token_id=-1))[0, len(ids):].tolist() \
        == expected
    eos = expected[4]  # stopping: transformers ends at the first occurrence, eos included
    stopped = list(host_decode(*keras_steps(model, ids, new), greedy, new, eos_token_ids=(eos,)))
    assert stopped == expected[:expected.index(eos) + 1]
