"""One loaded SavedModel version: its signatures, input checks as TF Serving makes them, and `run`."""

import logging
import os
import threading

import numpy as np
import tensorflow as tf

from tfllm.export import signatures as sig
from tfllm.generation.host_loop import greedy, host_decode
from tfllm.generation.sampling import next_token
from tfllm.serving.server.errors import ServingError, invalid_argument, invalid_value
from tfllm.serving.server.validation import PromptLimit, check_generation

logger = logging.getLogger(__name__)


class Servable:
    """A SavedModel version loaded for serving.

    Args:
        name: the model name clients use.
        version: the version number (its folder name).
        path: the version folder.

    Attributes:
        signature_defs: `{name: SignatureDef proto}` from the MetaGraphDef (for metadata).
        defaults: `{signature: {input: numpy value}}` declared by the SignatureDefs; a request may
            leave these inputs out, as with TF Serving.
    """

    def __init__(self, name, version, path):
        import tensorflow_text  # noqa: F401  (TF-Text ops used by exported tokenizers)

        from tfllm.export.verify import defaults_of, read_saved_model  # lazy: imports TensorFlow, as above

        self.name, self.version, self.path = name, int(version), os.fspath(path)
        meta_graph = read_saved_model(self.path).meta_graphs[0]
        self.signature_defs = dict(meta_graph.signature_def)
        self.defaults = defaults_of(meta_graph)
        self._loaded = tf.saved_model.load(self.path)  # keep a reference while its functions run
        self._functions = {name: self._loaded.signatures[name] for name in self.signature_defs if not name.startswith("__")}
        self._lock = threading.Lock()
        self._tokenizer = None
        self._tokenizer_lock = threading.Lock()
        self._prompt_limit = None
        self._in_flight = 0
        self._idle = threading.Condition(self._lock)
        logger.info("Loaded %s version %d from %s (signatures: %s)", name, self.version, self.path, sorted(self._functions))

    @property
    def signature_names(self):
        return sorted(self._functions)

    def has_signature(self, signature):
        return signature in self._functions

    def batch_inputs(self, signature):
        """The inputs of a signature whose first axis is the batch (`shape[0]` is None)."""
        return sorted(
            key for key, spec in self.input_specs(signature).items()
            if spec.shape.rank is not None and spec.shape.rank >= 1 and spec.shape[0] is None
        )

    @property
    def tokenizer(self):
        """The Python tokenizer shipped in `assets.extra/tokenizer`, or None when the version has none."""
        with self._tokenizer_lock:
            if self._tokenizer is None:
                folder = os.path.join(self.path, sig.TOKENIZER_ASSETS)
                if not os.path.isdir(folder):
                    return None
                from tfllm.tokenizers import AutoTokenizer  # lazy: only versions that stream tokens need it

                self._tokenizer = AutoTokenizer.from_pretrained(folder)
            return self._tokenizer

    @property
    def prompt_limit(self):
        """The `PromptLimit` refusing over-long prompts of this version before they are tokenized."""
        if self._prompt_limit is None:
            self._prompt_limit = PromptLimit.of_version(self.path, self.tokenizer)
        return self._prompt_limit

    # === Requests in flight (a version is unloaded once none is left) ===

    def acquire(self):
        with self._lock:
            self._in_flight += 1

    def release(self):
        with self._lock:
            self._in_flight -= 1
            if self._in_flight == 0:
                self._idle.notify_all()

    def wait_idle(self, timeout):
        """Waits until no request uses this version; returns False if `timeout` seconds passed first."""
        with self._lock:
            return self._idle.wait_for(lambda: self._in_flight == 0, timeout)

    def unload(self):
        """Drops the loaded graph; the version cannot run afterwards."""
        self._functions = {}
        self._loaded = None

    def input_specs(self, signature):
        """`{input: tf.TensorSpec}` of a signature."""
        return self._function(signature).structured_input_signature[1]

    def _function(self, signature):
        signature = signature or "serving_default"
        if signature not in self._functions:
            raise ServingError(
                "FAILED_PRECONDITION", f'Serving signature key "{signature}" not found.'
            )
        return self._functions[signature]

    def check_inputs(self, signature, inputs, strict_dtypes=False):
        """Validates a request's inputs against the signature; returns the feed (defaults filled in).

        Args:
            signature: the signature name ("serving_default" when empty).
            inputs: `{input: numpy array or value}`.
            strict_dtypes: refuse any dtype other than the signature's, as TF Serving does for
                gRPC's typed TensorProtos; otherwise values are converted when they can be
                (JSON numbers carry no dtype).

        Raises:
            ServingError: INVALID_ARGUMENT for extra or missing inputs, a wrong dtype or a shape
                the signature does not accept, worded as TF Serving words them.
        """
        signature = signature or "serving_default"
        specs = self.input_specs(signature)
        defaults = self.defaults.get(signature, {})
        extra = sorted(set(inputs) - set(specs))
        missing = sorted(set(specs) - set(inputs) - set(defaults))
        if extra or missing:
            raise invalid_argument(
                f"input size does not match signature: {len(inputs)}!={len(specs)} len({{{','.join(sorted(inputs))}}}) != "
                f"len({{{','.join(sorted(specs))}}}). Sent extra: {{{','.join(extra)}}}. "
                f"Missing but required: {{{','.join(missing)}}}."
            )
        feed = {}
        for key, spec in specs.items():
            value = inputs.get(key, defaults.get(key))
            array = np.asarray(value)
            if strict_dtypes and key in inputs:
                provided = tf.string if array.dtype.kind in "OSU" else tf.as_dtype(array.dtype)
                if provided != spec.dtype:
                    raise invalid_argument(
                        f"Expects arg[{key}] to be {_type_name(spec.dtype)} but {_type_name(provided)} is provided"
                    )
            try:
                tensor = tf.constant(array, spec.dtype) if array.dtype != object else tf.constant(array, tf.string)
            except (TypeError, ValueError) as error:
                raise invalid_argument(f"Expects arg[{key}] to be {spec.dtype.name} but {array.dtype} is provided") from error
            if tensor.dtype != spec.dtype:
                raise invalid_argument(f"Expects arg[{key}] to be {spec.dtype.name} but {tensor.dtype.name} is provided")
            if not spec.shape.is_compatible_with(tensor.shape):
                raise invalid_argument(
                    f"Input {key} has shape {list(tensor.shape)}, which the signature {signature} does not accept "
                    f"(expected {spec.shape})"
                )
            feed[key] = tensor
        return feed

    def call(self, signature, feed, cancellation=None):
        """Runs a signature on a feed of tensors (already checked); returns its output tensors.

        Args:
            signature: the signature name.
            feed: `{input: tensor}`.
            cancellation: a `Cancellation` whose `cancel()` stops the run (CANCELLED), or None.

        Raises:
            ServingError: with the status of an error the graph raised.
        """
        function = self._function(signature)
        try:
            if cancellation is None:
                return function(**feed)
            with cancellation.scope():
                return function(**feed)
        except tf.errors.OpError as error:
            raise ServingError(_OP_ERROR_CODES.get(type(error).__name__, "INTERNAL"), error.message) from error

    def warmup(self, iterations=1):
        """Replays the Predict requests of `assets.extra/tf_serving_warmup_requests`, as TF Serving does on load.

        Returns:
            The number of records replayed.

        Raises:
            ServingError: a record is not a PredictionLog, is not a Predict request, or fails.
        """
        from tensorflow_serving.apis import prediction_log_pb2

        path = os.path.join(self.path, sig.WARMUP_FILE)
        if not os.path.isfile(path):
            return 0
        count = 0
        for record in tf.data.TFRecordDataset(path).as_numpy_iterator():
            count += 1
            if count > _MAX_WARMUP_RECORDS:
                raise invalid_argument(f"Number of warmup records exceeds the maximum ({_MAX_WARMUP_RECORDS}) at {path}")
            log = prediction_log_pb2.PredictionLog.FromString(record)
            if log.WhichOneof("log_type") != "predict_log":
                raise ServingError("UNIMPLEMENTED", f"Unsupported log_type for warmup: {log.WhichOneof('log_type')}")
            request = log.predict_log.request
            inputs = {key: tf.make_ndarray(proto) for key, proto in request.inputs.items()}
            for _ in range(iterations):
                self.run(request.model_spec.signature_name or None, inputs, list(request.output_filter) or None)
        logger.info("Replayed %d warmup records for %s version %d", count, self.name, self.version)
        return count

    def run(self, signature, inputs, output_filter=None):
        """Runs a signature on numpy inputs; returns `{output: numpy array}` (strings as bytes).

        Raises:
            ServingError: for invalid inputs (INVALID_ARGUMENT), an unknown signature
                (FAILED_PRECONDITION), an unknown output alias, or an error raised by the graph
                (its status, e.g. INVALID_ARGUMENT for a failed assertion).
        """
        feed = self.check_inputs(signature, inputs)
        self.check_output_filter(signature, output_filter)
        outputs = self.call(signature, feed)
        if output_filter:
            outputs = {alias: outputs[alias] for alias in output_filter}
        return {key: value.numpy() for key, value in outputs.items()}

    def check_output_filter(self, signature, output_filter):
        """Raises INVALID_ARGUMENT, in TF Serving's words, for an output alias the signature lacks."""
        if not output_filter:
            return
        names = set(self.signature_defs[signature or "serving_default"].outputs)
        unknown = [alias for alias in output_filter if alias not in names]
        if unknown:
            raise invalid_argument(
                f"output tensor alias not found in signature: {unknown[0]} Outputs expected to be in the set "
                f"{{{','.join(sorted(names))}}}."
            )


