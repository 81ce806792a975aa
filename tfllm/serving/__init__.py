"""Serving: `Client` for any TF Serving endpoint (gRPC or REST); `tfllm serve` lives in `server/`.

`Client` imports grpc and the `tensorflow_serving` stubs only when a gRPC client is made, so REST
use needs neither package.
"""

from tfllm.serving.client import Client, ServingClientError

__all__ = ["Client", "ServingClientError"]
