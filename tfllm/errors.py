"""Argument checks that raise errors in one shape.

Every message reads "Invalid value for argument `name`. Expected <what>. Received: name=<value>",
so a user sees which argument was wrong, what would have been right and what they passed.
"""

import numbers


def invalid_argument(name, expected, value, error=ValueError):
    """Builds the error raised for a bad argument value.

    Args:
        name: the argument's name, as the user typed it.
        expected: what a valid value looks like, e.g. "an integer >= 1".
        value: the value received.
        error: the exception class to build.

    Returns:
        An exception instance; the caller raises it.
    """
    return error(f"Invalid value for argument `{name}`. Expected {expected}. Received: {name}={value!r}")


def check_int(name, value, minimum=None):
    """Returns `value` if it is an integer (not a bool) no smaller than `minimum`."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise invalid_argument(name, "an integer" + (f" >= {minimum}" if minimum is not None else ""), value)
    if minimum is not None and value < minimum:
        raise invalid_argument(name, f"an integer >= {minimum}", value)
    return int(value)


def check_float(name, value, low=None, high=None, low_inclusive=True, high_inclusive=True):
    """Returns `value` as a float if it is a real number inside the given interval."""
    left = "[" if low_inclusive else "("
    right = "]" if high_inclusive else ")"
    interval = f"{left}{'-inf' if low is None else low}, {'inf' if high is None else high}{right}"
    expected = f"a number in {interval}"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise invalid_argument(name, expected, value)
    value = float(value)
    too_low = low is not None and (value < low or (value == low and not low_inclusive))
    too_high = high is not None and (value > high or (value == high and not high_inclusive))
    if too_low or too_high or value != value:
        raise invalid_argument(name, expected, value)
    return value


def check_choice(name, value, choices):
    """Returns `value` if it is one of `choices`."""
    if value not in choices:
        raise invalid_argument(name, "one of " + ", ".join(repr(c) for c in choices), value)
    return value
