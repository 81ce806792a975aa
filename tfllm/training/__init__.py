"""Training helpers: tf.data pipelines and tf.distribute strategies for language-model training."""

from tfllm.training.data import causal_lm_dataset
from tfllm.training.strategy import STRATEGY_NAMES, check_batch_size, get_strategy

__all__ = ["STRATEGY_NAMES", "causal_lm_dataset", "check_batch_size", "get_strategy"]
