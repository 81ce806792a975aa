"""`build_model_without_running`: symbolic tracing failures fall back to an eager build; real errors propagate."""

import keras
import pytest

from tfllm.models.pretrained import build_model_without_running


class ValueDependent(keras.Model):
    """Builds fine eagerly, but `how` needs real values, so it cannot be traced on `keras.Input`s."""

    def __init__(self, how):
        super().__init__()
        self.how = how
        self.embedding = keras.layers.Embedding(10, 4)

    def call(self, inputs):
        ids = inputs["input_ids"]
        if self.how == "bool" and keras.ops.sum(ids) < 0:  # a tensor as a Python bool: TypeError
            ids = ids + 1
        if self.how == "numpy":
            ids.numpy()  # AttributeError on a symbolic tensor
        if self.how == "length":
            range(ids.shape[1])  # an unknown length as a number: TypeError
        return self.embedding(ids)


class Broken(keras.Model):
    def call(self, inputs):
        raise RuntimeError("a real bug")


@pytest.mark.parametrize("how", ["bool", "numpy", "length"])
def test_a_model_that_cannot_be_traced_is_built_eagerly(how):
    model = build_model_without_running(ValueDependent(how))
    assert model.embedding.built and model.embedding.embeddings.shape == (10, 4)


def test_an_error_that_is_not_a_tracing_failure_propagates():
    with pytest.raises(RuntimeError, match="a real bug"):
        build_model_without_running(Broken())
