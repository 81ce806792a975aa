"""The private Keras APIs tfllm relies on, checked against the installed Keras.

Each test names `keras.__version__` in its failure message: when one fails after a Keras upgrade,
the private attribute behind tfllm/layers/keras_internals.py changed and that module needs updating.
"""

import keras
import numpy as np
import pytest

from tfllm.layers import keras_internals
from tfllm.layers.keras_internals import deferred_initializers, run_deferred_initializers
from tfllm.layers.tracking import replace_sublayer

KERAS = f"Keras {keras.__version__}"


class Parent(keras.layers.Layer):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.proj = keras.layers.Dense(3, name="proj")
        self.blocks = [keras.layers.Dense(3, name="block")]

    def build(self, input_shape):
        self.proj.build(input_shape)
        self.blocks[0].build(input_shape)

    def call(self, x):
        return self.blocks[0](self.proj(x))


def test_the_variable_initializer_hook_exists():
    hook = getattr(keras.Variable, "_initialize_with_initializer", None)
    assert callable(hook), f"{KERAS}: keras.Variable._initialize_with_initializer is gone; update keras_internals"


def test_variables_made_inside_are_zeros_until_their_initializers_run():
    initializer = keras.initializers.Constant(0.5)
    with deferred_initializers() as created:
        deferred = keras.Variable(initializer, shape=(2, 3))
        loaded = keras.Variable(initializer, shape=(4,))
    assert [variable for variable, _ in created] == [deferred, loaded], (
        f"{KERAS}: new variables no longer go through keras.Variable._initialize_with_initializer"
    )
    assert not np.any(deferred.numpy()), f"{KERAS}: a variable made inside deferred_initializers() is not zeros"
    loaded.assign(np.full((4,), 2.0, "float32"))
    run_deferred_initializers(created, loaded=[loaded])
    np.testing.assert_array_equal(deferred.numpy(), np.full((2, 3), 0.5), err_msg=KERAS)
    np.testing.assert_array_equal(loaded.numpy(), np.full((4,), 2.0), err_msg=KERAS)
    after = keras.Variable(initializer, shape=(2,))
    np.testing.assert_array_equal(after.numpy(), [0.5, 0.5], err_msg=f"{KERAS}: the hook was not restored")


def test_the_layer_tracker_has_what_a_sublayer_swap_uses():
    parent = Parent()
    tracker = getattr(parent, "_tracker", None)
    assert tracker is not None and hasattr(tracker, "locked"), f"{KERAS}: Layer._tracker (with `locked`) is gone"
    for method in ("replace_tracked_value", "lock", "unlock"):
        assert callable(getattr(tracker, method, None)), f"{KERAS}: Tracker.{method} is gone"


@pytest.mark.parametrize("index", [None, 0])
def test_a_swapped_sublayer_replaces_the_old_one_in_layers_and_weights(index):
    parent = Parent()
    parent.build((None, 3))
    old = parent.proj if index is None else parent.blocks[0]
    new = keras.layers.Dense(3, use_bias=False, name="new")
    new.build((None, 3))
    replace_sublayer(parent, "proj" if index is None else "blocks", old, new, index=index)
    assert new in parent._layers and old not in parent._layers, f"{KERAS}: the tracker kept the old sublayer"
    weights = {id(w) for w in parent.weights}
    assert id(new.kernel) in weights and id(old.kernel) not in weights, f"{KERAS}: weights not swapped"
    assert parent._tracker.locked, f"{KERAS}: a built layer's tracker was left unlocked"


def test_a_missing_tracker_is_reported_naming_the_keras_version():
    with pytest.raises(RuntimeError, match=rf"Keras {keras.__version__} has no `Layer._tracker`"):
        keras_internals.tracker(object())