def _type_name(dtype):
    """TensorFlow's DataTypeString, as its errors print it ("float", "double", "int32", "string")."""
    return {"float32": "float", "float64": "double"}.get(dtype.name, dtype.name)


_MAX_WARMUP_RECORDS = 1000  # TF Serving's limit

_OP_ERROR_CODES = {
    "InvalidArgumentError": "INVALID_ARGUMENT",
    "NotFoundError": "NOT_FOUND",
    "ResourceExhaustedError": "RESOURCE_EXHAUSTED",
    "DeadlineExceededError": "DEADLINE_EXCEEDED",
    "FailedPreconditionError": "FAILED_PRECONDITION",
    "OutOfRangeError": "OUT_OF_RANGE",
    "UnimplementedError": "UNIMPLEMENTED",
    "UnavailableError": "UNAVAILABLE",
    "CancelledError": "CANCELLED",
}


# === Streaming generation ===

STREAM_PREFILL, STREAM_DECODE = sig.STREAM_PREFILL, sig.STREAM_DECODE
_PARAMETER_TYPES = {sig.MAX_NEW_TOKENS: int, sig.DO_SAMPLE: bool, sig.TEMPERATURE: float, sig.TOP_K: int,
                    sig.TOP_P: float, sig.SEED: int}
_REPLACEMENT = "\ufffd"


