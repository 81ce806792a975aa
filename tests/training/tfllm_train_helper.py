"""Runs `tfllm train` as the command does, with test-only changes to the process around it.

    python tfllm_train_helper.py [--pause SECONDS] [--cpus N] train --config tiny ...

- `--pause`: sleeps after every training step (an extra Keras callback, `TrainConfig.callbacks`),
  so a test can kill the run mid-epoch. It changes no setting: the plain `tfllm train ...` command
  resumes what it leaves behind.
- `--cpus`: splits the CPU into N logical devices first, so `--strategy mirrored` has N replicas.
"""

import argparse
import sys
import time

import keras
import tensorflow as tf

from tfllm import cli
from tfllm.training import trainer


class Pause(keras.callbacks.Callback):
    def __init__(self, seconds):
        super().__init__()
        self.seconds = seconds

    def on_train_batch_end(self, batch, logs=None):
        time.sleep(self.seconds)


def main(argv):
    parser = argparse.ArgumentParser()
    parser.add_argument("--pause", type=float, default=0.0)
    parser.add_argument("--cpus", type=int, default=1)
    options, rest = parser.parse_known_args(argv)
    if options.cpus > 1:
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * options.cpus)
    if options.pause:
        train = trainer.train

        def paused_train(config):
            config.callbacks = [Pause(options.pause)]
            return train(config)

        trainer.train = paused_train
    return cli.main(rest)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
