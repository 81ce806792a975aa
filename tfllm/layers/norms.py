"""Normalization layers: LayerNorm and RMSNorm, computed in float32."""

import keras
from keras import ops

from tfllm.errors import check_float


@keras.saving.register_keras_serializable(package="tfllm")
class LayerNorm(keras.layers.Layer):
    """Layer normalization over the last axis, with a scale (`gamma`) and optional offset (`beta`).

    Args:
        epsilon: added to the variance.
        use_bias: learn an offset.

    Call arguments:
        inputs: `(..., hidden_dim)`.

    Returns:
        The normalized inputs, same shape and dtype.
    """

    def __init__(self, epsilon=1e-5, use_bias=True, **kwargs):
        super().__init__(**kwargs)
        self.epsilon = check_float("epsilon", epsilon, low=0.0)
        self.use_bias = use_bias

    def build(self, input_shape):
        dim = input_shape[-1]
        # autocast=False: under mixed precision the weights are read in float32, not rounded to half.
        self.gamma = self.add_weight(name="gamma", shape=(dim,), initializer="ones", autocast=False)
        self.beta = None
        if self.use_bias:
            self.beta = self.add_weight(name="beta", shape=(dim,), initializer="zeros", autocast=False)
        self.built = True

    def call(self, inputs):
        x = ops.cast(inputs, "float32")
        mean = ops.mean(x, axis=-1, keepdims=True)
        variance = ops.mean(ops.square(x - mean), axis=-1, keepdims=True)
        x = (x - mean) * ops.rsqrt(variance + self.epsilon) * ops.cast(self.gamma, "float32")
        if self.beta is not None:
            x = x + ops.cast(self.beta, "float32")
        return ops.cast(x, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(epsilon=self.epsilon, use_bias=self.use_bias)
        return config


@keras.saving.register_keras_serializable(package="tfllm")
class RMSNorm(keras.layers.Layer):
    """Root-mean-square normalization (Llama, T5): `x / rms(x) * weight`, no mean, no offset.

    Args:
        epsilon: added to the mean square.

    Call arguments:
        inputs: `(..., hidden_dim)`.

    Returns:
        The normalized inputs, same shape and dtype.
    """

    def __init__(self, epsilon=1e-6, **kwargs):
        super().__init__(**kwargs)
        self.epsilon = check_float("epsilon", epsilon, low=0.0)

    def build(self, input_shape):
        self.scale = self.add_weight(name="scale", shape=(input_shape[-1],), initializer="ones", autocast=False)
        self.built = True

    def call(self, inputs):
        x = ops.cast(inputs, "float32")
        x = x * ops.rsqrt(ops.mean(ops.square(x), axis=-1, keepdims=True) + self.epsilon)
        return ops.cast(x * ops.cast(self.scale, "float32"), self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(epsilon=self.epsilon)
        return config


NORMS = {"layer_norm": LayerNorm, "rms_norm": RMSNorm}
