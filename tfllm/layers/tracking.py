"""Swapping a sublayer in place (LoRA adapters, quantized layers), keeping Keras' tracking right."""


def replace_sublayer(parent, attribute, old, new, index=None):
    """Puts `new` where `old` was: in `parent.attribute` (or its list item `index`) and in Keras'
    tracking of `parent`'s sublayers, so `parent.layers` and its weights follow the swap."""
    parent._tracker.replace_tracked_value("layers", old, new)
    locked = parent._tracker.locked
    parent._tracker.unlock()
    if index is None:
        setattr(parent, attribute, new)
    else:
        getattr(parent, attribute)[index] = new
    if locked:
        parent._tracker.lock()
