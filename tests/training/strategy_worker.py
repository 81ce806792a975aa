"""Trains a tiny GPT-2 for a few steps under one strategy and saves its weights before and after.

Run as a subprocess by `test_strategy.py` and `test_multi_worker.py`, one strategy (or worker) per process:

    python strategy_worker.py default|mirrored|multi_worker OUTPUT.npz [GLOBAL_BATCH_SIZE]

"mirrored" runs on two logical CPU devices. With "multi_worker", `TF_CONFIG` (set by the test)
names the cluster and this process's task.
The dataset yields batches of the *global* batch size; `tf.distribute` rebatches each one into
per-replica slices and, with `AutoShardPolicy.DATA`, worker `i` keeps slice `i`. So at every step
the workers together see exactly the batch that a single process sees.
"""

import sys

import tensorflow as tf

from tfllm.training.strategy import check_batch_size, get_strategy

SEQUENCE_LENGTH = 12
VOCABULARY_SIZE = 64
STEPS = 4


def make_dataset(global_batch_size):
    import numpy as np

    rng = np.random.default_rng(0)
    count = global_batch_size * STEPS
    ids = rng.integers(0, VOCABULARY_SIZE, size=(count, SEQUENCE_LENGTH + 1)).astype("int32")
    # int32, not bool: a distributed fit cannot AddN bool tensors.
    mask = np.ones((count, SEQUENCE_LENGTH), dtype="int32")
    inputs = {"input_ids": ids[:, :-1], "attention_mask": mask}
    dataset = tf.data.Dataset.from_tensor_slices((inputs, ids[:, 1:])).batch(global_batch_size)
    options = tf.data.Options()
    # AUTO would try FILE, find no files and fall back to DATA with a warning: say DATA outright.
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


def main(name, path, global_batch_size):
    if name == "mirrored":
        # Two logical CPU devices must be configured before anything initialises TF.
        tf.config.set_logical_device_configuration(
            tf.config.list_physical_devices("CPU")[0],
            [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()],
        )
    # A multi-worker strategy must exist before any other TF op runs in this process.
    strategy = get_strategy(name)
    check_batch_size(global_batch_size, strategy)

    import keras
    import numpy as np

    from tfllm.models.gpt2 import GPT2Backbone, GPT2CausalLM

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
        # SGD, not Adam: Adam's update hides a wrongly scaled gradient (a sum instead of a mean).
        model.compile(
            optimizer=keras.optimizers.SGD(learning_rate=0.5),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
    initial_loss = model.evaluate(make_dataset(global_batch_size), verbose=0)
    initial = model.get_weights()
    model.fit(make_dataset(global_batch_size), epochs=1, shuffle=False, verbose=0)
    final_loss = model.evaluate(make_dataset(global_batch_size), verbose=0)
    np.savez(
        path,
        replicas=strategy.num_replicas_in_sync,
        losses=np.array([initial_loss, final_loss]),
        **{f"w_{i}": w for i, w in enumerate(model.get_weights())},
        **{f"initial_w_{i}": w for i, w in enumerate(initial)},
    )


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 8)
