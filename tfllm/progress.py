"""Progress of long work (training epochs, evaluation batches, export steps), with or without a terminal.

On a terminal (`mode="bar"`) a line that rewrites itself: `epoch 1/14  37/222 [====>    ] 12s  loss 5.1`.
Elsewhere (`mode="line"`: CI logs, `| tee`, a file) a plain line at the first step, then at most one
every `interval` seconds, and one at the end, so a log shows the work moving without a line per step. `mode="auto"`
picks one from the stream; `"none"` says nothing.

This is output for a person watching, like Keras' progress bar, and goes to `stream` (default
stdout); diagnostics go through `logging`.

Example:
>>> progress = Progress("eval", total=50, mode="line")
>>> for batch in range(50):
...     progress.update(batch + 1, loss=0.5)
>>> progress.finish(loss=0.5)
"""

import contextlib
import sys
import time

from tfllm.errors import check_choice

MODES = ("auto", "bar", "line", "none")
DEFAULT_INTERVAL = 10.0  # seconds between two plain lines
BAR_WIDTH = 24


def resolve_mode(mode, stream=None):
    """`mode` with "auto" replaced by "bar" on a terminal and "line" elsewhere."""
    check_choice("progress", mode, MODES)
    if mode != "auto":
        return mode
    stream = stream or sys.stdout
    isatty = getattr(stream, "isatty", None)
    return "bar" if isatty is not None and isatty() else "line"


class Progress:
    """Reports the position of one task.

    Args:
        title: what is being done, e.g. "epoch 2/5" or "export gpt2.tflite".
        total: the number of steps, when known.
        mode: "auto", "bar", "line" or "none" (see the module docstring).
        initial: steps already done before this process started (a resumed run): numbering
            continues from there.
        interval: seconds between two plain lines (mode "line").
        stream: where to write (default: `sys.stdout` at each write).
        clock: a function returning seconds (tests pass a fake one).
    """

    def __init__(self, title, total=None, *, mode="auto", initial=0, interval=DEFAULT_INTERVAL, stream=None,
                 clock=time.monotonic):
        self.title, self.total, self.position = title, total, initial
        self.mode = resolve_mode(mode, stream)
        self.interval, self._stream, self._clock = interval, stream, clock
        self._start = clock()
        self._last_line = None  # when the last plain line was written
        self._stage = 0

    @property
    def stream(self):
        return self._stream or sys.stdout

    def update(self, position, **values):
        """Moves to `position` (steps done, counted from the run's start) with the current `values`."""
        self.position = position
        if self.mode == "bar":
            self._write("\r" + self._text(values, bar=True), end="")
        elif self.mode == "line":
            now = self._clock()
            if self._last_line is None or now - self._last_line >= self.interval:
                self._last_line = now
                self._write(self._text(values))

    def finish(self, **values):
        """Ends the task: the bar's final state, or one last plain line."""
        if self.mode == "bar":
            self._write("\r" + self._text(values, bar=True))
        elif self.mode == "line":
            self._write(self._text(values))

    @contextlib.contextmanager
    def stage(self, name, steps=None):
        """Reports one named stage of the task (e.g. "convert"): when it starts and how long it took.

        Args:
            name: the stage.
            steps: the number of stages in the task, shown as "[2/4]" (default: `total`).
        """
        self._stage += 1
        steps = steps or self.total
        label = f"{self.title}: [{self._stage}/{steps}] {name}" if steps else f"{self.title}: {name}"
        start = self._clock()
        if self.mode == "bar":
            self._write(f"{label} ...", end="")
        elif self.mode == "line":
            self._write(f"{label} ...")
        yield
        seconds = self._clock() - start
        if self.mode == "bar":
            self._write(f" {seconds:.1f}s")
        elif self.mode == "line":
            self._write(f"{label}: done in {seconds:.1f}s")

    def _text(self, values, bar=False):
        seconds = self._clock() - self._start
        if self.total:
            done = min(self.position, self.total)
            count = f"{self.position}/{self.total}"
            if bar:
                filled = BAR_WIDTH * done // self.total
                count += " [" + "=" * filled + (">" if filled < BAR_WIDTH else "") + " " * (BAR_WIDTH - filled - 1) + "]"
        else:
            count = str(self.position)
        parts = [self.title, count, f"{seconds:.0f}s"] + [f"{name} {_format(value)}" for name, value in values.items()]
        return "  ".join(part for part in parts if part)

    def _write(self, text, end="\n"):
        self.stream.write(text + end)
        self.stream.flush()


def _format(value):
    try:
        return f"{float(value):.4g}"
    except (TypeError, ValueError):
        return str(value)
