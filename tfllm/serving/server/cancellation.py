"""`Cancellation`: stops a running signature when the client that asked for it has gone away.

TensorFlow runs a function under a `CancellationManager` taken from one process-wide variable
(`tensorflow.python.eager.cancellation.context()`); concurrent requests each need their own, so the
lookup is made per thread (installed once, on first use; other threads see TensorFlow's own value).
"""

import contextlib
import threading

_local = threading.local()
_install_lock = threading.Lock()
_installed = []


def _install():
    from tensorflow.python.eager import cancellation

    with _install_lock:
        if _installed:
            return cancellation
        process_wide = cancellation.context

        def per_thread():
            manager = getattr(_local, "manager", None)
            return manager if manager is not None else process_wide()

        cancellation.context = per_thread
        _installed.append(per_thread)
    return cancellation


class Cancellation:
    """One request's cancellation: `cancel()` (from any thread) makes the signature running in
    `scope()` stop with CANCELLED.

    Example:
    ```python
    cancellation = Cancellation()
    context.add_callback(cancellation.cancel)   # gRPC: the call ended (or the client went away)
    with cancellation.scope():
        outputs = function(**feed)
    ```
    """

    def __init__(self):
        self._manager = _install().CancellationManager()

    def cancel(self):
        self._manager.start_cancel()

    @property
    def cancelled(self):
        return self._manager.is_cancelled

    @contextlib.contextmanager
    def scope(self):
        """Functions called in this block on this thread are cancelled by `cancel()`."""
        _local.manager = self._manager
        try:
            yield self
        finally:
            _local.manager = None
