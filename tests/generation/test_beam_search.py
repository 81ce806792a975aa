"""Beam search against transformers' `_beam_search` (GPT-2 and a grouped-query Llama), XLA, argument checks."""

import numpy as np
import pytest
import tensorflow as tf

import tfllm
from tfllm.generation import beam_search
from tfllm.generation.beam import EARLY_STOPPING_CODES
from testing import (
    TINY_LLAMA,
    assert_beam_matches_transformers,
    left_padded_batch,
    make_hf_gpt2,
    make_hf_model,
    pick_beam_eos,
)

MAX_NEW = 8
PAD = 98  # the checkpoints' eos: never produced by these tiny models, so only padding writes it


@pytest.fixture(scope="module", params=["gpt2", "llama"])
def reference(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp(request.param)
    if request.param == "gpt2":
        hf_model = make_hf_gpt2(folder)
    else:
        hf_model = make_hf_model(folder, "LlamaForCausalLM", TINY_LLAMA)
        assert hf_model.config.num_key_value_heads < hf_model.config.num_attention_heads  # grouped-query
    ids, mask = left_padded_batch()
    model = tfllm.AutoModelForCausalLM.from_pretrained(folder)
    return dict(name=request.param, hf_model=hf_model, model=model, ids=ids, mask=mask,
                eos=pick_beam_eos(hf_model, ids, mask, ids.shape[1], MAX_NEW, PAD))


def _check(reference, **kwargs):
    kwargs = {"max_new_tokens": MAX_NEW, "eos_token_id": reference["eos"], "pad_token_id": PAD, **kwargs}
    return assert_beam_matches_transformers(reference["model"], reference["hf_model"], reference["ids"],
                                            reference["mask"], **kwargs)


@pytest.mark.parametrize("early_stopping", [False, True, "never"])
@pytest.mark.parametrize("length_penalty", [1.0, 0.0, 2.0])
@pytest.mark.parametrize("num_beams", [2, 4])
def test_beam_search_equals_transformers(reference, num_beams, length_penalty, early_stopping):
    ours = _check(reference, num_beams=num_beams, length_penalty=length_penalty, early_stopping=early_stopping,
                  num_return_sequences=num_beams)
    assert ours.shape[0] == len(reference["ids"]) * num_beams


def test_hypotheses_finish_early_and_are_padded(reference):
    ours = _check(reference, num_beams=4, num_return_sequences=4)
    generated = ours[:, reference["ids"].shape[1]:]
    ended = generated == reference["eos"]
    assert ended.any(axis=1).sum() >= 2  # several hypotheses end with eos...
    assert (generated == PAD).any()  # ...at different lengths: the shorter ones are padded


@pytest.mark.parametrize("num_return_sequences", [1, 3])
def test_fewer_returned_sequences_than_beams(reference, num_return_sequences):
    ours = _check(reference, num_beams=4, num_return_sequences=num_return_sequences, length_penalty=2.0)
    assert ours.shape[0] == len(reference["ids"]) * num_return_sequences


def test_default_eos_runs_to_max_new_tokens(reference):
    ours = assert_beam_matches_transformers(reference["model"], reference["hf_model"], reference["ids"],
                                            reference["mask"], max_new_tokens=MAX_NEW, num_beams=3, pad_token_id=PAD)
    assert ours.shape == (len(reference["ids"]), reference["ids"].shape[1] + MAX_NEW)


def test_pad_id_zero_pads_with_eos_like_transformers(reference):
    ours = _check(reference, num_beams=4, num_return_sequences=4, pad_token_id=0)
    generated = ours[:, reference["ids"].shape[1]:]
    first_eos = np.argmax(generated == reference["eos"], axis=1)
    short = [row for row in range(len(generated)) if generated[row, first_eos[row]] == reference["eos"]
             and first_eos[row] < generated.shape[1] - 1]
    assert short, "no hypothesis ended early"
    for row in short:
        assert (generated[row, first_eos[row]:] == reference["eos"]).all()


def test_one_new_token(reference):
    _check(reference, num_beams=2, num_return_sequences=2, max_new_tokens=1)


def test_xla_eager_and_graph_give_the_same_tokens(reference):
    model, ids, mask = reference["model"], reference["ids"], reference["mask"]
    kwargs = dict(max_new_tokens=MAX_NEW, num_beams=3, num_return_sequences=2, length_penalty=2.0,
                  early_stopping="never", eos_token_id=reference["eos"], pad_token_id=PAD)
    compiled = _check(reference, jit_compile=True, **kwargs)
    graph = model.generate(ids, attention_mask=mask, **kwargs).numpy()
    eager = beam_search(model, tf.constant(ids, tf.int32), tf.constant(mask, tf.int32), tf.constant(MAX_NEW), 3,
                        tf.constant(2.0), tf.constant(EARLY_STOPPING_CODES["never"]), 2, tf.constant(reference["eos"]),
                        tf.constant(PAD)).numpy()
    np.testing.assert_array_equal(graph, compiled)
    np.testing.assert_array_equal(eager, compiled)


def test_compiled_functions_are_cached_per_setting(reference):
    model, ids, mask = reference["model"], reference["ids"], reference["mask"]
    model.generate(ids, attention_mask=mask, max_new_tokens=2, num_beams=2, length_penalty=0.5)
    functions = dict(model.runtime.compiled)
    model.generate(ids[:1], attention_mask=mask[:1], max_new_tokens=3, num_beams=2, length_penalty=1.5,
                   early_stopping="never")
    assert model.runtime.compiled == functions  # one function per beam count, whatever the other settings
    assert ("beam_search", 2, 1, None) in functions  # None: the default, an XLA step in a plain loop


def test_beam_sampling_is_not_implemented(reference):
    with pytest.raises(NotImplementedError, match="Beam sampling"):
        reference["model"].generate(reference["ids"], num_beams=2, do_sample=True)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(num_beams=2, num_return_sequences=3),
         "Expected an integer <= num_beams (2). Received: num_return_sequences=3"),
        (dict(num_return_sequences=2), "Expected an integer <= num_beams (1). Received: num_return_sequences=2"),
        (dict(num_beams=2, num_return_sequences=0), "Received: num_return_sequences=0"),
        (dict(num_beams=0), "Expected an integer >= 1. Received: num_beams=0"),
        (dict(num_beams=2, early_stopping="always"),
         "Expected True, False or 'never'. Received: early_stopping='always'"),
        (dict(num_beams=2, early_stopping=1), "Received: early_stopping=1"),
        (dict(num_beams=2, length_penalty="long"), "Received: length_penalty='long'"),
        (dict(num_beams=2, length_penalty=float("nan")), "Received: length_penalty=nan"),
    ],
)
def test_invalid_beam_arguments(reference, kwargs, message):
    with pytest.raises(ValueError, match="Invalid value for argument `") as info:
        reference["model"].generate(reference["ids"], **kwargs)
    assert message in str(info.value)
