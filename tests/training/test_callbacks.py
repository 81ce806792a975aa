"""`EpochProgress`: `fit`'s progress numbered from the run's start, so a resumed run continues its count."""

import io

import keras
import numpy as np

from tfllm.training.callbacks import EpochProgress


class Terminal(io.StringIO):
    def isatty(self):
        return True


def _fit(callback, examples, initial_epoch=0):
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile("sgd", "mse")
    model.fit(np.ones((examples, 3)), np.ones((examples, 1)), batch_size=2, epochs=2, initial_epoch=initial_epoch,
              verbose=0, callbacks=[callback])


def _positions(text):
    return [part.split()[2] for part in text.replace("\n", "\r").split("\r") if part.startswith("epoch")]


def test_a_resumed_epoch_continues_its_numbering():
    stream = Terminal()
    # Resumed in epoch 2 (0-based 1) after 4 of its 6 steps: the trainer's `fit` runs the 2 left.
    _fit(EpochProgress(epochs=2, steps_per_epoch=6, initial_epoch=1, initial_step=4, stream=stream), 4, 1)
    assert _positions(stream.getvalue()) == ["5/6", "6/6", "6/6"]
    assert stream.getvalue().startswith("\repoch 2/2  5/6")


def test_a_fresh_run_counts_every_epoch_from_one_and_lines_carry_the_metrics():
    stream = io.StringIO()  # not a terminal: the first step and the end of each epoch
    _fit(EpochProgress(epochs=2, steps_per_epoch=6, stream=stream), 12)
    lines = stream.getvalue().splitlines()
    assert [line.split("  ")[:2] for line in lines] == [["epoch 1/2", "1/6"], ["epoch 1/2", "6/6"],
                                                       ["epoch 2/2", "1/6"], ["epoch 2/2", "6/6"]]
    assert all("loss " in line for line in lines)
