"""Position encodings without learned weights: sinusoidal and rotary."""

import keras
from keras import ops

from tfllm.errors import check_float, check_int


@keras.saving.register_keras_serializable(package="tfllm")
class SinusoidalPositionEncoding(keras.layers.Layer):
    """The fixed sine/cosine encoding of "Attention Is All You Need".

    Args:
        hidden_dim: width of the encoding (even).
        max_wavelength: the longest wavelength of the sinusoids.

    Call arguments:
        positions: `(batch_size, sequence_length)` integer positions.

    Returns:
        `(batch_size, sequence_length, hidden_dim)`: sines in the first half, cosines in the second.
    """

    def __init__(self, hidden_dim, max_wavelength=10000.0, **kwargs):
        super().__init__(**kwargs)
        self.hidden_dim = check_int("hidden_dim", hidden_dim, minimum=2)
        if self.hidden_dim % 2:
            raise ValueError(
                f"Invalid value for argument `hidden_dim`. Expected an even integer. Received: hidden_dim={hidden_dim}"
            )
        self.max_wavelength = check_float("max_wavelength", max_wavelength, low=1.0)

    def call(self, positions):
        half = self.hidden_dim // 2
        exponent = ops.arange(half, dtype="float32") / half
        inverse_frequency = ops.power(self.max_wavelength, -exponent)
        angles = ops.cast(positions, "float32")[..., None] * inverse_frequency  # (B, T, half)
        encoding = ops.concatenate([ops.sin(angles), ops.cos(angles)], axis=-1)
        return ops.cast(encoding, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape) + (self.hidden_dim,)

    def get_config(self):
        config = super().get_config()
        config.update(hidden_dim=self.hidden_dim, max_wavelength=self.max_wavelength)
        return config


@keras.saving.register_keras_serializable(package="tfllm")
class RotaryEmbedding(keras.layers.Layer):
    """Rotary position embedding (RoPE), "rotate half" layout as in Llama checkpoints.

    Args:
        max_wavelength: the base of the frequencies (`rope_theta`).
        scaling_factor: positions are divided by this (linear RoPE scaling).

    Call arguments:
        inputs: `(batch_size, sequence_length, num_heads, head_dim)` queries or keys.
        positions: `(batch_size, sequence_length)` integer positions.

    Returns:
        The rotated inputs, same shape and dtype.
    """

    def __init__(self, max_wavelength=10000.0, scaling_factor=1.0, **kwargs):
        super().__init__(**kwargs)
        self.max_wavelength = check_float("max_wavelength", max_wavelength, low=1.0)
        self.scaling_factor = check_float("scaling_factor", scaling_factor, low=0.0, low_inclusive=False)

    def call(self, inputs, positions):
        head_dim = ops.shape(inputs)[-1]
        exponent = ops.arange(0, head_dim, 2, dtype="float32") / ops.cast(head_dim, "float32")
        inverse_frequency = ops.power(self.max_wavelength, -exponent)  # (head_dim / 2,)
        scaled = ops.cast(positions, "float32") / self.scaling_factor
        angles = scaled[..., None] * inverse_frequency  # (B, T, head_dim / 2)
        angles = ops.concatenate([angles, angles], axis=-1)[:, :, None, :]  # (B, T, 1, head_dim)
        x = ops.cast(inputs, "float32")
        first, second = ops.split(x, 2, axis=-1)
        rotated = ops.concatenate([-second, first], axis=-1)
        out = x * ops.cos(angles) + rotated * ops.sin(angles)
        return ops.cast(out, inputs.dtype)

    def compute_output_shape(self, input_shape, positions_shape=None):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(max_wavelength=self.max_wavelength, scaling_factor=self.scaling_factor)
        return config
