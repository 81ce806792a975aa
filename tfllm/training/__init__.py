"""Training helpers: tf.data pipelines for language-model training."""

from tfllm.training.data import causal_lm_dataset

__all__ = ["causal_lm_dataset"]
