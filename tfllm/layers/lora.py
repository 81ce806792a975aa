"""`LoRADense`: a frozen `Dense` plus a trainable low-rank update (see `tfllm.training.lora`)."""

import keras

from tfllm.errors import check_float, check_int, invalid_argument

_UNMERGED = (
    "This projection carries LoRA adapters, so its kernel alone is not the weight the model uses. "
    "Call tfllm.training.lora.merge_lora(model) before save_pretrained or export, or save the adapters "
    "alone with save_adapters(model, folder)."
)


@keras.saving.register_keras_serializable(package="tfllm")
class LoRADense(keras.layers.Layer):
    """A frozen `Dense` plus a trainable low-rank update: `base(x) + (alpha / rank) * dropout(x) @ A @ B`.

    `A` `(input_dim, rank)` starts uniform in ±1/sqrt(input_dim) (PEFT's Kaiming init), `B`
    `(rank, units)` at zero, so a new adapter changes nothing.

    Args:
        base: the built `keras.layers.Dense` (no activation) to adapt; it keeps its variables.
        rank: rank of the update (>= 1).
        alpha: the update is scaled by `alpha / rank`.
        dropout: dropout rate on the adapter's input, in training only.

    Call arguments:
        inputs: `(..., input_dim)`.
        training: enables dropout.

    Returns:
        `(..., units)`.

    Example:
    >>> base = keras.layers.Dense(6, name="qkv")
    >>> base.build((None, 4))
    >>> tuple(LoRADense(base, rank=2, alpha=4.0)(np.ones((1, 3, 4))).shape)
    (1, 3, 6)
    """

    def __init__(self, base, rank, alpha, dropout=0.0, **kwargs):
        if isinstance(base, dict):
            base = keras.saving.deserialize_keras_object(base)
        if not isinstance(base, keras.layers.Dense) or base.activation is not keras.activations.linear:
            raise invalid_argument("base", "a keras.layers.Dense without activation", base)
        kwargs.setdefault("name", base.name)
        kwargs.setdefault("dtype", base.dtype_policy)
        super().__init__(**kwargs)
        self.base = base
        self.rank = check_int("rank", rank, minimum=1)
        self.alpha = check_float("alpha", alpha, low=0.0, low_inclusive=False)
        self.dropout = check_float("dropout", dropout, low=0.0, high=1.0, high_inclusive=False)
        self.scale = self.alpha / self.rank
        # === Layers ===
        self.dropout_layer = keras.layers.Dropout(self.dropout, dtype=self.dtype_policy)
        if base.built:
            self.build((None, base.kernel.shape[0]))

    def build(self, input_shape):
        if not self.base.built:
            self.base.build(input_shape)
        input_dim, units = self.base.kernel.shape
        # kaiming_uniform(a=sqrt(5)) as PEFT: bound 1/sqrt(fan_in).
        a_init = keras.initializers.VarianceScaling(1.0 / 3.0, mode="fan_in", distribution="uniform")
        self.lora_a = self.add_weight(name="lora_a", shape=(input_dim, self.rank), initializer=a_init)
        self.lora_b = self.add_weight(name="lora_b", shape=(self.rank, units), initializer="zeros")
        self.built = True

    def call(self, inputs, training=None):
        update = keras.ops.matmul(self.dropout_layer(inputs, training=training), self.lora_a)  # (..., rank)
        return self.base(inputs) + self.scale * keras.ops.matmul(update, self.lora_b)

    def merged_kernel(self):
        """`kernel + (alpha / rank) * A @ B` in float32, the kernel that computes what this layer computes."""
        delta = keras.ops.matmul(keras.ops.cast(self.lora_a, "float32"), keras.ops.cast(self.lora_b, "float32"))
        return keras.ops.cast(self.base.kernel, "float32") + self.scale * delta

    @property
    def kernel(self):
        raise RuntimeError(_UNMERGED)

    @property
    def bias(self):
        raise RuntimeError(_UNMERGED)

    def compute_output_shape(self, input_shape):
        return self.base.compute_output_shape(input_shape)

    def get_config(self):
        config = super().get_config()
        base = keras.saving.serialize_keras_object(self.base)
        base.pop("build_config", None)  # this layer's build builds the base
        config.update(base=base, rank=self.rank, alpha=self.alpha, dropout=self.dropout)
        return config
