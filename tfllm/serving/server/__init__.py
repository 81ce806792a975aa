"""`tfllm serve`: a server speaking TensorFlow Serving's gRPC and REST APIs, plus streaming and batching.

The pieces: `ServerOptions` (TF Serving's flags), `ServingCore` (models, versions, batching,
requests), `ServerApp` (the core with its gRPC and REST front ends) and `serve` (the command's
main loop with graceful shutdown on SIGTERM / SIGINT).
"""

from tfllm.serving.server.options import ServerOptions


def __getattr__(name):
    # The core pulls in TensorFlow and the errors gRPC; import them on first use so `ServerOptions`
    # (what `tfllm serve --help` needs) stays light.
    if name == "ServingError":
        from tfllm.serving.server.errors import ServingError  # lazy: PEP 562: loads on first use

        return ServingError
    if name == "ServingCore":
        from tfllm.serving.server.core import ServingCore  # lazy: PEP 562: loads on first use

        return ServingCore
    if name in ("ServerApp", "serve"):
        from tfllm.serving.server import app  # lazy: PEP 562: loads on first use

        return getattr(app, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["ServerApp", "ServerOptions", "ServingCore", "ServingError", "serve"]
