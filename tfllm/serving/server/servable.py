"""One loaded SavedModel version: its signatures, input checks as TF Serving makes them, and `run`."""

import logging
import os
import threading

import numpy as np

from tfllm.serving.server.errors import ServingError, invalid_argument

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
        import tensorflow as tf
        import tensorflow_text  # noqa: F401  (TF-Text ops used by exported tokenizers)

        from tfllm.export.verify import _read_saved_model

        self.name, self.version, self.path = name, int(version), os.fspath(path)
        meta_graph = _read_saved_model(self.path).meta_graphs[0]
        self.signature_defs = dict(meta_graph.signature_def)
        self.defaults = {
            signature: {key: tf.make_ndarray(value) for key, value in definition.defaults.items()}
            for signature, definition in self.signature_defs.items()
        }
        self._loaded = tf.saved_model.load(self.path)  # keep a reference while its functions run
        self._functions = {name: self._loaded.signatures[name] for name in self.signature_defs if not name.startswith("__")}
        self._lock = threading.Lock()
        logger.info("Loaded %s version %d from %s (signatures: %s)", name, self.version, self.path, sorted(self._functions))

    @property
    def signature_names(self):
        return sorted(self._functions)

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

    def check_inputs(self, signature, inputs):
        """Validates a request's inputs against the signature; returns the feed (defaults filled in).

        Raises:
            ServingError: INVALID_ARGUMENT for extra or missing inputs, a wrong dtype or a shape
                the signature does not accept, worded as TF Serving words them.
        """
        import tensorflow as tf

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

    def run(self, signature, inputs, output_filter=None):
        """Runs a signature on numpy inputs; returns `{output: numpy array}` (strings as bytes).

        Raises:
            ServingError: for invalid inputs (INVALID_ARGUMENT), an unknown signature
                (FAILED_PRECONDITION), an unknown output alias, or an error raised by the graph
                (its status, e.g. INVALID_ARGUMENT for a failed assertion).
        """
        import tensorflow as tf

        feed = self.check_inputs(signature, inputs)
        function = self._function(signature)
        try:
            outputs = function(**feed)
        except tf.errors.OpError as error:
            raise ServingError(_OP_ERROR_CODES.get(type(error).__name__, "INTERNAL"), error.message) from error
        if output_filter:
            unknown = [alias for alias in output_filter if alias not in outputs]
            if unknown:
                raise invalid_argument(
                    f"output tensor alias not found in signature: {unknown[0]} Outputs expected to be in the set "
                    f"{{{','.join(sorted(outputs))}}}."
                )
            outputs = {alias: outputs[alias] for alias in output_filter}
        return {key: value.numpy() for key, value in outputs.items()}


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
