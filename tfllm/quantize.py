"""Weight-only quantization for decoding: int8, float16 or bfloat16 weights, float32 activations.

`quantize(model, mode)` replaces, in place, every `keras.layers.Dense` (the attention and
feed-forward projections, Llama's `lm_head`, task heads) with a `QuantizedDense` and every
`TokenEmbedding` (GPT-2's tied LM head) with a `QuantizedTokenEmbedding`. Activations stay float32
in and out: only the stored weights change.

- "int8": symmetric, per output channel: `w ≈ q * scale`, `q` int8 in [-127, 127], `scale =
  max|w| / 127` per output unit (per vocabulary row for the tied embedding).
- "float16" / "bfloat16": the weights rounded to that type.

Why it is fast. Decoding at batch 1 is a chain of matrix-vector products that read every weight
once per token, so its speed is set by memory traffic; int8 reads 4x fewer bytes. Plain TF does not
fuse the int8 -> float cast into the matmul: it writes a float copy of each kernel on every step,
which is slower than float32. So a decoding step's product (one query position) runs as a small
XLA function, `_matvec`, over the kernel stored transposed `(units, input_dim)`; XLA folds the cast
into the dot's reduction and reads the int8 bytes once. Longer inputs (prefill, training-sized
batches) dequantize and use TF's matmul. Numbers: `benchmarks/quantized_decode.py`.

Decode a quantized model with `generate(..., jit_compile=False)`: inside a whole-step XLA program
(generate's default), XLA CPU fuses the producers of each product's input (layer norm, GELU) into
the int8 dot's loop and recomputes them for every output unit, which cancels the gain.

Quantized models are for decoding in this process: `save_pretrained`, `.keras` saving and the
exporters are refused (the float weights are gone; save before quantizing), and the XLA products
are not for TFLite.

Example:

```python
model = tfllm.AutoModelForCausalLM.from_pretrained("path/to/gpt2")
quantize(model, "int8")
model.generate(ids, max_new_tokens=64)
```
"""

import logging

import keras
import numpy as np
import tensorflow as tf

from tfllm.errors import invalid_argument
from tfllm.layers.embeddings import TokenEmbedding
from tfllm.layers.lora import LoRADense
from tfllm.layers.tracking import name_scopes_of, replace_sublayer
from tfllm.models.pretrained import build_model

logger = logging.getLogger(__name__)

QUANTIZATION_MODES = ("int8", "float16", "bfloat16")
INT8_MAX = 127.0
MATVEC_MAX_ROWS = 16  # up to this many rows, the fused XLA product beats dequantize + matmul
_REFUSED = (
    "This layer holds {mode} weights from tfllm.quantize; the float32 weights are gone. "
    "Save or export the model before quantizing it."
)


@tf.function(jit_compile=True)
def _matvec(inputs, kernel_t, scale):
    """`(rows, input_dim) @ kernel_t.T * scale` with the cast fused into the dot by XLA."""
    return tf.matmul(inputs, tf.cast(kernel_t, inputs.dtype), transpose_b=True) * scale


def _storage_dtype(mode):
    return {"int8": tf.int8, "float16": tf.float16, "bfloat16": tf.bfloat16}[mode]


def quantize_rows(weights, mode):
    """Quantizes a float `(rows, columns)` array row by row.

    Returns:
        `(values, scale)`: int8 values and float32 `(rows,)` scales for "int8"
        (`weights ≈ values * scale[:, None]`), else the array in float16/bfloat16 and ones.
    """
    weights = np.asarray(weights, dtype=np.float32)
    if mode != "int8":
        return tf.cast(weights, _storage_dtype(mode)), np.ones(weights.shape[0], np.float32)
    scale = np.abs(weights).max(axis=1) / INT8_MAX
    scale = np.where(scale > 0, scale, 1.0).astype(np.float32)  # an all-zero row stays zero
    values = np.clip(np.round(weights / scale[:, None]), -INT8_MAX, INT8_MAX).astype(np.int8)
    return values, scale