def stream_parameters(servable, params, max_new_tokens_cap):
    """Checked generation parameters of a streamed request, defaults from the version's `serving_default`.

    Raises:
        ServingError: UNIMPLEMENTED when the version cannot stream; INVALID_ARGUMENT for an
            unknown parameter, a value of the wrong type or range, or `max_new_tokens` above the cap.
    """
    if not (servable.has_signature(STREAM_PREFILL) and servable.has_signature(STREAM_DECODE)):
        raise ServingError(
            "UNIMPLEMENTED",
            f"Streaming needs the {STREAM_PREFILL} and {STREAM_DECODE} signatures, which version {servable.version} "
            f"of model {servable.name} does not have (export it again with tfllm.export.saved_model).",
        )
    if servable.tokenizer is None:
        raise ServingError("UNIMPLEMENTED", f"Version {servable.version} of model {servable.name} has no tokenizer in "
                                            f"{sig.TOKENIZER_ASSETS}, which streaming needs.")
    values = {t.name: t.default for t in sig.generation_inputs(32)}
    for key, value in servable.defaults.get(sig.SERVING_DEFAULT, {}).items():
        if key in values:
            values[key] = value.item()
    unknown = sorted(set(params) - set(values))
    if unknown:
        raise invalid_argument(f"Unknown generation parameters: {', '.join(unknown)}. Expected some of: "
                               f"{', '.join(sorted(values))}.")
    for key, value in params.items():
        if value is not None:
            values[key] = _parameter(key, value)
    cap = max_new_tokens_cap
    if values[sig.MAX_NEW_TOKENS] > cap:
        if params.get(sig.MAX_NEW_TOKENS) is not None:
            raise invalid_argument(
                f"max_new_tokens ({values[sig.MAX_NEW_TOKENS]}) exceeds this server's cap of {cap} (--max_new_tokens_cap)"
            )
        values[sig.MAX_NEW_TOKENS] = cap
    check_generation(values)
    return values


def _parameter(key, value):
    kind = _PARAMETER_TYPES[key]
    value = value.item() if isinstance(value, np.generic) or (isinstance(value, np.ndarray) and value.ndim == 0) else value
    if kind is bool and isinstance(value, (bool, int)) and value in (0, 1):
        return bool(value)
    if kind is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    expected = {bool: "true or false", int: "an integer", float: "a number"}[kind]
    raise invalid_value(key, expected, value)


