"""Swapping a sublayer in place (LoRA adapters, quantized layers), keeping Keras' tracking right."""

import contextlib

import keras

from tfllm.layers.keras_internals import swapped_in_tracker


@contextlib.contextmanager
def name_scopes_of(variable):
    """Enters the name scopes `variable` was made in, so weights made inside get paths beside it
    (".../attention/qkv/lora_a" next to ".../attention/qkv/kernel")."""
    with contextlib.ExitStack() as stack:
        for name in variable.path.split("/")[:-2]:
            stack.enter_context(keras.name_scope(name))
        yield


def replace_sublayer(parent, attribute, old, new, index=None):
    """Puts `new` where `old` was: in `parent.attribute` (or its list item `index`) and in Keras'
    tracking of `parent`'s sublayers, so `parent.layers` and its weights follow the swap."""
    with swapped_in_tracker(parent, old, new):
        if index is None:
            setattr(parent, attribute, new)
        else:
            getattr(parent, attribute)[index] = new
