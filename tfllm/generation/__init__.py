"""Text generation: the shared decoding loop and token samplers."""

from tfllm.generation.generate import generate
from tfllm.generation.loop import decode
from tfllm.generation.sampling import filter_top_k, filter_top_p, next_token

__all__ = ["decode", "filter_top_k", "filter_top_p", "generate", "next_token"]
