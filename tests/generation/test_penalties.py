"""`repetition_penalty` and `no_repeat_ngram_size` against transformers' logits processors and `generate`."""

import numpy as np
import pytest
import tensorflow as tf
import torch

import tfllm
from testing import make_hf_gpt2, make_hf_model
from tfllm.generation.loop import CHUNK, _compiled, xla_greedy_steps
from tfllm.generation.processors import Penalties, process_logits, start_history

MAX_NEW = 20
PAD = 98  # the GPT-2 checkpoint's eos: never produced by this tiny model
SETTINGS = {
    "repetition_penalty": dict(repetition_penalty=1.3),
    "ngram_2": dict(no_repeat_ngram_size=2),
    "ngram_3": dict(no_repeat_ngram_size=3),
    "both": dict(repetition_penalty=1.3, no_repeat_ngram_size=2),
}


def _processed(logits, ids, mask=None, repetition_penalty=1.0, no_repeat_ngram_size=0):
    mask = np.ones_like(ids) if mask is None else mask
    penalties = Penalties(tf.constant(repetition_penalty, tf.float32), tf.constant(no_repeat_ngram_size, tf.int32))
    history = start_history(tf.constant(ids, tf.int32), tf.constant(mask, tf.int32), 0, penalties)
    return process_logits(tf.constant(logits), history).numpy()


def _transformers_processed(logits, ids, repetition_penalty=1.0, no_repeat_ngram_size=0):
    from transformers.generation.logits_process import NoRepeatNGramLogitsProcessor, RepetitionPenaltyLogitsProcessor

    scores, input_ids = torch.tensor(logits), torch.tensor(ids)
    if repetition_penalty != 1.0:
        scores = RepetitionPenaltyLogitsProcessor(repetition_penalty)(input_ids, scores)
    if no_repeat_ngram_size:
        scores = NoRepeatNGramLogitsProcessor(no_repeat_ngram_size)(input_ids, scores)
    return scores.numpy()


@pytest.fixture(scope="module")
def random_batch():
    rng = np.random.default_rng(0)
    # A vocabulary of 6 over 14 positions: tokens and n-grams repeat.
    return rng.normal(size=(4, 6)).astype("float32") * 3, rng.integers(0, 6, (4, 14))


@pytest.mark.parametrize("penalty", [0.5, 1.3, 2.0])
def test_repetition_penalty_equals_transformers(random_batch, penalty):
    logits, ids = random_batch
    expected = _transformers_processed(logits, ids, repetition_penalty=penalty)
    np.testing.assert_allclose(_processed(logits, ids, repetition_penalty=penalty), expected, rtol=1e-6)
    assert not np.allclose(expected, logits)


@pytest.mark.parametrize("size", [1, 2, 3, 4, 14, 15])
def test_no_repeat_ngram_equals_transformers(random_batch, size):
    logits, ids = random_batch
    expected = _transformers_processed(logits, ids, no_repeat_ngram_size=size)
    np.testing.assert_array_equal(_processed(logits, ids, no_repeat_ngram_size=size), expected)
    if size <= 2:
        assert np.isneginf(expected).any()


def test_both_processors_equal_transformers(random_batch):
    logits, ids = random_batch
    expected = _transformers_processed(logits, ids, repetition_penalty=1.7, no_repeat_ngram_size=2)
    np.testing.assert_allclose(_processed(logits, ids, repetition_penalty=1.7, no_repeat_ngram_size=2), expected)


def test_off_settings_change_nothing(random_batch):
    logits, ids = random_batch
    np.testing.assert_array_equal(_processed(logits, ids), logits)


