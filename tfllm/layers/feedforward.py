"""The position-wise feed-forward network, plain or gated (SwiGLU / GeGLU)."""

import keras

from tfllm.errors import check_float, check_int
from tfllm.layers.activations import get_activation


@keras.saving.register_keras_serializable(package="tfllm")
class FeedForward(keras.layers.Layer):
    """`down(act(up(x)))`, or gated `down(act(gate(x)) * up(x))`.

    Args:
        hidden_dim: width of the input and output.
        intermediate_dim: width of the inner layer.
        activation: one of "gelu" (exact), "gelu_tanh", "relu", "silu".
        gated: add a gate projection (Llama's SwiGLU with "silu", T5 v1.1's GeGLU with "gelu_tanh").
        use_bias: biases on the projections.
        dropout: dropout rate after the activation.
        initializer_range: standard deviation of the kernels' normal initializer.

    Call arguments:
        inputs: `(batch_size, sequence_length, hidden_dim)`.
        training: enables dropout.

    Returns:
        `(batch_size, sequence_length, hidden_dim)`.
    """

    def __init__(
        self,
        hidden_dim,
        intermediate_dim,
        activation="gelu",
        gated=False,
        use_bias=True,
        dropout=0.0,
        initializer_range=0.02,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.hidden_dim = check_int("hidden_dim", hidden_dim, minimum=1)
        self.intermediate_dim = check_int("intermediate_dim", intermediate_dim, minimum=1)
        self.activation = activation
        self.activation_fn = get_activation(activation)
        self.gated = gated
        self.use_bias = use_bias
        self.dropout = check_float("dropout", dropout, low=0.0, high=1.0, high_inclusive=False)
        self.initializer_range = initializer_range

        # === Layers ===
        initializer = keras.initializers.RandomNormal(stddev=initializer_range)
        dense = dict(use_bias=use_bias, kernel_initializer=initializer, dtype=self.dtype_policy)
        self.up = keras.layers.Dense(intermediate_dim, name="up", **dense)
        self.gate = keras.layers.Dense(intermediate_dim, name="gate", **dense) if gated else None
        self.down = keras.layers.Dense(hidden_dim, name="down", **dense)
        self.dropout_layer = keras.layers.Dropout(self.dropout, dtype=self.dtype_policy)

    def build(self, input_shape):
        self.up.build(input_shape)
        if self.gate is not None:
            self.gate.build(input_shape)
        self.down.build(tuple(input_shape[:-1]) + (self.intermediate_dim,))
        self.built = True

    def call(self, inputs, training=None):
        if self.gate is None:
            x = self.activation_fn(self.up(inputs))
        else:
            x = self.activation_fn(self.gate(inputs)) * self.up(inputs)
        return self.down(self.dropout_layer(x, training=training))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            hidden_dim=self.hidden_dim,
            intermediate_dim=self.intermediate_dim,
            activation=self.activation,
            gated=self.gated,
            use_bias=self.use_bias,
            dropout=self.dropout,
            initializer_range=self.initializer_range,
        )
        return config
