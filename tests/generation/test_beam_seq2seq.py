"""Encoder-decoder beam search against transformers' `T5ForConditionalGeneration` (v1.0 tied, v1.1 untied)."""

import numpy as np
import pytest

pytest.importorskip("tfllm.models.t5")

import tfllm  # noqa: E402
from testing import assert_beam_matches_transformers, make_hf_model, pick_beam_eos  # noqa: E402

MAX_NEW = 8
TINY_T5 = dict(vocab_size=99, d_model=32, d_ff=64, relative_attention_num_buckets=8,
               relative_attention_max_distance=20, dropout_rate=0.0, decoder_start_token_id=0, eos_token_id=1,
               pad_token_id=0)
VARIANTS = {
    "v1_0": dict(feed_forward_proj="relu", tie_word_embeddings=True, num_layers=2, num_heads=4, d_kv=8),
    "v1_1": dict(feed_forward_proj="gated-gelu", tie_word_embeddings=False, num_layers=3, num_decoder_layers=2,
                 num_heads=3, d_kv=6, layer_norm_epsilon=1e-3),
}


def _encoder_batch(seed=0):
    """Right-padded encoder inputs of lengths 7, 4 and 1 (T5's tokenizer pads on the right)."""
    rng = np.random.default_rng(seed)
    mask = (np.arange(7)[None, :] < np.array([7, 4, 1])[:, None]).astype(np.int64)
    return rng.integers(2, 99, (3, 7)) * mask, mask


@pytest.fixture(scope="module", params=sorted(VARIANTS))
def reference(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp(request.param)
    hf_model = make_hf_model(folder, "T5ForConditionalGeneration", {**TINY_T5, **VARIANTS[request.param]})
    ids, mask = _encoder_batch()
    # pad 0 is the checkpoint's: transformers' beam search then pads finished hypotheses with eos.
    eos = pick_beam_eos(hf_model, ids, mask, 1, MAX_NEW, pad_token_id=0)
    return dict(hf_model=hf_model, model=tfllm.AutoModelForSeq2SeqLM.from_pretrained(folder), ids=ids, mask=mask,
                eos=eos)


def _check(reference, **kwargs):
    kwargs = {"max_new_tokens": MAX_NEW, "eos_token_id": reference["eos"], **kwargs}
    return assert_beam_matches_transformers(reference["model"], reference["hf_model"], reference["ids"],
                                            reference["mask"], **kwargs)


@pytest.mark.parametrize("early_stopping", [False, True, "never"])
@pytest.mark.parametrize("length_penalty", [1.0, 0.0, 2.0])
@pytest.mark.parametrize("num_beams", [2, 4])
def test_seq2seq_beam_search_equals_transformers(reference, num_beams, length_penalty, early_stopping):
    ours = _check(reference, num_beams=num_beams, length_penalty=length_penalty, early_stopping=early_stopping,
                  num_return_sequences=num_beams)
    assert ours.shape[0] == 3 * num_beams
    assert (ours[:, 0] == reference["model"].decoder_start_token_id).all()  # the output starts at the start token


def test_hypotheses_finish_early_at_different_lengths(reference):
    ours = _check(reference, num_beams=4, num_return_sequences=4)
    ended = ours[:, 1:] == reference["eos"]
    assert ended.any(axis=1).sum() >= 2
    assert ours.shape[1] > 1 + ended.argmax(axis=1)[ended.any(axis=1)].min() + 1  # some end before others


@pytest.mark.parametrize("num_return_sequences", [1, 3])
def test_fewer_returned_sequences_than_beams(reference, num_return_sequences):
    ours = _check(reference, num_beams=4, num_return_sequences=num_return_sequences, length_penalty=2.0)
    assert ours.shape[0] == 3 * num_return_sequences


def test_explicit_pad_id(reference):
    _check(reference, num_beams=4, num_return_sequences=4, pad_token_id=5)


def test_default_eos(reference):
    _check(reference, num_beams=3, early_stopping=True)


def test_xla_gives_the_same_tokens(reference):
    kwargs = dict(max_new_tokens=MAX_NEW, num_beams=3, num_return_sequences=2, length_penalty=2.0,
                  early_stopping="never", eos_token_id=reference["eos"])
    compiled = _check(reference, jit_compile=True, **kwargs)
    plain = reference["model"].generate(reference["ids"], attention_mask=reference["mask"], **kwargs).numpy()
    np.testing.assert_array_equal(plain, compiled)
