import numpy as np
import pytest

from layer_testing import random_inputs
from testing import run_serialization_test
from tfllm.layers import PositionEmbedding, TokenEmbedding

IDS = np.array([[3, 0, 9, 9], [1, 2, 5, 7]], np.int64)


def test_token_embedding_looks_up_rows():
    layer = TokenEmbedding(vocabulary_size=10, hidden_dim=4)
    out = np.asarray(layer(IDS))
    assert out.shape == (2, 4, 4)
    np.testing.assert_array_equal(out, np.asarray(layer.embeddings)[IDS])


def test_token_embedding_reverse_is_the_transposed_table():
    layer = TokenEmbedding(vocabulary_size=10, hidden_dim=4, initializer_range=1.0)
    layer.build()
    hidden = random_inputs((2, 3, 4))
    table = np.asarray(layer.embeddings, "float64")
    logits = np.asarray(layer(hidden, reverse=True))
    assert logits.shape == (2, 3, 10)
    np.testing.assert_allclose(logits, hidden.astype("float64") @ table.T, atol=1e-5)


def test_token_embedding_output_shapes():
    layer = TokenEmbedding(vocabulary_size=10, hidden_dim=4)
    assert layer.compute_output_shape((2, 7)) == (2, 7, 4)
    assert layer.compute_output_shape((2, 7, 4), reverse=True) == (2, 7, 10)


def test_position_embedding_looks_up_positions():
    layer = PositionEmbedding(sequence_length=6, hidden_dim=4, initializer_range=1.0)
    positions = np.array([[0, 0, 0, 1], [2, 3, 4, 5]])
    out = np.asarray(layer(positions))
    np.testing.assert_array_equal(out, np.asarray(layer.embeddings)[positions])
    assert layer.compute_output_shape((2, 4)) == (2, 4, 4)


def test_token_embedding_serialization():
    run_serialization_test(TokenEmbedding(vocabulary_size=10, hidden_dim=4, initializer_range=0.5), IDS)


def test_token_embedding_reverse_serialization():
    layer = TokenEmbedding(vocabulary_size=10, hidden_dim=4, initializer_range=0.5)
    layer.build()
    run_serialization_test(layer, random_inputs((2, 3, 4)), reverse=True)


def test_position_embedding_serialization():
    run_serialization_test(PositionEmbedding(sequence_length=6, hidden_dim=4), np.array([[0, 1, 2], [5, 4, 3]]))


@pytest.mark.parametrize("value", [10.0, "10", True, None])
def test_non_integer_vocabulary_size_names_the_argument(value):
    with pytest.raises(ValueError, match=r"Invalid value for argument `vocabulary_size`\. Expected an integer >= 1"):
        TokenEmbedding(vocabulary_size=value, hidden_dim=4)


def test_zero_vocabulary_size_names_the_argument():
    with pytest.raises(ValueError, match=r"`vocabulary_size`.*Received: vocabulary_size=0"):
        TokenEmbedding(vocabulary_size=0, hidden_dim=4)


@pytest.mark.parametrize("layer_class", [TokenEmbedding, PositionEmbedding])
def test_bad_hidden_dim_names_the_argument(layer_class):
    with pytest.raises(ValueError, match=r"`hidden_dim`.*Received: hidden_dim=0"):
        layer_class(10, hidden_dim=0)


def test_bad_sequence_length_names_the_argument():
    with pytest.raises(ValueError, match=r"`sequence_length`.*Received: sequence_length=2\.5"):
        PositionEmbedding(sequence_length=2.5, hidden_dim=4)
