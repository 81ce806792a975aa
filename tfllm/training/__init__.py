"""Training: tf.data pipelines, tf.distribute strategies, the optimizer, LoRA and `train`/`evaluate`."""

from tfllm.training.data import (BUILTIN_CORPORA, TASKS, DataError, TrainingData, build_datasets, causal_lm_dataset,
                                 read_records)
from tfllm.training.lora import apply_lora, load_adapters, lora_parameter_count, merge_lora, save_adapters
from tfllm.training.optim import (PRECISIONS, SCHEDULES, compile_for_training, create_optimizer,
                                  learning_rate_schedule, set_precision)
from tfllm.training.strategy import STRATEGY_NAMES, check_batch_size, get_strategy
from tfllm.training.trainer import TrainConfig, evaluate, train

__all__ = [
    "BUILTIN_CORPORA", "PRECISIONS", "SCHEDULES", "STRATEGY_NAMES", "TASKS", "DataError", "TrainConfig", "TrainingData",
    "apply_lora", "build_datasets", "causal_lm_dataset", "check_batch_size", "compile_for_training",
    "create_optimizer", "evaluate", "get_strategy", "learning_rate_schedule", "load_adapters",
    "lora_parameter_count", "merge_lora", "read_records", "save_adapters", "set_precision", "train",
]