def test_left_padding_is_ignored(random_batch):
    """transformers counts pad ids too (so a padded row's eos/pad logit is penalized); tfllm does not:
    a left-padded row is processed as transformers processes it unpadded."""
    logits, ids = random_batch
    real = ids[:1, 5:]
    padded = np.concatenate([np.full((1, 5), 5), real], axis=1)  # pad id 5: a real token id too
    real = np.where(real == 5, 4, real)  # ...absent from the real tokens, so padding would show
    padded[:, 5:] = real
    mask = (np.arange(padded.shape[1]) >= 5).astype(np.int64)[None, :]
    for settings in [dict(repetition_penalty=1.5), dict(no_repeat_ngram_size=1), dict(no_repeat_ngram_size=2)]:
        expected = _transformers_processed(logits[:1], real, **settings)
        np.testing.assert_allclose(_processed(logits[:1], padded, mask, **settings), expected)
    assert not np.allclose(_transformers_processed(logits[:1], padded, repetition_penalty=1.5), expected)


@pytest.fixture(scope="module")
def gpt2(tmp_path_factory):
    folder = tmp_path_factory.mktemp("gpt2")
    hf_model = make_hf_gpt2(folder)
    return hf_model, tfllm.AutoModelForCausalLM.from_pretrained(folder)


def _hf_generate(hf_model, ids, mask=None, **kwargs):
    mask = np.ones_like(ids) if mask is None else mask
    with torch.no_grad():
        return hf_model.generate(torch.tensor(ids), attention_mask=torch.tensor(mask), max_new_tokens=MAX_NEW,
                                 do_sample=False, pad_token_id=PAD, **kwargs).numpy()


@pytest.mark.parametrize("jit_compile", [None, False])
@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_greedy_equals_transformers(gpt2, name, jit_compile):
    """A batch of two prompts of the same length (unpadded: see `test_left_padding_is_ignored`)."""
    hf_model, model = gpt2
    ids = np.random.default_rng(1).integers(0, 90, (2, 5))
    ours = model.generate(ids, max_new_tokens=MAX_NEW, jit_compile=jit_compile, **SETTINGS[name]).numpy()
    np.testing.assert_array_equal(ours, _hf_generate(hf_model, ids, **SETTINGS[name]))
    assert not np.array_equal(ours, model.generate(ids, max_new_tokens=MAX_NEW).numpy())  # the setting matters


def test_settings_share_one_trace_across_chunks(gpt2):
    """Penalty values are tensors: one traced loop and chunk serve them all, across XLA chunk boundaries."""
    _, model = gpt2
    ids = np.random.default_rng(4).integers(0, 90, (2, 3))
    for index, settings in enumerate([dict(repetition_penalty=1.1), dict(no_repeat_ngram_size=1),
                                      dict(repetition_penalty=0.8, no_repeat_ngram_size=4)]):
        options = dict(max_new_tokens=2 * CHUNK + 3, eos_token_id=-1, **settings)
        fast = model.generate(ids, **options).numpy()
        np.testing.assert_array_equal(fast, model.generate(ids, jit_compile=False, **options).numpy())
        if index == 0:
            traces = xla_greedy_steps(model).experimental_get_tracing_count()
    assert _compiled(model, False, None, penalized=True).experimental_get_tracing_count() == 1
    assert xla_greedy_steps(model).experimental_get_tracing_count() == traces


def test_padded_rows_continue_as_alone(gpt2):
    hf_model, model = gpt2
    ids = np.array([[0, 0, 0, 11, 12, 13, 14], [21, 22, 23, 24, 25, 26, 27]])
    mask = (ids > 0).astype(np.int64)
    ours = model.generate(ids, attention_mask=mask, max_new_tokens=MAX_NEW, **SETTINGS["both"]).numpy()
    np.testing.assert_array_equal(ours[0, 3:], _hf_generate(hf_model, ids[:1, 3:], **SETTINGS["both"])[0])
    np.testing.assert_array_equal(ours[1], _hf_generate(hf_model, ids[1:], **SETTINGS["both"])[0])


@pytest.mark.parametrize("jit_compile", [None, False])
def test_sampling_never_repeats_an_ngram(gpt2, jit_compile):
    _, model = gpt2
    ids = np.random.default_rng(2).integers(0, 90, (3, 4))
    kwargs = dict(max_new_tokens=30, do_sample=True, seed=7, top_k=5, repetition_penalty=1.2,
                  no_repeat_ngram_size=2, eos_token_id=-1, jit_compile=jit_compile)
    ours = model.generate(ids, **kwargs).numpy()
    for row in ours:
        bigrams = list(zip(row[:-1], row[1:]))
        assert len(set(bigrams)) == len(bigrams)
    np.testing.assert_array_equal(ours, model.generate(ids, **kwargs).numpy())  # the seed still repeats


