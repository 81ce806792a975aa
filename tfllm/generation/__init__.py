"""Text generation: the shared decoding loop, token samplers and beam search."""

from tfllm.generation.beam import beam_search
from tfllm.generation.generate import generate
from tfllm.generation.loop import decode
from tfllm.generation.sampling import filter_top_k, filter_top_p, next_token

__all__ = ["beam_search", "decode", "filter_top_k", "filter_top_p", "generate", "next_token"]
