"""Family-agnostic Keras layers: embeddings, positions, attention with a KV cache, feed-forward, norms, blocks."""

from tfllm.layers.activations import ACTIVATIONS, get_activation
from tfllm.layers.attention import MultiHeadAttention
from tfllm.layers.blocks import TransformerBlock
from tfllm.layers.embeddings import PositionEmbedding, TokenEmbedding
from tfllm.layers.feedforward import FeedForward
from tfllm.layers.masks import attention_mask, positions_from_mask, update_cache
from tfllm.layers.norms import LayerNorm, RMSNorm
from tfllm.layers.positions import RotaryEmbedding, SinusoidalPositionEncoding
from tfllm.layers.relative_bias import RelativePositionBias, relative_position_bucket

__all__ = [
    "ACTIVATIONS",
    "FeedForward",
    "LayerNorm",
    "MultiHeadAttention",
    "PositionEmbedding",
    "RMSNorm",
    "RelativePositionBias",
    "RotaryEmbedding",
    "SinusoidalPositionEncoding",
    "TokenEmbedding",
    "TransformerBlock",
    "attention_mask",
    "get_activation",
    "positions_from_mask",
    "relative_position_bucket",
    "update_cache",
]