@pytest.mark.slow
def test_seq2seq_greedy_and_beams_equal_transformers(tmp_path):
    """For an encoder-decoder the processors see the decoder's ids (the start token included)."""
    pytest.importorskip("tfllm.models.t5")
    tiny = dict(vocab_size=99, d_model=32, d_ff=64, relative_attention_num_buckets=8, relative_attention_max_distance=20,
                dropout_rate=0.0, decoder_start_token_id=0, eos_token_id=1, pad_token_id=0,
                feed_forward_proj="relu", tie_word_embeddings=True, num_layers=2, num_heads=4, d_kv=8)
    hf_model = make_hf_model(tmp_path, "T5ForConditionalGeneration", tiny)
    model = tfllm.AutoModelForSeq2SeqLM.from_pretrained(tmp_path)
    ids = np.random.default_rng(3).integers(2, 99, (2, 6))
    ours = model.generate(ids, max_new_tokens=MAX_NEW, eos_token_id=-1, **SETTINGS["both"]).numpy()
    with torch.no_grad():
        theirs = hf_model.generate(torch.tensor(ids), max_new_tokens=MAX_NEW, do_sample=False, eos_token_id=None,
                                   **SETTINGS["both"]).numpy()
    np.testing.assert_array_equal(ours, theirs)
    beams = dict(num_beams=3, num_return_sequences=2, max_new_tokens=10)
    ours = model.generate(ids, **beams, **SETTINGS["both"]).numpy()
    with torch.no_grad():
        theirs = hf_model.generate(torch.tensor(ids), do_sample=False, **beams, **SETTINGS["both"]).numpy()
    np.testing.assert_array_equal(ours, theirs)


@pytest.mark.parametrize("kwargs, match", [
    (dict(repetition_penalty=0.0), "`repetition_penalty`. Expected a finite number > 0. Received: repetition_penalty=0.0"),
    (dict(repetition_penalty=-1.2), "`repetition_penalty`"),
    (dict(repetition_penalty=float("nan")), "`repetition_penalty`"),
    (dict(repetition_penalty=float("inf")), "`repetition_penalty`. Expected a finite number > 0. Received: repetition_penalty=inf"),
    (dict(repetition_penalty="1.2"), "`repetition_penalty`"),
    (dict(repetition_penalty=True), "`repetition_penalty`"),
    (dict(no_repeat_ngram_size=-1), "`no_repeat_ngram_size`. Expected an integer >= 0. Received: no_repeat_ngram_size=-1"),
    (dict(no_repeat_ngram_size=2.5), "`no_repeat_ngram_size`"),
    (dict(no_repeat_ngram_size=True), "`no_repeat_ngram_size`"),
])
def test_bad_arguments_are_refused_by_name(gpt2, kwargs, match):
    with pytest.raises(ValueError, match=match):
        gpt2[1].generate([[1, 2, 3]], max_new_tokens=2, **kwargs)


@pytest.mark.parametrize("jit_compile", [None, False])
@pytest.mark.parametrize("name", ["repetition_penalty", "both"])
def test_beam_search_equals_transformers(gpt2, name, jit_compile):
    """transformers applies the processors to each beam's log-probabilities, with its own tokens."""
    hf_model, model = gpt2
    ids = np.random.default_rng(1).integers(0, 90, (2, 5))
    beams = dict(num_beams=3, num_return_sequences=3, max_new_tokens=12)
    ours = model.generate(ids, jit_compile=jit_compile, **beams, **SETTINGS[name]).numpy()
    with torch.no_grad():
        theirs = hf_model.generate(torch.tensor(ids), do_sample=False, pad_token_id=PAD, **beams,
                                   **SETTINGS[name]).numpy()
    np.testing.assert_array_equal(ours, theirs)
    assert not np.array_equal(ours, model.generate(ids, **beams).numpy())
