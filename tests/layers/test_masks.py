import numpy as np
import tensorflow as tf

from testing import hf_position_ids
from tfllm.layers import attention_mask, positions_from_mask, update_cache

T, F = True, False


def test_attention_mask_truth_table():
    padding = np.array([[0, 1, 1], [1, 1, 1]])
    expected = np.array(
        [
            [[F, F, F], [F, T, F], [F, T, T]],
            [[T, F, F], [T, T, F], [T, T, T]],
        ]
    )
    mask = attention_mask(padding, 3)
    assert mask.dtype == tf.bool
    np.testing.assert_array_equal(np.asarray(mask), expected)


def test_attention_mask_with_cache_index():
    # Two queries at positions 2 and 3 of a 5-slot cache whose first slot is padding.
    padding = np.array([[0, 1, 1, 1, 1]])
    expected = np.array([[[F, T, T, F, F], [F, T, T, T, F]]])
    np.testing.assert_array_equal(np.asarray(attention_mask(padding, 2, cache_index=2)), expected)


def test_attention_mask_with_dynamic_shapes():
    function = tf.function(
        attention_mask,
        input_signature=[
            tf.TensorSpec([None, None], tf.int32),
            tf.TensorSpec([], tf.int32),
            tf.TensorSpec([], tf.int32),
        ],
    )
    padding = np.array([[0, 1, 1, 1]], np.int32)
    for query_length, cache_index in [(4, 0), (1, 3)]:
        np.testing.assert_array_equal(
            np.asarray(function(padding, query_length, cache_index)),
            np.asarray(attention_mask(padding, query_length, cache_index)),
        )
    assert function.experimental_get_tracing_count() == 1


def test_positions_from_mask_skips_left_padding():
    padding = np.array([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1], [0, 0, 0, 0, 1]])
    positions = positions_from_mask(padding)
    assert positions.dtype == tf.int32
    expected = np.array([[0, 0, 0, 1, 2], [0, 1, 2, 3, 4], [0, 0, 0, 0, 0]])
    np.testing.assert_array_equal(np.asarray(positions), expected)
    real = padding.astype(bool)
    np.testing.assert_array_equal(np.asarray(positions)[real], hf_position_ids(padding)[real])


def test_positions_from_bool_mask():
    padding = np.array([[False, True, True]])
    np.testing.assert_array_equal(np.asarray(positions_from_mask(padding)), [[0, 0, 1]])


def _random(shape, seed):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


def _expected_update(cache, update, index):
    expected = cache.copy()
    expected[:, index : index + update.shape[1]] = update
    return expected


def test_update_cache_writes_exactly_the_window():
    cache, update = _random((2, 6, 3, 4), 0), _random((2, 2, 3, 4), 1)
    for index in (0, 2, 4):
        out = np.asarray(update_cache(cache, update, index))
        np.testing.assert_array_equal(out, _expected_update(cache, update, index))


def test_update_cache_casts_to_the_cache_dtype():
    cache, update = _random((1, 4, 1, 2), 0), _random((1, 1, 1, 2), 1).astype("float64")
    out = update_cache(cache, update, 3)
    assert out.dtype == tf.float32
    np.testing.assert_array_equal(np.asarray(out), _expected_update(cache, update.astype("float32"), 3))


def test_update_cache_under_tf_function_with_dynamic_shapes():
    spec = tf.TensorSpec([None, None, None, None], tf.float32)
    function = tf.function(update_cache, input_signature=[spec, spec, tf.TensorSpec([], tf.int32)])
    cases = [((2, 6, 3, 4), (2, 1, 3, 4), 5), ((1, 9, 2, 2), (1, 4, 2, 2), 3), ((1, 3, 1, 1), (1, 3, 1, 1), 0)]
    for seed, (cache_shape, update_shape, index) in enumerate(cases):
        cache, update = _random(cache_shape, seed), _random(update_shape, seed + 10)
        out = np.asarray(function(cache, update, index))
        np.testing.assert_array_equal(out, _expected_update(cache, update, index))
    assert function.experimental_get_tracing_count() == 1


def test_update_cache_along_the_stacked_key_value_axis_also_under_xla():
    # The attention layers keep keys and values stacked: (batch, 2, positions, heads, head_dim).
    cache, update = _random((2, 2, 7, 3, 4), 0), _random((2, 2, 3, 3, 4), 1)
    expected = cache.copy()
    expected[:, :, 4:7] = update
    np.testing.assert_array_equal(np.asarray(update_cache(cache, update, 4, axis=2)), expected)
    xla = tf.function(lambda c, u, i: update_cache(c, u, i, axis=2), jit_compile=True)
    np.testing.assert_array_equal(np.asarray(xla(cache, update, tf.constant(4))), expected)
