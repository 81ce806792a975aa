"""`ServingCore`: what the gRPC and REST front ends of `tfllm serve` call, in TF Serving's terms."""

import contextlib
import logging
import threading
import time

from tfllm.export import signatures as sig
from tfllm.serving.server import config as config_lib
from tfllm.serving.server.batching import Batcher, plan
from tfllm.serving.server.errors import ServingError, invalid_argument, invalid_value
from tfllm.serving.server.manager import ModelManager
from tfllm.serving.server.servable import TokenStream, stream_parameters
from tfllm.serving.server.validation import check_generation, check_texts, generation_values

logger = logging.getLogger(__name__)


class ServingCore:
    """Models, versions, batching and requests behind `tfllm serve` (TF Serving's ServerCore).

    Args:
        options: a `tfllm.serving.server.options.ServerOptions`.
        metrics: optional `tfllm.serving.server.metrics.Metrics`; batch sizes are recorded into it.

    Example:
    ```python
    core = ServingCore(ServerOptions(model_name="tiny", model_base_path="saved_models/tiny")).start()
    version, outputs = core.predict("tiny", {"text": np.array([b"Hello"])})
    print(version, outputs["completion"])
    core.stop()
    ```
    """

    def __init__(self, options, metrics=None):
        self.options = options
        self.metrics = metrics
        self.manager = ModelManager(options)
        self.batcher = None
        self._in_flight = 0
        self._idle = threading.Condition()
        self._stopping = False
        self._stop_event = threading.Event()
        self._config_poller = None
        self._config_text = None

    # === Life cycle ===

    def start(self):
        """Loads the configured models (warmed up), starts batching and the pollers; returns self.

        Raises:
            ValueError: no model given, or an unreadable config or batching file.
            ServingError: a config TF Serving would refuse (e.g. a label on a version that is not loaded).
        """
        self.options.check_models_given()
        if self.options.model_config_file:
            server_config = self._read_config_file()
        else:
            server_config = config_lib.single_model_config(self.options.model_name, self.options.model_base_path)
        if self.options.enable_batching:
            parameters = config_lib.read_batching_parameters(self.options.batching_parameters_file)
            self.batcher = Batcher(parameters, on_batch=self._on_batch)
        self.manager.apply_config(server_config, initial=True)
        if self.batcher is not None:
            self.batcher.start()
        self.manager.start_polling(self.options.file_system_poll_wait_seconds)
        interval = self.options.model_config_file_poll_wait_seconds
        if self.options.model_config_file and interval > 0:
            self._config_poller = threading.Thread(target=self._poll_config, args=(interval,), name="config-poller",
                                                   daemon=True)
            self._config_poller.start()
        return self

    def stop(self, grace_seconds=10.0):
        """Refuses new requests, lets those in flight finish (up to `grace_seconds`), then unloads everything."""
        self._stopping = True
        self._stop_event.set()
        with self._idle:
            if not self._idle.wait_for(lambda: self._in_flight == 0, grace_seconds):
                logger.warning("Stopping with %d requests still running after %.1f s", self._in_flight, grace_seconds)
        if self.batcher is not None:
            self.batcher.stop()
        if self._config_poller is not None:
            self._config_poller.join(timeout=grace_seconds + 30)
        self.manager.stop(grace_seconds)

    def _enter(self):
        with self._idle:
            if self._stopping:
                raise ServingError("UNAVAILABLE", "Server is shutting down")
            self._in_flight += 1

    @contextlib.contextmanager
    def _request(self):
        self._enter()
        try:
            yield
        finally:
            self._leave()

    def _leave(self):
        with self._idle:
            self._in_flight -= 1
            if self._in_flight == 0:
                self._idle.notify_all()

    # === Models ===

    @property
    def models(self):
        """`{model name: {version: Servable}}` of the versions being served now."""
        return self.manager.servables()

    def model_names(self):
        return self.manager.model_names()

    def servable(self, model_name, version=None, version_label=None):
        """The `Servable` a request with this model spec would run on (see `predict` for the errors)."""
        return self.manager.servable(model_name, _version(version), version_label)

    @contextlib.contextmanager
    def use(self, model_name, version=None, version_label=None):
        """Holds a servable for the block, so a hot swap cannot unload it meanwhile."""
        with self._request():
            servable = self.manager.servable(model_name, _version(version), version_label, acquire=True)
            try:
                yield servable
            finally:
                servable.release()

    # === Requests ===

    def predict(self, model_name, inputs, signature_name=None, version=None, version_label=None, output_filter=None,
                deadline=None, strict_dtypes=False, cancellation=None):
        """Runs a signature, as TF Serving's Predict does.

        Args:
            model_name: the model's name.
            inputs: `{input: numpy array}` (strings as bytes or str); inputs with a SignatureDef
                default may be left out.
            signature_name: defaults to "serving_default".
            version, version_label: pick a version (the latest when neither is given).
            output_filter: output names to return (all when empty).
            deadline: a `time.monotonic()` time after which the request fails with
                DEADLINE_EXCEEDED (`request_timeout_seconds` from now when None).
            strict_dtypes: refuse inputs whose dtype is not the signature's (gRPC, as TF Serving);
                otherwise convertible values are converted (REST's JSON numbers).
            cancellation: a `Cancellation` the front end cancels when the client goes away (the
                run stops with CANCELLED); batched requests run to the end of their batch.

        Returns:
            `(version, {output: numpy array})`, strings as bytes.

        Raises:
            ServingError: NOT_FOUND "Servable not found for request: Latest(NAME)" or
                "Specific(NAME, N)"; INVALID_ARGUMENT for an unknown label, inputs the signature
                does not take (extra, missing, dtype, shape), `max_new_tokens` above the server's
                cap, generation parameters out of range, an empty or over-long prompt, or an
                unknown output alias; FAILED_PRECONDITION for an unknown signature;
                UNAVAILABLE when the batch queue is full or the server is stopping;
                DEADLINE_EXCEEDED; or the error the graph raised.
        """
        deadline = self._deadline(deadline)
        with self.use(model_name, version, version_label) as servable:
            signature = signature_name or sig.SERVING_DEFAULT
            feed = servable.check_inputs(signature, inputs, strict_dtypes)
            servable.check_output_filter(signature, output_filter)
            feed = self._cap_max_new_tokens(feed, inputs)
            _check_request(servable, feed)
            _check_deadline(deadline)
            outputs = None
            if self.batcher is not None:
                arrays = {key: value.numpy() for key, value in feed.items()}
                planned = plan(servable, signature, arrays, self.batcher.parameters.pad_variable_length_inputs)
                if planned is not None:
                    outputs = self.batcher.run(servable, signature, arrays, *planned, output_filter=output_filter,
                                               deadline=deadline)
            if outputs is None:
                tensors = servable.call(signature, feed, cancellation)
                outputs = {key: tensors[key].numpy() for key in (output_filter or tensors)}
            _check_deadline(deadline)
            return servable.version, outputs

    def metadata(self, model_name, version=None, version_label=None):
        """`GetModelMetadataResponse` with the version's SignatureDefs under "signature_def", as TF Serving fills it."""
        from tensorflow_serving.apis import get_model_metadata_pb2

        servable = self.servable(model_name, version, version_label)
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        response.model_spec.name = servable.name
        response.model_spec.version.value = servable.version
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        for name, definition in servable.signature_defs.items():
            signature_map.signature_def[name].CopyFrom(definition)
        response.metadata["signature_def"].Pack(signature_map)
        return response

    def status(self, model_name, version=None, version_label=None):
        """`GetModelStatusResponse`: every version's state (newest first), or the one asked for.

        Raises:
            ServingError: NOT_FOUND "Could not find any versions of model NAME" or "Could not
                find version N of model NAME"; INVALID_ARGUMENT for an unknown label.
        """
        from tensorflow_serving.apis import get_model_status_pb2

        if not model_name:
            raise invalid_argument("Missing ModelSpec")
        version = _version(version)
        if version_label:
            labels = self.manager.labels(model_name)
            if version_label not in labels:
                raise invalid_argument(f"Unrecognized servable version label: {version_label}")
            version = labels[version_label]
        states = self.manager.version_states(model_name)
        if version is not None:
            if version not in states:
                raise ServingError("NOT_FOUND", f"Could not find version {version} of model {model_name}")
            states = {version: states[version]}
        elif not states:
            raise ServingError("NOT_FOUND", f"Could not find any versions of model {model_name}")
        response = get_model_status_pb2.GetModelStatusResponse()
        for number in sorted(states, reverse=True):
            state = states[number]
            entry = response.model_version_status.add(version=number)
            entry.state = get_model_status_pb2.ModelVersionStatus.State.Value(state.state)
            entry.status.SetInParent()  # TF Serving always sets it (error_code OK when healthy)
            if state.error is not None:
                entry.status.error_code = state.error.grpc_code.value[0]
                entry.status.error_message = state.error.message
        return response

    def reload_config(self, model_server_config):
        """Serves the models of a new `ModelServerConfig` (HandleReloadConfigRequest).

        Raises:
            ServingError: INVALID_ARGUMENT for a config it cannot serve, FAILED_PRECONDITION for a
                label on a version that is not available.
        """
        with self._request():
            self.manager.apply_config(model_server_config)

    def stream_generate(self, model_name, text, params=None, version=None, version_label=None):
        """Streams a causal LM's continuation of `text` as decoded text pieces.

        Uses the version's `stream_prefill` / `stream_decode` signatures and the tokenizer in its
        `assets.extra/tokenizer`. Greedy by default; `params` may hold `max_new_tokens`,
        `do_sample`, `temperature`, `top_k`, `top_p`, `seed` (defaults from `serving_default`).
        Tokens are chosen by the same sampler as the exported graph, so a fixed `seed` gives the
        `serving_default` result too. The pieces concatenate to the `completion` output.

        Returns:
            An iterator of str (close it to stop generating early).

        Raises:
            ServingError: as `predict` for the model spec and the cap; INVALID_ARGUMENT for an
                unknown parameter or an empty prompt; UNIMPLEMENTED when the version has no
                streaming signatures or no tokenizer.
        """
        self._enter()
        try:
            servable = self.manager.servable(model_name, _version(version), version_label, acquire=True)
        except BaseException:
            self._leave()
            raise
        try:
            parameters = stream_parameters(servable, params or {}, self.options.max_new_tokens_cap)
            check_texts([text])
            servable.prompt_limit.check([text], parameters[sig.MAX_NEW_TOKENS])
            return TokenStream(servable, text, parameters, on_close=lambda: (servable.release(), self._leave()))
        except BaseException:
            servable.release()
            self._leave()
            raise

    # === Helpers ===

    def _cap_max_new_tokens(self, feed, inputs):
        if sig.MAX_NEW_TOKENS not in feed:
            return feed
        cap = self.options.max_new_tokens_cap
        requested = int(feed[sig.MAX_NEW_TOKENS].numpy())
        if requested <= cap:
            return feed
        if sig.MAX_NEW_TOKENS in inputs:
            raise invalid_argument(
                f"max_new_tokens ({requested}) exceeds this server's cap of {cap} (--max_new_tokens_cap)"
            )
        import tensorflow as tf

        return {**feed, sig.MAX_NEW_TOKENS: tf.constant(cap, feed[sig.MAX_NEW_TOKENS].dtype)}  # the default is too high

    def _deadline(self, deadline):
        return deadline if deadline is not None else time.monotonic() + self.options.request_timeout_seconds

    def _on_batch(self, servable, signature, rows, requests):
        logger.debug("Ran a batch of %d requests (%d rows) on %s version %d %s", requests, rows, servable.name,
                     servable.version, signature)
        if self.metrics is not None:
            self.metrics.record_batch(servable.name, rows, signature)

    def _read_config_file(self):
        """The config file's `ModelServerConfig`, or None when its text has not changed since the last read."""
        path = self.options.model_config_file
        try:
            with open(path, encoding="utf-8") as file:
                text = file.read()
        except OSError as error:
            raise ValueError(f"Invalid protobuf file: '{path}' ({error.strerror})") from error
        if text == self._config_text:
            return None
        self._config_text = text  # a config that fails is not retried until the file changes
        return config_lib.read_model_server_config(path, text)

    def _poll_config(self, interval):
        while not self._stop_event.wait(interval):
            try:
                server_config = self._read_config_file()
                if server_config is not None:
                    logger.info("Reloading %s", self.options.model_config_file)
                    self.manager.apply_config(server_config)
            except (ValueError, ServingError) as error:
                logger.error("Reloading %s failed: %s", self.options.model_config_file, error)


def _version(version):
    if version is None:
        return None
    try:
        return int(version)
    except (TypeError, ValueError) as error:
        raise invalid_value("version", "an integer", version) from error


def _check_request(servable, feed):
    """Refuses what a generation signature cannot run: parameters out of range, an empty prompt, or
    one too long for the model (by its byte count first, so it is never tokenized)."""
    values = generation_values(feed)
    check_generation(values)
    if sig.TEXT in feed and sig.MAX_NEW_TOKENS in values:
        texts = feed[sig.TEXT].numpy().reshape(-1)
        check_texts(texts)
        servable.prompt_limit.check(texts, values[sig.MAX_NEW_TOKENS])


def _check_deadline(deadline):
    if deadline is not None and time.monotonic() > deadline:
        raise ServingError("DEADLINE_EXCEEDED", "Deadline Exceeded")

