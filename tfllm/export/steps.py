"""The functions TFLite and ONNX exports are made of, and the numpy loop that drives an exported pair.

A decoder-only LM exports as two steps over an explicit KV cache, the layout ai-edge-torch and
LiteRT-LM use: `prefill` (a right-padded window of `prefill_length` prompt tokens) and `decode`
(one token). Each takes `tokens` `(1, length)` int32, `input_pos` `(length,)` int32 (contiguous
positions: the step writes its keys and values at `input_pos[0]` onwards and attends to cache
positions `<= input_pos[i]`) and every layer's key and value cache `(1, cache_length,
num_key_value_heads, head_dim)` as separate inputs `kv_cache_k_0, kv_cache_v_0, ...`; it returns
`logits` `(1, length, vocabulary_size)` and the updated caches. Both steps are the model's own
`call_with_cache`, so an export computes what `generate` computes.

An encoder's backbone exports as one forward: `input_ids`, `attention_mask` → `sequence_output` and
`pooled_output` (a backbone; the latter when it has a pooler) or `logits` (a task head).
"""

import dataclasses
import logging

import numpy as np
import tensorflow as tf

from tfllm.errors import check_int, invalid_argument
from tfllm.export import signatures as sig
from tfllm.generation.host_loop import greedy, host_decode
from tfllm.models import tasks

logger = logging.getLogger(__name__)

# How a TFLite/ONNX file runs a model (`export_kind`): prefill/decode steps, or one forward pass.
STEPS = "steps"
FORWARD = "forward"
MAX_DEFAULT_CACHE_LENGTH = 256
MAX_DEFAULT_PREFILL_LENGTH = 64
MAX_DEFAULT_SEQUENCE_LENGTH = 128


# === What each model exports to ===


