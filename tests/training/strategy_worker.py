"""Trains a tiny GPT-2 for a few steps under one strategy and saves its final weights.

Run as a subprocess by `test_strategy.py` (one strategy per process):

    python strategy_worker.py mirrored|default OUTPUT.npz
"""

import sys

import tensorflow as tf

# Two logical CPU devices must be configured before anything initialises TF.
tf.config.set_logical_device_configuration(
    tf.config.list_physical_devices("CPU")[0],
    [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()],
)

import keras  # noqa: E402
import numpy as np  # noqa: E402

from tfllm.models.gpt2 import GPT2Backbone, GPT2CausalLM  # noqa: E402
from tfllm.training.strategy import check_batch_size, get_strategy  # noqa: E402

GLOBAL_BATCH_SIZE = 8
SEQUENCE_LENGTH = 12
VOCABULARY_SIZE = 64
STEPS = 3


def make_dataset():
    rng = np.random.default_rng(0)
    count = GLOBAL_BATCH_SIZE * STEPS
    ids = rng.integers(0, VOCABULARY_SIZE, size=(count, SEQUENCE_LENGTH + 1)).astype("int32")
    # int32, not bool: MirroredStrategy's fit cannot AddN bool tensors.
    mask = np.ones((count, SEQUENCE_LENGTH), dtype="int32")
    inputs = {"input_ids": ids[:, :-1], "attention_mask": mask}
    return tf.data.Dataset.from_tensor_slices((inputs, ids[:, 1:])).batch(GLOBAL_BATCH_SIZE)


def main(name, path):
    strategy = get_strategy(name)
    check_batch_size(GLOBAL_BATCH_SIZE, strategy)
    keras.utils.set_random_seed(1234)
    with strategy.scope():
        backbone = GPT2Backbone(
            vocabulary_size=VOCABULARY_SIZE,
            num_layers=2,
            num_heads=2,
            hidden_dim=16,
            intermediate_dim=32,
            max_sequence_length=32,
            dropout=0.0,
        )
        model = GPT2CausalLM(backbone)
        model.compile(
            optimizer=keras.optimizers.SGD(learning_rate=0.5),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
    initial_loss = model.evaluate(make_dataset(), verbose=0)
    model.fit(make_dataset(), epochs=1, shuffle=False, verbose=0)
    final_loss = model.evaluate(make_dataset(), verbose=0)
    np.savez(
        path,
        replicas=strategy.num_replicas_in_sync,
        losses=np.array([initial_loss, final_loss]),
        **{f"w_{i}": w for i, w in enumerate(model.get_weights())},
    )


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
