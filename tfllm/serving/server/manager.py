"""Which model versions are loaded: version policies, labels, polling, warmup and availability-preserving swaps.

The manager plays TF Serving's file-system source plus AspiredVersionsManager with the
availability-preserving policy: the versions a model's policy wants are loaded (and warmed up)
before they are published, and a version the policy drops is unpublished only once a wanted
version is available, then unloaded when the requests still using it have finished. Readers take
a snapshot of the published dicts, which are replaced whole, never changed in place, so a request
never sees a half-made swap.
"""

import dataclasses
import logging
import os
import threading
import time

from tfllm.serving.server import config as config_lib
from tfllm.serving.server.errors import ServingError, invalid_argument
from tfllm.serving.server.servable import Servable

logger = logging.getLogger(__name__)

UNLOAD_GRACE_SECONDS = 60.0  # how long an unpublished version waits for its requests before it is dropped


@dataclasses.dataclass(frozen=True)
class VersionState:
    """One version's state as GetModelStatus reports it: "LOADING", "AVAILABLE", "UNLOADING" or "END"."""

    state: str
    error: ServingError = None


class _Model:
    def __init__(self, model_config):
        self.config = model_config
        self.servables = {}  # version -> Servable; replaced whole on every change
        self.labels = {}
        self.failures = {}  # version -> (its folder's state when it failed, failed loads in that state)