class _QuantizedWeights:
    """Shared by both layers: a transposed `(units, input_dim)` table, its scales, and the product."""

    def _set_table(self, table, mode):
        values, scale = quantize_rows(table, mode)
        self.mode = mode
        self.table = self.add_weight(name="quantized_kernel", shape=values.shape, dtype=_storage_dtype(mode),
                                     initializer="zeros", trainable=False)
        self.table.assign(values)
        self.scale = self.add_weight(name="kernel_scale", shape=scale.shape, dtype="float32",
                                     initializer="ones", trainable=False)
        self.scale.assign(scale)

    def _project(self, inputs):
        """`(..., input_dim)` float -> `(..., units)` float32 (what `inputs @ dequantized.T` gives)."""
        x = tf.cast(inputs, "float32")
        shape = tf.shape(x)
        rows = tf.reshape(x, [-1, shape[-1]])  # (B * T, K)
        table, scale = tf.convert_to_tensor(self.table.value), tf.convert_to_tensor(self.scale.value)
        if inputs.shape.rank == 3 and inputs.shape[1] == 1:  # one position per sequence: decoding
            out = _matvec(rows, table, scale)
        else:  # the prompt's last position (prefill's head) still takes the matvec
            out = tf.cond(tf.shape(rows)[0] <= MATVEC_MAX_ROWS, lambda: _matvec(rows, table, scale),
                          lambda: tf.matmul(rows, tf.cast(table, "float32"), transpose_b=True) * scale)
        return tf.reshape(out, tf.concat([shape[:-1], [-1]], axis=0))  # (..., N)

    def get_config(self):
        raise RuntimeError(_REFUSED.format(mode=self.mode))


class QuantizedDense(_QuantizedWeights, keras.layers.Layer):
    """A `Dense` (no activation) whose kernel is stored int8 (per-unit scales), float16 or bfloat16.

    Args:
        dense: the built `keras.layers.Dense` to replace; its kernel is quantized, its bias kept
            in float32.
        mode: one of `QUANTIZATION_MODES`.

    Call arguments:
        inputs: `(..., input_dim)`.

    Returns:
        `(..., units)` in the layer's compute dtype.

    Example:
    >>> dense = keras.layers.Dense(6)
    >>> dense.build((None, 4))
    >>> tuple(QuantizedDense(dense, "int8")(np.ones((1, 1, 4), "float32")).shape)
    (1, 1, 6)
    """

    def __init__(self, dense, mode, **kwargs):
        kwargs.setdefault("name", dense.name)
        kwargs.setdefault("dtype", dense.dtype_policy)
        super().__init__(**kwargs)
        self.units = dense.units
        self._set_table(np.transpose(keras.ops.convert_to_numpy(dense.kernel)), mode)  # (N, K)
        self.bias = None
        if dense.bias is not None:
            self.bias = self.add_weight(name="bias", shape=(self.units,), dtype="float32",
                                        initializer="zeros", trainable=False)
            self.bias.assign(keras.ops.cast(dense.bias, "float32"))
        self.built = True

    def call(self, inputs):
        out = self._project(inputs)
        if self.bias is not None:
            out = out + self.bias
        return tf.cast(out, self.compute_dtype)

    @property
    def kernel(self):
        raise RuntimeError(_REFUSED.format(mode=self.mode))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.units,)


class QuantizedTokenEmbedding(_QuantizedWeights, keras.layers.Layer):
    """A `TokenEmbedding` whose table is stored int8 (a scale per vocabulary row), float16 or bfloat16.

    Both uses of the table keep working: looking up token ids, and `reverse=True`, the tied output
    projection onto the vocabulary (GPT-2's LM head, a third of GPT-2-small's weights).

    Args:
        embedding: the built `TokenEmbedding` to replace.
        mode: one of `QUANTIZATION_MODES`.

    Call arguments:
        inputs: `(batch_size, sequence_length)` token ids, or with `reverse=True`
            `(batch_size, sequence_length, hidden_dim)` hidden states.
        reverse: project hidden states onto the vocabulary.

    Returns:
        `(batch_size, sequence_length, hidden_dim)` embeddings, or with `reverse=True`
        `(batch_size, sequence_length, vocabulary_size)` logits.
    """

    def __init__(self, embedding, mode, **kwargs):
        kwargs.setdefault("name", embedding.name)
        kwargs.setdefault("dtype", embedding.dtype_policy)
        super().__init__(**kwargs)
        self.vocabulary_size = embedding.vocabulary_size
        self.hidden_dim = embedding.hidden_dim
        self._set_table(keras.ops.convert_to_numpy(embedding.embeddings), mode)  # (V, K): already (N, K)
        self.built = True

    def call(self, inputs, reverse=False):
        if reverse:
            return tf.cast(self._project(inputs), inputs.dtype)
        ids = tf.cast(inputs, "int32")
        rows = tf.cast(tf.gather(self.table, ids), "float32") * tf.gather(self.scale, ids)[..., None]
        return tf.cast(rows, self.compute_dtype)

    @property
    def embeddings(self):
        raise RuntimeError(_REFUSED.format(mode=self.mode))

    def compute_output_shape(self, input_shape, reverse=False):
        if reverse:
            return tuple(input_shape[:-1]) + (self.vocabulary_size,)
        return tuple(input_shape) + (self.hidden_dim,)


