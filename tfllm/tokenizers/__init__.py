"""Tokenizers: Hugging Face compatible text <-> token ids.

`AutoTokenizer.from_pretrained(folder)` loads a local Hugging Face tokenizer
folder; `train_byte_level_bpe` trains a GPT-2 style tokenizer. TensorFlow is
imported only when `return_tensors="tf"` is used.
"""

from tfllm.tokenizers.auto import AutoTokenizer
from tfllm.tokenizers.bpe import train_byte_level_bpe
from tfllm.tokenizers.tokenizer import Tokenizer

__all__ = ["AutoTokenizer", "Tokenizer", "train_byte_level_bpe"]