class ModelManager:
    """The models and versions a server has loaded.

    Args:
        options: the `ServerOptions` (warmup, label and retry settings).
    """

    def __init__(self, options):
        self.options = options
        self._models = {}  # name -> _Model; replaced whole
        self._states = {}  # (name, version) -> VersionState; replaced whole
        self._states_lock = threading.Lock()
        self._change = threading.RLock()  # one config change or poll at a time
        self._publish = threading.Lock()  # lookups + acquire vs. unpublishing
        self._unloaders = []
        self._stop = threading.Event()
        self._poller = None

    # === Requests ===

    def model_names(self):
        return sorted(self._models)

    def servables(self):
        """`{model name: {version: Servable}}` of the versions being served now."""
        return {name: dict(model.servables) for name, model in self._models.items()}

    def servable(self, name, version=None, label=None, acquire=False):
        """The servable a ModelSpec asks for, in TF Serving's words when there is none.

        Raises:
            ServingError: INVALID_ARGUMENT for an empty name or an unknown label, NOT_FOUND for an
                unknown model or a version that is not loaded.
        """
        if not name:
            raise invalid_argument("ModelSpec has no name specified.")
        with self._publish:
            model = self._models.get(name)
            if label:
                if model is None or label not in model.labels:
                    raise invalid_argument(f"Unrecognized servable version label: {label}")
                version = model.labels[label]
            request = f"Latest({name})" if version is None else f"Specific({name}, {int(version)})"
            servables = model.servables if model is not None else {}
            chosen = servables.get(int(version)) if version is not None else (servables[max(servables)] if servables else None)
            if chosen is None:
                raise ServingError("NOT_FOUND", f"Servable not found for request: {request}")
            if acquire:
                chosen.acquire()
            return chosen

    def version_states(self, name):
        """`{version: VersionState}` of every version of a model the manager has seen."""
        return {version: state for (model, version), state in self._states.items() if model == name}

    def labels(self, name):
        model = self._models.get(name)
        return dict(model.labels) if model is not None else {}

    # === Configuration ===

    def apply_config(self, server_config, initial=False):
        """Serves the models of a `ModelServerConfig`: new models are loaded, dropped ones unloaded.

        Labels must name versions that are AVAILABLE (checked before anything changes, as TF
        Serving does) unless `allow_version_labels_for_unavailable_models`; for the first config
        they are checked after its versions are loaded.

        Raises:
            ServingError: INVALID_ARGUMENT for an invalid config, FAILED_PRECONDITION for a label
                on a version that is not available.
        """
        try:
            config_lib.validate_model_server_config(server_config)
        except ValueError as error:
            raise invalid_argument(str(error)) from error
        with self._change:
            if not initial:
                self._check_labels(server_config)
            models = {}
            for model_config in server_config.model_config_list.config:
                model = self._models.get(model_config.name) or _Model(model_config)
                if model.config.base_path != model_config.base_path:
                    model = _Model(model_config)  # another folder: start afresh
                model.config = model_config
                models[model_config.name] = model
            removed = [model for name, model in self._models.items() if models.get(name) is not model]
            with self._publish:
                self._models = models
            for model in removed:
                self._unpublish(model, set(model.servables))
            for model in models.values():
                self._sync(model)
            if initial:
                self._check_labels(server_config)
            for model_config in server_config.model_config_list.config:
                models[model_config.name].labels = dict(model_config.version_labels)

    def _check_labels(self, server_config):
        allow = self.options.allow_version_labels_for_unavailable_models
        for model_config in server_config.model_config_list.config:
            model = self._models.get(model_config.name)
            available = set(model.servables) if model is not None else set()
            old = model.labels if model is not None else {}
            for label, version in model_config.version_labels.items():
                if allow and old.get(label, version) == version:
                    continue
                if version not in available:
                    raise ServingError(
                        "FAILED_PRECONDITION",
                        f"Request to assign label to version {version} of model {model_config.name}, which is not "
                        "currently available for inference",
                    )

    # === Polling ===

    def poll(self):
        """Looks for new and removed versions of every model once."""
        with self._change:
            for model in list(self._models.values()):
                if self._models.get(model.config.name) is model:
                    self._sync(model)

    def start_polling(self, interval_seconds):
        """Polls every `interval_seconds` on a background thread (no thread when it is 0 or less)."""
        if interval_seconds <= 0 or self._poller is not None:
            return
        self._poller = threading.Thread(target=self._poll_loop, args=(interval_seconds,), name="version-poller", daemon=True)
        self._poller.start()

    def _poll_loop(self, interval_seconds):
        while not self._stop.wait(interval_seconds):
            try:
                self.poll()
            except Exception:  # noqa: BLE001  (a failed poll is logged; the next one tries again)
                logger.exception("Polling for model versions failed")

    def _sync(self, model):
        name = model.config.name
        on_disk = config_lib.version_folders(model.config.base_path)
        if not on_disk and not model.servables:
            logger.warning("No versions of servable %s found under base path %s", name, model.config.base_path)
        wanted = config_lib.aspired_versions(model.config.model_version_policy, on_disk)
        for version in sorted(wanted - set(model.servables), reverse=True):
            self._try_load(model, version, on_disk[version])
        # Availability preserving: drop unwanted versions only once a wanted one serves, and while
        # none does (the newest is still being copied, or broken), serve the newest older one that loads.
        if wanted & set(model.servables):
            self._unpublish(model, set(model.servables) - wanted)
        elif not model.servables:
            for version in sorted(set(on_disk) - wanted, reverse=True):
                if self._try_load(model, version, on_disk[version]):
                    logger.warning("Serving version %d of %s until version %s loads", version, name,
                                   ", ".join(str(v) for v in sorted(wanted)))
                    break

    def _try_load(self, model, version, path):
        """Loads and publishes a version unless it failed before in the same state on disk; returns
        whether it serves. A failed version is tried again once its folder changes (a copy going on)."""
        if self._stop.is_set():
            return False
        state = _folder_state(path)
        failed_state, count = model.failures.get(version, (None, 0))
        if failed_state == state and count > self.options.max_num_load_retries:
            return False
        servable = self._load(model.config.name, version, path, quiet=failed_state == state)
        if servable is None:
            model.failures[version] = (state, count + 1 if failed_state == state else 1)
            return False
        model.failures.pop(version, None)
        with self._publish:
            model.servables = {**model.servables, version: servable}
        return True

    def _load(self, name, version, path, quiet=False):
        self._set_state(name, version, "LOADING")
        logger.log(logging.DEBUG if quiet else logging.INFO, "Loading servable: {name: %s version: %d} from %s", name,
                   version, path)
        try:
            servable = Servable(name, version, path)
            if self.options.enable_model_warmup:
                servable.warmup(self.options.num_request_iterations_for_warmup)
        except Exception as error:  # noqa: BLE001  (a broken version must not stop the others)
            status = error if isinstance(error, ServingError) else ServingError("UNKNOWN", f"{type(error).__name__}: {error}")
            # Once per version and state of its folder, not once per poll.
            logger.log(logging.DEBUG if quiet else logging.ERROR, "Loading servable: {name: %s version: %d} failed: %s",
                       name, version, status.message)
            self._set_state(name, version, "END", status)
            return None
        self._set_state(name, version, "AVAILABLE")
        logger.info("Successfully loaded servable version {name: %s version: %d}", name, version)
        return servable

    # === Unloading ===

    def _unpublish(self, model, versions):
        if not versions:
            return
        with self._publish:
            gone = [model.servables[v] for v in versions if v in model.servables]
            model.servables = {v: s for v, s in model.servables.items() if v not in versions}
        for servable in gone:
            self._set_state(servable.name, servable.version, "UNLOADING")
            thread = threading.Thread(target=self._unload, args=(servable,), name=f"unload-{servable.name}-{servable.version}",
                                      daemon=True)
            thread.start()
            self._unloaders.append(thread)
        self._unloaders = [thread for thread in self._unloaders if thread.is_alive()]

    def _unload(self, servable, grace=UNLOAD_GRACE_SECONDS):
        if servable.wait_idle(grace):
            servable.unload()
        else:
            logger.warning("Version %d of %s still has requests after %.0f s; dropping it anyway",
                           servable.version, servable.name, grace)
        self._set_state(servable.name, servable.version, "END")
        logger.info("Unloaded servable version {name: %s version: %d}", servable.name, servable.version)

    def stop(self, grace_seconds=10.0):
        """Stops polling and unloads every version (waiting up to `grace_seconds` for their requests)."""
        self._stop.set()
        if self._poller is not None:
            self._poller.join(timeout=grace_seconds + 30)  # a load in progress finishes first
        with self._change:
            for model in self._models.values():
                self._unpublish(model, set(model.servables))
        end = time.monotonic() + grace_seconds
        for thread in list(self._unloaders):
            thread.join(max(0.0, end - time.monotonic()))

    def _set_state(self, name, version, state, error=None):
        with self._states_lock:  # the poller and unloading threads both write
            self._states = {**self._states, (name, int(version)): VersionState(state, error)}


def _folder_state(path):
    """What changes while a version folder is being written: each file's path, size and mtime."""
    state = []
    for root, _, files in os.walk(path):
        for file in files:
            try:
                info = os.stat(os.path.join(root, file))
            except OSError:
                continue  # removed meanwhile
            state.append((os.path.relpath(os.path.join(root, file), path), info.st_size, info.st_mtime_ns))
    return tuple(sorted(state))
