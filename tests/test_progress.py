"""`tfllm.progress`: an updating bar on a terminal, a line every ~10 s elsewhere, named stages."""

import io

import pytest

from tfllm.progress import Progress, resolve_mode


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_auto_is_a_bar_on_a_terminal_and_lines_elsewhere():
    assert resolve_mode("auto", Terminal()) == "bar"
    assert resolve_mode("auto", io.StringIO()) == "line"
    with pytest.raises(ValueError, match=r"Invalid value for argument `progress`"):
        resolve_mode("loud", io.StringIO())


def test_lines_are_periodic_not_per_step():
    stream, clock = io.StringIO(), Clock()
    progress = Progress("eval", 100, mode="auto", interval=10.0, stream=stream, clock=clock)
    for step in range(1, 101):
        clock.now = step * 0.5  # 50 s in all: the first step, then one line every 10 s, then the end
        progress.update(step, loss=2.0)
    progress.finish(loss=1.5)
    lines = stream.getvalue().splitlines()
    assert [line.split()[1] for line in lines] == ["1/100", "21/100", "41/100", "61/100", "81/100", "100/100"]
    assert lines[0] == "eval  1/100  0s  loss 2" and lines[-1].endswith("loss 1.5")


def test_bar_rewrites_one_line_and_numbering_continues_from_initial():
    stream = Terminal()
    progress = Progress("epoch 1/3", 10, mode="auto", initial=4, stream=stream, clock=Clock())
    for step in range(5, 11):
        progress.update(step)
    progress.finish()
    text = stream.getvalue()
    assert text.count("\n") == 1 and text.endswith("\n")
    assert [part.split()[2] for part in text.split("\r")[1:]] == [f"{n}/10" for n in (5, 6, 7, 8, 9, 10, 10)]


def test_stages_say_when_they_start_and_how_long_they_took():
    stream, clock = io.StringIO(), Clock()
    progress = Progress("export m.tflite", 2, mode="line", stream=stream, clock=clock)
    with progress.stage("convert"):
        clock.now = 3.0
    with progress.stage("verify"):
        clock.now = 4.5
    assert stream.getvalue().splitlines() == [
        "export m.tflite: [1/2] convert ...", "export m.tflite: [1/2] convert: done in 3.0s",
        "export m.tflite: [2/2] verify ...", "export m.tflite: [2/2] verify: done in 1.5s"]


def test_none_says_nothing():
    stream = io.StringIO()
    progress = Progress("x", 3, mode="none", stream=stream)
    progress.update(1)
    with progress.stage("a"):
        pass
    progress.finish()
    assert stream.getvalue() == ""
