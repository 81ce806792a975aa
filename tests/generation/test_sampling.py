"""Samplers against transformers' logits warpers, and the decoding loop's helpers."""

import numpy as np
import pytest
import tensorflow as tf
import torch

from tfllm.generation import filter_top_k, filter_top_p, next_token
from tfllm.generation.loop import left_align

NEG = tf.float32.min


@pytest.fixture(scope="module")
def logits():
    return np.random.default_rng(0).normal(size=(4, 50)).astype("float32") * 3


def _kept(filtered):
    return np.asarray(filtered) > NEG / 2


@pytest.mark.parametrize("k", [1, 5, 49, 50, 80])
def test_top_k_keeps_what_transformers_keeps(logits, k):
    from transformers.generation.logits_process import TopKLogitsWarper

    theirs = TopKLogitsWarper(top_k=k)(None, torch.tensor(logits)).numpy()
    ours = filter_top_k(tf.constant(logits), tf.constant(k))
    np.testing.assert_array_equal(_kept(ours), np.isfinite(theirs))
    np.testing.assert_array_equal(np.asarray(ours)[_kept(ours)], logits[_kept(ours)])


def test_top_k_zero_keeps_everything(logits):
    np.testing.assert_array_equal(filter_top_k(tf.constant(logits), tf.constant(0)), logits)


@pytest.mark.parametrize("p", [0.05, 0.3, 0.9, 0.999])
def test_top_p_keeps_what_transformers_keeps(logits, p):
    from transformers.generation.logits_process import TopPLogitsWarper

    theirs = TopPLogitsWarper(top_p=p)(None, torch.tensor(logits)).numpy()
    ours = filter_top_p(tf.constant(logits), tf.constant(p))
    np.testing.assert_array_equal(_kept(ours), np.isfinite(theirs))


def test_top_p_one_keeps_everything(logits):
    np.testing.assert_array_equal(filter_top_p(tf.constant(logits), tf.constant(1.0)), logits)


def test_greedy_is_argmax(logits):
    token = next_token(tf.constant(logits), False, 1.0, 0, 1.0, tf.constant([0, 0]), 0)
    np.testing.assert_array_equal(token, logits.argmax(-1))


def test_sampling_follows_the_softmax_distribution():
    row = np.log(np.array([0.5, 0.3, 0.15, 0.05], "float32"))
    logits = tf.constant(np.tile(row, (20000, 1)))
    draws = next_token(logits, True, tf.constant(1.0), tf.constant(0), tf.constant(1.0), tf.constant([3, 0]), tf.constant(0))
    frequencies = np.bincount(draws.numpy(), minlength=4) / 20000
    np.testing.assert_allclose(frequencies, [0.5, 0.3, 0.15, 0.05], atol=0.015)


def test_sampling_respects_top_k_and_temperature():
    logits = tf.constant(np.tile(np.log(np.array([0.4, 0.3, 0.2, 0.1], "float32")), (5000, 1)))
    draws = next_token(logits, True, tf.constant(1.0), tf.constant(2), tf.constant(1.0), tf.constant([1, 0]), tf.constant(0))
    assert set(np.unique(draws.numpy())) == {0, 1}
    cold = next_token(logits, True, tf.constant(0.05), tf.constant(0), tf.constant(1.0), tf.constant([1, 0]), tf.constant(0))
    assert (cold.numpy() == 0).mean() > 0.99


def test_seed_and_step_determine_the_draw():
    logits = tf.zeros((64, 100))
    draw = lambda seed, step: next_token(logits, True, tf.constant(1.0), tf.constant(0), tf.constant(1.0),  # noqa: E731
                                         tf.constant([seed, 0]), tf.constant(step)).numpy()
    np.testing.assert_array_equal(draw(5, 3), draw(5, 3))
    assert not np.array_equal(draw(5, 3), draw(5, 4))
    assert not np.array_equal(draw(5, 3), draw(6, 3))


def test_left_align_moves_padding_left_and_keeps_token_order():
    ids = np.array([[5, 6, 0, 0], [0, 7, 8, 9], [1, 2, 3, 4]])
    mask = np.array([[1, 1, 0, 0], [0, 1, 1, 1], [1, 1, 1, 1]])
    new_ids, new_mask = left_align(ids, mask)
    np.testing.assert_array_equal(new_mask, [[0, 0, 1, 1], [0, 1, 1, 1], [1, 1, 1, 1]])
    np.testing.assert_array_equal(new_ids[new_mask == 1], [5, 6, 7, 8, 9, 1, 2, 3, 4])