def _children(layer, seen):
    """Yields `(parent, attribute, child)` for the layers reachable through public attributes."""
    for attribute, value in list(vars(layer).items()):
        if attribute.startswith("_"):
            continue
        items = [(attribute, value, None)]
        if isinstance(value, (list, tuple)):
            items = [(attribute, item, i) for i, item in enumerate(value)]
        for name, child, index in items:
            if isinstance(child, keras.layers.Layer) and id(child) not in seen:
                seen.add(id(child))
                yield layer, name, index, child
                yield from _children(child, seen)


def _check(model, mode):
    if mode not in QUANTIZATION_MODES:
        raise invalid_argument("mode", f"one of {', '.join(map(repr, QUANTIZATION_MODES))}", mode)
    layers = [child for *_, child in _children(model, {id(model)})]
    if model.runtime.quantization is not None or any(isinstance(layer, _QuantizedWeights) for layer in layers):
        raise invalid_argument("model", "a model that is not quantized yet (load it again to quantize it "
                               "another way)", f"{type(model).__name__} quantized to {model.runtime.quantization}")
    if any(isinstance(layer, LoRADense) for layer in layers):
        raise invalid_argument("model", "a model without LoRA adapters (merge_lora(model) first)",
                               f"{type(model).__name__} with adapters")


def _targets(model):
    """`(parent, attribute, index, layer)` of every Dense without activation and every TokenEmbedding."""
    found = []
    for parent, attribute, index, child in _children(model, {id(model)}):
        dense = isinstance(child, keras.layers.Dense) and child.activation is keras.activations.linear
        if (dense or isinstance(child, TokenEmbedding)) and child.built:
            found.append((parent, attribute, index, child))
    return found


def quantize(model, mode):
    """Stores `model`'s projection and embedding weights as int8, float16 or bfloat16, in place.

    Weight-only: inputs and outputs of every layer stay float32 (see the module docstring for
    what is replaced and why it is fast). `generate` works afterwards; traced functions that
    captured the float layers are dropped.

    Args:
        model: a tfllm model (task model or backbone); built here if it is not yet.
        mode: one of "int8", "float16", "bfloat16".

    Returns:
        `model`.

    Raises:
        ValueError: an unknown `mode`, a model already quantized, or one with LoRA adapters.
    """
    _check(model, mode)
    if not model.built:
        build_model(model)
    before = sum(int(np.prod(v.shape)) * tf.as_dtype(v.dtype).size for v in model.weights)
    targets = _targets(model)
    for parent, attribute, index, layer in targets:
        variable = layer.embeddings if isinstance(layer, TokenEmbedding) else layer.kernel
        with name_scopes_of(variable):
            new = (QuantizedTokenEmbedding if isinstance(layer, TokenEmbedding) else QuantizedDense)(layer, mode)
        replace_sublayer(parent, attribute, layer, new, index)
    model.runtime.quantization = mode
    model.runtime.invalidate()
    after = sum(int(np.prod(v.shape)) * tf.as_dtype(v.dtype).size for v in model.weights)
    logger.info("Quantized %d layers of %s to %s: weights %.1f MB -> %.1f MB", len(targets),
                type(model).__name__, mode, before / 1e6, after / 1e6)
    return model


def quantization_mode(model):
    """The mode `quantize` gave `model`, or None."""
    return model.runtime.quantization
