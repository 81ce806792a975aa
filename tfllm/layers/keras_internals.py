"""The two places tfllm relies on private Keras APIs, kept here so a Keras upgrade breaks one module.

- `swapped_in_tracker`: `Layer._tracker` (`keras.src.utils.tracking.Tracker`), which records a
  layer's sublayers and weights. Swapping a sublayer in place (LoRA adapters, quantized layers)
  must update it, or `parent.layers` and `parent.weights` keep the old sublayer.
- `deferred_initializers`: `keras.Variable._initialize_with_initializer`, the hook every new
  variable's initial value goes through. Loading a checkpoint overwrites every value, so drawing
  random ones first is wasted time (seconds for GPT-2's 124M parameters).

tests/layers/test_keras_internals.py checks both against the installed Keras and fails naming its
version when either attribute is gone or behaves differently.
"""

import contextlib

import keras

_TRACKER_METHODS = ("replace_tracked_value", "lock", "unlock")


def _missing(what):
    return RuntimeError(
        f"Keras {keras.__version__} has no {what}, a private API tfllm relies on (see "
        "tfllm/layers/keras_internals.py); install a Keras version tfllm supports."
    )


def tracker(layer):
    """`layer`'s Keras tracker, checked to have what `swapped_in_tracker` uses.

    Raises:
        RuntimeError: naming the Keras version, when the tracker or one of its methods is missing.
    """
    found = getattr(layer, "_tracker", None)
    if found is None or not hasattr(found, "locked"):
        raise _missing("`Layer._tracker` with a `locked` flag")
    for method in _TRACKER_METHODS:
        if not callable(getattr(found, method, None)):
            raise _missing(f"`Tracker.{method}`")
    return found


@contextlib.contextmanager
def swapped_in_tracker(parent, old, new):
    """Replaces the sublayer `old` by `new` in `parent`'s tracking and unlocks it for the block, in which
    the caller assigns `new` to the attribute that held `old` (a locked tracker refuses new sublayers)."""
    parent_tracker = tracker(parent)
    parent_tracker.replace_tracked_value("layers", old, new)
    locked = parent_tracker.locked
    parent_tracker.unlock()
    try:
        yield
    finally:
        if locked:
            parent_tracker.lock()


@contextlib.contextmanager
def deferred_initializers():
    """Creates variables as zeros instead of running their initializers, for weights about to be loaded.

    Yields a list that collects `(variable, initializer)` for every variable created inside the
    block; call `run_deferred_initializers` with the variables that were loaded, so the others (a
    new head, seed state) get their real initial values. A Keras without the hook initialises
    normally (the list stays empty). Not thread-safe: other threads creating variables meanwhile are
    also created as zeros.
    """
    variable_class = keras.Variable
    original = getattr(variable_class, "_initialize_with_initializer", None)
    created = []
    if original is None:
        yield created
        return

    def zeros_instead(variable, initializer):
        created.append((variable, initializer))
        original(variable, keras.initializers.Zeros())

    variable_class._initialize_with_initializer = zeros_instead
    try:
        yield created
    finally:
        variable_class._initialize_with_initializer = original


def run_deferred_initializers(created, loaded):
    """Gives every variable of `created` that is not in `loaded` the value of its own initializer."""
    loaded_ids = {id(variable) for variable in loaded}
    for variable, initializer in created:
        if id(variable) not in loaded_ids:
            variable.assign(initializer(variable.shape, dtype=variable.dtype))