def require(module, extra):
    """Imports an optional dependency, or raises an ImportError naming the extra that installs it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise ImportError(f"This export needs `{module}`: pip install 'tfllm[{extra}]'") from error


def export_kind(model):
    """How a TFLite/ONNX export runs `model`: `STEPS` (a causal LM's prefill/decode steps over a KV
    cache), `FORWARD` (an encoder's one forward pass), or None when the model does not declare those formats (its
    `export_formats`, see `tfllm.models.tasks`)."""
    if tasks.TFLITE not in getattr(model, "export_formats", ()):
        return None
    return STEPS if model.task == tasks.CAUSAL_LM else FORWARD


def unsupported(model, format_name):
    """The NotImplementedError for exporting `model` as `format_name`, naming what it does support."""
    formats = ", ".join(getattr(model, "export_formats", ())) or "none yet"
    return NotImplementedError(
        f"{format_name} export takes models that declare it in their `export_formats`: causal LMs "
        f"(AutoModelForCausalLM) and encoders (AutoModel, AutoModelForSequenceClassification, "
        f"AutoModelForMaskedLM of an encoder family). {tasks.describe(model)} supports: {formats}."
    )


# === Decoder steps ===


@dataclasses.dataclass(frozen=True)
class StepShapes:
    """The fixed shapes of an exported prefill/decode pair."""

    num_layers: int
    num_key_value_heads: int
    head_dim: int
    cache_length: int
    prefill_length: int
    dtype: str = "float32"

    @property
    def cache_shape(self):
        return (1, self.cache_length, self.num_key_value_heads, self.head_dim)


def check_arguments_apply(kind, **arguments):
    """Refuses window arguments that do not apply to `kind` (`STEPS` or `FORWARD`) instead of ignoring them."""
    applies = {STEPS: ("cache_length", "prefill_length"), FORWARD: ("sequence_length", "batch_size")}
    for name, value in arguments.items():
        if value is not None and name not in applies[kind]:
            raise invalid_argument(name, f"None: it applies to {'encoders' if kind == STEPS else 'causal LMs'}", value)


def step_shapes(model, cache_length=None, prefill_length=None):
    """Checks the window sizes against `model` and fills in the defaults.

    Args:
        model: a causal LM.
        cache_length: positions the cache holds (prompt + generated tokens). Defaults to the
            model's positions, at most 256.
        prefill_length: tokens one prefill call takes. Defaults to `min(cache_length, 64)`.

    Returns:
        A `StepShapes`.
    """
    limit = model.max_sequence_length
    if cache_length is None:
        cache_length = min(limit, MAX_DEFAULT_CACHE_LENGTH)
    cache_length = check_int("cache_length", cache_length, minimum=1)
    if cache_length > limit:
        raise invalid_argument("cache_length", f"at most the model's {limit} positions", cache_length)
    if prefill_length is None:
        prefill_length = min(cache_length, MAX_DEFAULT_PREFILL_LENGTH)
    prefill_length = check_int("prefill_length", prefill_length, minimum=1)
    if prefill_length > cache_length:
        raise invalid_argument("prefill_length", f"at most cache_length ({cache_length})", prefill_length)
    attention = model.backbone.transformer_layers[0].attention
    return StepShapes(
        num_layers=len(model.backbone.transformer_layers),
        num_key_value_heads=attention.num_key_value_heads,
        head_dim=attention.head_dim,
        cache_length=cache_length,
        prefill_length=prefill_length,
        dtype=model.compute_dtype,
    )


def step_input_signature(shapes, length):
    """`[{name: tf.TensorSpec}]` of a step taking `length` tokens (the TFLite/ONNX input names)."""
    spec = {
        sig.TOKENS: tf.TensorSpec([1, length], tf.int32, name=sig.TOKENS),
        sig.INPUT_POS: tf.TensorSpec([length], tf.int32, name=sig.INPUT_POS),
    }
    for name in sig.kv_cache_names(shapes.num_layers):
        spec[name] = tf.TensorSpec(shapes.cache_shape, shapes.dtype, name=name)
    return [spec]


def step_function(model, shapes, output_name=sig.kv_cache_name):
    """The one step both signatures run: `fn(inputs) -> {logits, updated caches}`.

    Args:
        model: a causal LM.
        shapes: its `StepShapes`.
        output_name: `(kind, layer) -> name` of the updated caches: the input names for TFLite,
            `signatures.kv_cache_output_name` for ONNX (which cannot reuse an input's name).
    """
    layers = range(shapes.num_layers)

    def step(inputs):
        # The model's cache is one (1, 2, cache_length, kv_heads, head_dim) tensor per layer.
        cache = tuple(
            tf.stack([inputs[sig.kv_cache_name("k", i)], inputs[sig.kv_cache_name("v", i)]], axis=1) for i in layers
        )
        # Every cache slot counts as real: the causal mask from `input_pos[0]` hides the slots not written yet.
        padding_mask = tf.ones([1, shapes.cache_length], tf.int32)
        hidden, cache = model.call_with_cache(inputs[sig.TOKENS], padding_mask, cache, inputs[sig.INPUT_POS][0])
        outputs = {sig.LOGITS: model.compute_logits(hidden)}  # (1, length, vocabulary_size)
        for i in layers:
            outputs[output_name("k", i)] = cache[i][:, 0]
            outputs[output_name("v", i)] = cache[i][:, 1]
        return outputs

    return step


def step_functions(model, shapes, output_name=sig.kv_cache_name):
    """`{"prefill": (fn, input_signature), "decode": (fn, input_signature)}`."""
    step = step_function(model, shapes, output_name)
    return {
        sig.PREFILL: (step, step_input_signature(shapes, shapes.prefill_length)),
        sig.DECODE: (step, step_input_signature(shapes, 1)),
    }


# === Full forward passes (encoders; the ONNX logits graph) ===


def forward_input_signature(batch_size=None, sequence_length=None):
    """`[{input_ids, attention_mask}]` int32 specs; None leaves a dimension free."""
    shape = [batch_size, sequence_length]
    return [{name: tf.TensorSpec(shape, tf.int32, name=name) for name in (sig.INPUT_IDS, sig.ATTENTION_MASK)}]


def forward_function(model):
    """`fn({input_ids, attention_mask}) -> {logits}` or, for an encoder's backbone, `{sequence_output}` (its
    `last_hidden_state`) and `pooled_output` when the backbone has a pooler."""

    def forward(inputs):
        outputs = model({sig.INPUT_IDS: inputs[sig.INPUT_IDS], sig.ATTENTION_MASK: inputs[sig.ATTENTION_MASK]})
        if isinstance(outputs, dict):
            pooled = {sig.POOLED_OUTPUT: outputs["pooled_output"]} if "pooled_output" in outputs else {}
            return {sig.SEQUENCE_OUTPUT: outputs["last_hidden_state"], **pooled}
        return {sig.LOGITS: outputs}

    return forward


def keras_forward(model, input_ids, attention_mask):
    """What `forward_function` returns, computed eagerly, as numpy arrays."""
    outputs = forward_function(model)({sig.INPUT_IDS: tf.constant(input_ids, tf.int32),
                                       sig.ATTENTION_MASK: tf.constant(attention_mask, tf.int32)})
    return {name: np.asarray(value) for name, value in outputs.items()}


# === The numpy driver ===


class StepGenerator:
    """Greedy generation over an exported prefill/decode pair, in numpy.

    Prompts longer than `prefill_length` are fed in windows; the last window is moved back to end
    inside the cache when needed (re-fed positions get the same keys and values again).
    Subclasses load a runtime and implement `_run(signature, inputs) -> outputs` with the updated
    caches under their input names.

    Args:
        tokenizer: a tfllm tokenizer for `generate` (text); None if only `generate_ids` is used.
        prefill_length: tokens one prefill call takes.
        cache_shapes: `{cache input name: shape}`.
        cache_dtype: the caches' numpy dtype.
    """

    def __init__(self, tokenizer, prefill_length, cache_shapes, cache_dtype=np.float32):
        self.tokenizer = tokenizer
        self.prefill_length = int(prefill_length)
        self.cache_shapes = {name: tuple(int(d) for d in shape) for name, shape in cache_shapes.items()}
        self.cache_names = list(self.cache_shapes)
        self.cache_length = next(iter(self.cache_shapes.values()))[1]
        self.cache_dtype = cache_dtype

    def _run(self, signature, inputs):
        raise NotImplementedError

    def init_cache(self):
        return {name: np.zeros(shape, self.cache_dtype) for name, shape in self.cache_shapes.items()}

    def prefill(self, prompt_ids):
        """Runs a prompt into a fresh cache.

        Returns:
            `(logits, cache)`: `(prompt_length, vocabulary_size)` logits of every prompt position and
            the cache dict.
        """
        ids = self._check_prompt(prompt_ids)
        window, cache = self.prefill_length, self.init_cache()
        logits, start = [None] * len(ids), 0
        while start < len(ids):
            begin = max(0, min(start, self.cache_length - window))
            chunk = ids[begin:begin + window]
            tokens = np.zeros((1, window), np.int32)
            tokens[0, :len(chunk)] = chunk
            positions = np.arange(begin, begin + window, dtype=np.int32)
            outputs = self._run(sig.PREFILL, {sig.TOKENS: tokens, sig.INPUT_POS: positions, **cache})
            cache = {name: outputs[name] for name in self.cache_names}
            for offset in range(len(chunk)):
                logits[begin + offset] = outputs[sig.LOGITS][0, offset]
            start = begin + window
        return np.stack(logits), cache

    def decode(self, token, position, cache):
        """Feeds one token at `position`; returns `(logits (vocabulary_size,), cache)`."""
        outputs = self._run(sig.DECODE, {sig.TOKENS: np.array([[token]], np.int32),
                                         sig.INPUT_POS: np.array([position], np.int32), **cache})
        return outputs[sig.LOGITS][0, 0], {name: outputs[name] for name in self.cache_names}

    def generate_ids(self, prompt_ids, max_new_tokens=20, eos_token_id=None):
        """Greedy continuation of token ids.

        Args:
            prompt_ids: one prompt (a list of ints) or a list of prompts; each runs on its own.
            max_new_tokens: tokens to add; prompt + max_new_tokens must fit `cache_length`.
            eos_token_id: stop after this id. Defaults to the tokenizer's; -1 disables.

        Returns:
            The prompt followed by the new tokens (a list of ints), or one such list per prompt.
        """
        single = len(prompt_ids) > 0 and np.isscalar(prompt_ids[0])
        prompts = [prompt_ids] if single else list(prompt_ids)
        max_new_tokens = check_int("max_new_tokens", max_new_tokens, minimum=1)
        eos = self._eos(eos_token_id)
        outputs = [self._greedy(self._check_prompt(p, max_new_tokens), max_new_tokens, eos) for p in prompts]
        return outputs[0] if single else outputs

    def generate(self, prompts, max_new_tokens=20, eos_token_id=None):
        """Greedy continuation of text: returns prompt + continuation (a str, or a list for a list of prompts)."""
        if self.tokenizer is None:
            raise ValueError(f"{type(self).__name__} was made without a tokenizer: pass one, or use generate_ids")
        single = isinstance(prompts, str)
        texts = [prompts] if single else list(prompts)
        ids = self.generate_ids([self.tokenizer.encode(t) for t in texts], max_new_tokens, eos_token_id)
        decoded = [self.tokenizer.decode(row, skip_special_tokens=True) for row in ids]
        return decoded[0] if single else decoded

    def _greedy(self, ids, max_new_tokens, eos):
        def prefill():
            logits, cache = self.prefill(ids)
            return logits[-1], cache

        def step(token, index, cache):
            return self.decode(token, len(ids) + index, cache)

        eos_ids = () if eos < 0 else (eos,)
        return list(ids) + list(host_decode(prefill, step, greedy, max_new_tokens, eos_ids))

    def _eos(self, eos_token_id):
        if eos_token_id is None:
            eos_token_id = getattr(self.tokenizer, "eos_token_id", None)
        return -1 if eos_token_id is None else check_int("eos_token_id", eos_token_id, minimum=-1)

    def _check_prompt(self, prompt_ids, max_new_tokens=0):
        ids = [int(i) for i in np.asarray(prompt_ids).reshape(-1)]
        if not ids or len(ids) > self.cache_length:
            expected = f"between 1 and {self.cache_length} tokens (the exported cache; export with a larger `cache_length`)"
            raise invalid_argument("prompt_ids", expected, f"{len(ids)} tokens")
        if len(ids) + max_new_tokens > self.cache_length:
            raise ValueError(
                f"Invalid value for argument `max_new_tokens`. Expected the prompt ({len(ids)} tokens) plus "
                f"max_new_tokens to fit the exported cache of {self.cache_length} positions (export with a larger "
                f"`cache_length`). Received: max_new_tokens={max_new_tokens}"
            )
        return ids


# === Checks against the Keras model ===


def default_prompts(model, shapes, max_new_tokens, seed=0):
    """Token-id prompts for checking an export: a short one, and one longer than a prefill window."""
    rng = np.random.default_rng(seed)
    longest = shapes.cache_length - max_new_tokens
    lengths = sorted({max(1, min(4, longest)), max(1, min(shapes.prefill_length + 3, longest))})
    vocabulary = model.backbone.vocabulary_size
    return [rng.integers(0, vocabulary, n).tolist() for n in lengths]


def compare_with_keras(generator, model, prompts, max_new_tokens=8):
    """Runs `prompts` through an exported pair (a `StepGenerator`) and through `model`.

    Returns:
        A dict: `greedy_equal` (every prompt's greedy tokens equal `model.generate`'s),
        `next_token_agreement` (share of prompt positions where the export's argmax equals the
        Keras model's), `logits_max_abs_diff`, `logits_scale` (largest |Keras logit|), `finite`
        and the token lists `greedy` / `keras_greedy`.
    """
    agree = total = 0
    diff = scale = 0.0
    finite = True
    greedy, keras_greedy = [], []
    for prompt in prompts:
        new = max(1, min(max_new_tokens, generator.cache_length - len(prompt)))
        logits, _ = generator.prefill(prompt)
        reference = np.asarray(model(np.array([prompt], np.int32)))[0]
        finite = finite and bool(np.isfinite(logits).all())
        diff = max(diff, float(np.abs(logits - reference).max()))
        scale = max(scale, float(np.abs(reference).max()))
        agree += int((logits.argmax(-1) == reference.argmax(-1)).sum())
        total += len(prompt)
        greedy.append(generator.generate_ids(prompt, new, eos_token_id=-1))
        expected = model.generate(np.array([prompt], np.int32), max_new_tokens=new, eos_token_id=-1)
        keras_greedy.append(np.asarray(expected)[0].tolist())
    return {
        "greedy_equal": greedy == keras_greedy,
        "next_token_agreement": agree / total,
        "logits_max_abs_diff": diff,
        "logits_scale": scale,
        "finite": finite,
        "greedy": greedy,
        "keras_greedy": keras_greedy,
    }


def encoder_check_batches(model, batch_size, sequence_length, seed=0):
    """Random `(ids, mask)` pairs `(batch_size, sequence_length)` int32: one unpadded, one with its last row right-padded."""
    rng = np.random.default_rng(seed)
    vocabulary = getattr(model, "backbone", model).vocabulary_size
    batches = []
    for padded in (False, True):
        ids = rng.integers(0, vocabulary, (batch_size, sequence_length)).astype(np.int32)
        mask = np.ones_like(ids)
        if padded:
            mask[-1, max(1, sequence_length * 3 // 4):] = 0
        batches.append((ids * mask, mask))
    return batches


def compare_outputs(outputs, reference):
    """`{"max_abs_diff", "scale", "cosine", "finite"}` of two `{name: array}` dicts over their shared names."""
    diff, scale, cosines, finite = 0.0, 0.0, [], True
    for name, expected in reference.items():
        got = np.asarray(outputs[name], np.float64)
        expected = np.asarray(expected, np.float64)
        finite = finite and bool(np.isfinite(got).all())
        diff = max(diff, float(np.abs(got - expected).max()))
        scale = max(scale, float(np.abs(expected).max()))
        denominator = np.linalg.norm(got) * np.linalg.norm(expected)
        cosines.append(float((got * expected).sum() / denominator) if denominator else 1.0)
    return {"max_abs_diff": diff, "scale": scale, "cosine": min(cosines), "finite": finite}