class TokenStream:
    """The text pieces of one streamed continuation, produced as `stream_prefill` / `stream_decode` run.

    Each piece is the new suffix of the decoded continuation; a trailing U+FFFD (a character whose
    bytes are not all generated yet) is held back until it resolves, so the pieces concatenate to
    what `serving_default` returns as `completion`. Iterating to the end, or `close()`, releases
    the version (and calls `on_close` once).

    Args:
        servable: a `Servable` with the streaming signatures and a tokenizer.
        text: the prompt.
        parameters: from `stream_parameters`.
        on_close: called once when the stream ends or is closed.
    """

    def __init__(self, servable, text, parameters, on_close=None):
        self._servable, self._parameters, self._on_close = servable, parameters, on_close
        self._closed = False
        self._pieces = self._generate(text)

    def __iter__(self):
        return self

    def __next__(self):
        try:
            return next(self._pieces)
        except BaseException:
            self.close()
            raise

    def close(self):
        if self._closed:
            return
        self._closed = True
        self._pieces.close()
        if self._on_close is not None:
            self._on_close()

    def __del__(self):
        self.close()

    def _generate(self, text):
        tokenizer = self._servable.tokenizer
        ids = tokenizer.encode(text)
        if not ids:
            raise invalid_argument("every prompt needs at least one token")
        prompt_text = tokenizer.decode(ids, skip_special_tokens=True)
        new, emitted = [], ""
        eos_ids = () if tokenizer.eos_token_id is None else (tokenizer.eos_token_id,)
        for token in host_decode(*self._steps(ids), self._parameters[sig.MAX_NEW_TOKENS], eos_ids, include_eos=False):
            new.append(token)
            settled = tokenizer.decode(ids + new, skip_special_tokens=True)[len(prompt_text):].rstrip(_REPLACEMENT)
            if len(settled) > len(emitted) and settled.startswith(emitted):
                piece, emitted = settled[len(emitted):], settled
                yield piece
        final = tokenizer.decode(ids + new, skip_special_tokens=True)[len(prompt_text):]
        if final.startswith(emitted) and len(final) > len(emitted):
            yield final[len(emitted):]
        elif not final.startswith(emitted):
            logger.warning("Streamed text %r is not a prefix of the decoded continuation %r", emitted, final)

    def _steps(self, ids):
        """`(prefill, step, choose)` for `host_decode`: the version's `stream_prefill` / `stream_decode`."""
        servable, p = self._servable, self._parameters
        context = {}

        def prefill():
            feed = servable.check_inputs(STREAM_PREFILL, {
                sig.INPUT_IDS: np.array([ids], np.int32), sig.ATTENTION_MASK: np.ones([1, len(ids)], np.int32),
                sig.MAX_NEW_TOKENS: np.int32(p[sig.MAX_NEW_TOKENS]),
            })
            state = servable.call(STREAM_PREFILL, feed)
            context.update({sig.PADDING_MASK: state[sig.PADDING_MASK], sig.PROMPT_LENGTH: state[sig.PROMPT_LENGTH]})
            return state[sig.LOGITS], state[sig.KV_CACHE_TENSOR]

        def step(token, index, cache):
            state = servable.call(STREAM_DECODE, {
                sig.TOKEN: tf.constant([token], tf.int32), sig.STEP: tf.constant(index, tf.int32),
                sig.KV_CACHE_TENSOR: cache, **context,
            })
            return state[sig.LOGITS], state[sig.KV_CACHE_TENSOR]

        seed = p[sig.SEED] if p[sig.SEED] >= 0 else int(np.random.randint(0, 2**31 - 1))
        seeds = tf.constant([seed, 0], tf.int32)
        return prefill, step, lambda logits, index: _choose(logits, index, p, seeds)


def _choose(logits, step, parameters, seeds):
    """The next token: argmax, or the exported graph's sampler (so a fixed seed repeats `serving_default`)."""
    if not parameters[sig.DO_SAMPLE]:
        return greedy(logits.numpy()[0], step)
    token = next_token(logits, True, tf.constant(parameters[sig.TEMPERATURE], tf.float32),
                       tf.constant(parameters[sig.TOP_K], tf.int32), tf.constant(parameters[sig.TOP_P], tf.float32),
                       seeds, tf.constant(step, tf.int32))
    return int(token.numpy()[0])
