"""Serving: `Client` for any TF Serving endpoint (gRPC or REST); `tfllm serve` lives in `server/`.

`Client` imports grpc and the `tensorflow_serving` stubs only when a gRPC client is made, so REST
use needs neither package.
"""



def __getattr__(name):
    # The client's modules pull in TensorFlow (through the export's signature names); import them on
    # first use so `tfllm.serving.server.options` (the `tfllm serve` flags) stays light.
    if name in ("Client", "ServingClientError"):
        from tfllm.serving import client  # lazy: PEP 562: the client loads on first use

        return getattr(client, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["Client", "ServingClientError"]
