"""The error raised for a checkpoint that cannot be loaded exactly.

It is defined in `tfllm.model_files`, below both the checkpoint and the tokenizer readers, which raise it.
"""

from tfllm.model_files import CheckpointError

__all__ = ["CheckpointError"]
