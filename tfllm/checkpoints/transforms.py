"""Named, stateless transforms between Hugging Face tensor layouts and tfllm variable layouts.

A weight table says, for each tfllm variable, which HF key(s) feed it and through which
transform. Each transform has an exact inverse, so the same table also exports weights.
"""

import dataclasses
import math
import numbers
from typing import Callable

import numpy as np

from tfllm.errors import invalid_argument


@dataclasses.dataclass(frozen=True)
class Transform:
    """A named layout change from HF array(s) to one tfllm array, with its inverse.

    Args:
        name: a readable name, shown in error messages (e.g. "concat(axis=1, sizes=[32, 32, 32])").
        forward: maps the HF arrays to the tfllm array.
        inverse: maps the tfllm array back to a tuple of HF arrays.
        num_inputs: how many HF arrays `forward` takes.

    Example:

    ```python
    TRANSPOSE.to_tfllm(np.zeros((3, 2))).shape  # (2, 3)
    TRANSPOSE.to_hf(np.zeros((2, 3)))[0].shape  # (3, 2)
    ```
    """

    name: str
    forward: Callable = dataclasses.field(repr=False)
    inverse: Callable = dataclasses.field(repr=False)
    num_inputs: int = 1

    def to_tfllm(self, *hf_arrays):
        """Maps `num_inputs` HF arrays to the tfllm array.

        Raises:
            ValueError: the number or shapes of the arrays do not fit this transform.
        """
        if len(hf_arrays) != self.num_inputs:
            raise invalid_argument("hf_arrays", f"{self.num_inputs} array(s) for {self.name}", len(hf_arrays))
        return np.asarray(self.forward(*(np.asarray(a) for a in hf_arrays)))

    def to_hf(self, array):
        """Maps a tfllm array back to a tuple of `num_inputs` HF arrays."""
        return tuple(np.asarray(a) for a in self.inverse(np.asarray(array)))

    def __str__(self):
        return self.name


IDENTITY = Transform("identity", lambda a: a, lambda x: (x,))
TRANSPOSE = Transform("transpose", np.transpose, lambda x: (np.transpose(x),))


def _check_shape(name, shape):
    if not isinstance(shape, (tuple, list)) or not all(
        isinstance(d, numbers.Integral) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        raise invalid_argument(name, "a tuple of non-negative integers", shape)
    return tuple(int(d) for d in shape)


def concat(axis, sizes):
    """Concatenates several HF arrays along `axis` (e.g. q, k, v weights into one fused kernel).

    Args:
        axis: the axis to concatenate along.
        sizes: each HF array's size along `axis`, in order; `to_hf` splits at these sizes.

    Returns:
        A `Transform` taking `len(sizes)` arrays.

    Example:

    ```python
    qkv = concat(axis=0, sizes=[4, 4, 4])
    qkv.to_tfllm(q, k, v).shape  # (12, hidden_dim) for q, k, v of shape (4, hidden_dim)
    ```
    """
    if isinstance(axis, bool) or not isinstance(axis, numbers.Integral):
        raise invalid_argument("axis", "an integer", axis)
    sizes = _check_shape("sizes", sizes)
    if not sizes:
        raise invalid_argument("sizes", "a non-empty list of non-negative integers", sizes)
    axis = int(axis)

    def forward(*arrays):
        received = [a.shape[axis] if -a.ndim <= axis < a.ndim else None for a in arrays]
        if received != list(sizes):
            raise ValueError(
                f"concat(axis={axis}) expects sizes {list(sizes)} along axis {axis}; the arrays have "
                f"shapes {[a.shape for a in arrays]}"
            )
        return np.concatenate(arrays, axis=axis)

    def inverse(array):
        if array.shape[axis] != sum(sizes):
            raise ValueError(f"cannot split shape {array.shape} along axis {axis} into sizes {list(sizes)}")
        return np.split(array, np.cumsum(sizes)[:-1], axis=axis)

    return Transform(f"concat(axis={axis}, sizes={list(sizes)})", forward, inverse, num_inputs=len(sizes))


def reshape(tfllm_shape, hf_shape):
    """Reshapes an HF array of exactly `hf_shape` to `tfllm_shape` (e.g. split attention heads).

    Args:
        tfllm_shape: the variable's shape, e.g. `(hidden_dim, num_heads, head_dim)`.
        hf_shape: the HF array's shape, e.g. `(hidden_dim, hidden_dim)`.

    Returns:
        A `Transform`; an HF array of any other shape is refused, never silently reshaped.
    """
    tfllm_shape = _check_shape("tfllm_shape", tfllm_shape)
    hf_shape = _check_shape("hf_shape", hf_shape)
    if math.prod(tfllm_shape) != math.prod(hf_shape):
        raise invalid_argument(
            "tfllm_shape", f"a shape with as many elements as hf_shape={hf_shape} ({math.prod(hf_shape)})", tfllm_shape
        )

    def forward(array):
        if array.shape != hf_shape:
            raise ValueError(f"reshape expects an HF array of shape {hf_shape}; received shape {array.shape}")
        return array.reshape(tfllm_shape)

    def inverse(array):
        return (array.reshape(hf_shape),)

    return Transform(f"reshape({tfllm_shape} <- {hf_shape})", forward, inverse)


def compose(*transforms):
    """Chains transforms: the first takes the HF arrays, each next one takes the previous output.

    Args:
        *transforms: `Transform`s; all but the first must take a single array.

    Returns:
        A `Transform` whose inverse applies the inverses in reverse order.

    Example:

    ```python
    # Three PyTorch Linear weights (out, in) into one fused Keras kernel (in, 3 * out).
    fused_qkv = compose(concat(axis=0, sizes=[32, 32, 32]), TRANSPOSE)
    ```
    """
    if not transforms or not all(isinstance(t, Transform) for t in transforms):
        raise invalid_argument("transforms", "one or more Transform objects", transforms)
    if any(t.num_inputs != 1 for t in transforms[1:]):
        raise invalid_argument("transforms", "transforms after the first to take a single array", transforms)

    def forward(*arrays):
        array = transforms[0].to_tfllm(*arrays)
        for transform in transforms[1:]:
            array = transform.to_tfllm(array)
        return array

    def inverse(array):
        for transform in reversed(transforms[1:]):
            (array,) = transform.to_hf(array)
        return transforms[0].to_hf(array)

    name = "compose(" + ", ".join(t.name for t in transforms) + ")"
    return Transform(name, forward, inverse, num_inputs=transforms[0].num_inputs)

