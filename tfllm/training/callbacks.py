"""Callbacks of `tfllm train`: resumable backups written atomically, a CSV log, a loss and
learning-rate plot, throughput, and a step limit.

Why Keras' `BackupAndRestore` alone is not enough (Keras 3.15): with `save_freq=<int>` it saves the
weights and the optimizer state mid-epoch, but a restarted `fit` replays the interrupted epoch from
its first batch (the saved `batch` is never read), the dropout seed states and the metric totals
are not saved, and `latest.weights.h5` is rewritten in place, so a kill during a write leaves a
file that cannot be read. `ResumableBackup` keeps its interface (it is a `BackupAndRestore`) and
fixes all four: every checkpoint is a new folder built under a temporary name and renamed, then
`latest.json` is replaced in one rename; it records the epoch and the step inside it, and the
trainer restarts the data stream at that step (see `tfllm.training.trainer`).
"""

import csv
import dataclasses
import json
import logging
import math
import shutil
import time
from pathlib import Path

import keras
import numpy as np

from tfllm.errors import check_int
from tfllm.files import atomic_file, atomic_folder
from tfllm.progress import Progress

logger = logging.getLogger(__name__)

LATEST = "latest.json"
CHECKPOINT_PREFIX = "ckpt-"
VARIABLES_FILE = "variables.npz"
STATE_FILE = "state.json"
LOG_CSV = "log.csv"
STEPS_CSV = "steps.csv"
PLOT_FILE = "training.png"


@dataclasses.dataclass(frozen=True)
class BackupState:
    """Where a backup stands: `step` batches of epoch `epoch` (0-based) are done.

    `global_step` counts every batch trained since the start of the run.
    """

    folder: Path
    epoch: int
    step: int
    global_step: int


def latest_backup(backup_dir):
    """The newest complete backup under `backup_dir`, or None when there is none.

    `latest.json` names it; it is replaced in one rename only after the checkpoint folder it names
    was renamed into place, so it never points at a partial folder.
    """
    pointer = Path(backup_dir) / LATEST
    if not pointer.is_file():
        return None
    name = json.loads(pointer.read_text())["checkpoint"]
    folder = Path(backup_dir) / name
    state = json.loads((folder / STATE_FILE).read_text())
    return BackupState(folder, state["epoch"], state["step"], state["global_step"])


def save_backup(model, backup_dir, *, epoch, step, global_step):
    """Writes model, optimizer (and, mid-epoch, metric) variables as a new checkpoint folder.

    Every variable is saved, trainable or not, so dropout seed states resume too. The folder
    appears whole (built under a hidden name, then renamed), `latest.json` then moves to it in one
    rename, and only then are older checkpoints removed: a kill at any moment leaves the last good
    checkpoint readable.
    """
    backup_dir = Path(backup_dir)
    arrays, manifest = {}, {}
    for group, variables in _variable_groups(model, metrics=step > 0).items():
        manifest[group] = []
        for index, variable in enumerate(variables):
            value = np.asarray(keras.ops.convert_to_numpy(variable))
            if value.dtype.kind == "V" or value.dtype.name == "bfloat16":
                value = value.astype(np.float32)  # exact; cast back on restore
            arrays[f"{group}.{index:06d}"] = value
            manifest[group].append([variable.path, list(value.shape), str(variable.dtype)])
    state = {"epoch": epoch, "step": step, "global_step": global_step, "variables": manifest}
    name = f"{CHECKPOINT_PREFIX}{global_step:09d}"
    with atomic_folder(backup_dir / name) as folder:
        with open(folder / VARIABLES_FILE, "wb") as handle:
            np.savez(handle, **arrays)
        (folder / STATE_FILE).write_text(json.dumps(state))
    with atomic_file(backup_dir / LATEST) as temporary:
        temporary.write_text(json.dumps({"checkpoint": name, "epoch": epoch, "step": step,
                                         "global_step": global_step}))
    for old in backup_dir.glob(CHECKPOINT_PREFIX + "*"):
        if old.name != name:
            shutil.rmtree(old, ignore_errors=True)
    logger.info("Backed up epoch %d step %d (global step %d) to %s", epoch, step, global_step, backup_dir / name)


def restore_backup(model, state):
    """Assigns a backup's model and optimizer variables; returns its metric totals (or {}).

    The model must be compiled. `ResumableBackup` gives the metric totals back at the first batch of
    the resumed epoch (Keras resets metrics at the start of every epoch).
    """
    if not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)
    saved = json.loads((state.folder / STATE_FILE).read_text())["variables"]
    with np.load(state.folder / VARIABLES_FILE, allow_pickle=False) as arrays:
        values = {key: arrays[key] for key in arrays.files}
    for group, variables in _variable_groups(model, metrics=False).items():
        _check_manifest(group, variables, saved.get(group, []), state.folder)
        for index, variable in enumerate(variables):
            variable.assign(keras.ops.cast(values[f"{group}.{index:06d}"], variable.dtype))
    metrics = {}
    for index, (path, _, _) in enumerate(saved.get("metrics", [])):
        metrics[path] = values[f"metrics.{index:06d}"]
    logger.info("Restored %s: epoch %d, step %d", state.folder, state.epoch, state.step)
    return metrics


def _variable_groups(model, metrics):
    groups = {"model": list(model.variables), "optimizer": list(model.optimizer.variables)}
    if metrics:
        groups["metrics"] = list(model.metrics_variables)
    return groups


def _check_manifest(group, variables, saved, folder):
    live = [[v.path, list(v.shape), str(v.dtype)] for v in variables]
    if len(live) != len(saved):
        raise ValueError(
            f"The backup in {folder} does not match this model: it has {len(saved)} {group} variables, the model "
            f"{len(live)}. Train with the settings of the interrupted run, or use a new --output."
        )
    for (path, shape, dtype), (saved_path, saved_shape, saved_dtype) in zip(live, saved):
        if shape != saved_shape or dtype != saved_dtype:
            raise ValueError(
                f"The backup in {folder} does not match this model: {group} variable {saved_path} is "
                f"{saved_dtype}{saved_shape} there and {path} is {dtype}{shape} here."
            )


class ResumableBackup(keras.callbacks.BackupAndRestore):
    """Saves the training state every `save_freq` steps and at every epoch end, atomically.

    The trainer restores the state before `fit` (`latest_backup` + `restore_backup`), since it must
    also restart the data stream at the saved step; this callback keeps counting from there.

    Args:
        backup_dir: folder of the checkpoints (used by this run only).
        steps_per_epoch: batches in a full epoch.
        save_freq: an int (save every that many steps, and at epoch ends) or "epoch".
        initial_epoch, initial_step: the restored position (0-based epoch, batches done in it).
        initial_global_step: the restored count of all batches (default: from the position).
        metrics: metric totals of the restored epoch, given back before its first resumed batch
            (or, for metrics Keras builds while tracing that batch, added right after it).
        enabled: False on workers that must not write (all but the chief).
    """

    def __init__(self, backup_dir, *, steps_per_epoch, save_freq="epoch", initial_epoch=0, initial_step=0,
                 initial_global_step=None, metrics=None, enabled=True):
        super().__init__(str(backup_dir), save_freq=save_freq, delete_checkpoint=False)
        self.steps_per_epoch = check_int("steps_per_epoch", steps_per_epoch, minimum=1)
        self.epoch, self.step = initial_epoch, initial_step
        # Counted apart from (epoch, step): a run that stops at max_steps ends its epoch early.
        self.global_step = initial_epoch * steps_per_epoch + initial_step if initial_global_step is None \
            else initial_global_step
        self._pending_metrics = metrics or None
        self.enabled = enabled

    def on_train_begin(self, logs=None):
        pass  # restored by the trainer before `fit`

    def on_epoch_begin(self, epoch, logs=None):
        if epoch != self.epoch:
            self.epoch, self.step = epoch, 0

    def on_train_batch_begin(self, batch, logs=None):
        if self._pending_metrics:
            # Keras reset the metrics when the epoch began; the ones built by now get their totals back.
            for variable in self.model.metrics_variables:
                if variable.path in self._pending_metrics:
                    variable.assign(keras.ops.cast(self._pending_metrics.pop(variable.path), variable.dtype))

    def on_train_batch_end(self, batch, logs=None):
        self.step += 1
        self.global_step += 1
        if self._pending_metrics:
            _add_metric_totals(self.model, self._pending_metrics)
            self._pending_metrics = None
        every = self.save_freq if isinstance(self.save_freq, int) else 0
        # The last batch of an epoch (or of the run) is saved by `on_epoch_end`, after validation.
        last = self.step >= self.steps_per_epoch or self.model.stop_training
        if every and self.global_step % every == 0 and not last:
            self._save_model()

    def on_epoch_end(self, epoch, logs=None):
        self.epoch, self.step = epoch + 1, 0
        self._save_model()

    def on_train_end(self, logs=None):
        pass  # the trainer removes the backups once the outputs are written

    def _save_model(self):
        if self.enabled:
            save_backup(self.model, self.backup_dir, epoch=self.epoch, step=self.step, global_step=self.global_step)


def _add_metric_totals(model, totals):
    # Metrics built during the first step's tracing: they sum (total, count) pairs, so the epoch's
    # totals are the saved ones plus this batch's, the same float additions as without a restart.
    for variable in model.metrics_variables:
        if variable.path in totals:
            current = keras.ops.convert_to_numpy(variable)
            variable.assign(keras.ops.cast(current + totals[variable.path], variable.dtype))


class StopAtStep(keras.callbacks.Callback):
    """Stops `fit` once `global_step` (counted from `initial_global_step`) reaches `max_steps`."""

    def __init__(self, max_steps, initial_global_step=0):
        super().__init__()
        self.max_steps = check_int("max_steps", max_steps, minimum=1)
        self.global_step = initial_global_step

    def on_train_batch_end(self, batch, logs=None):
        self.global_step += 1
        if self.global_step >= self.max_steps:
            self.model.stop_training = True


class EpochProgress(keras.callbacks.Callback):
    """`fit`'s progress through `tfllm.progress.Progress`: a bar on a terminal, periodic lines otherwise.

    Keras' own bar counts the batches of each `fit` call, so a resumed epoch would restart at
    1/<steps>; this one continues from the restored step, and titles each epoch "epoch 3/5".

    Args:
        epochs: epochs of the whole run.
        steps_per_epoch: batches in a full epoch.
        initial_epoch, initial_step: the restored position (0-based epoch, batches done in it).
        mode, interval, stream: see `Progress`.
    """

    def __init__(self, *, epochs, steps_per_epoch, initial_epoch=0, initial_step=0, mode="auto", interval=None,
                 stream=None):
        super().__init__()
        self.epochs, self.steps_per_epoch = epochs, steps_per_epoch
        self.initial_epoch, self.initial_step = initial_epoch, initial_step
        self.options = {"mode": mode, "stream": stream, **({"interval": interval} if interval is not None else {})}
        self.step, self.progress = initial_step, None

    def on_epoch_begin(self, epoch, logs=None):
        self.step = self.initial_step if epoch == self.initial_epoch else 0
        self.progress = Progress(f"epoch {epoch + 1}/{self.epochs}", self.steps_per_epoch, initial=self.step,
                                 **self.options)

    def on_train_batch_end(self, batch, logs=None):
        self.step += 1
        self.progress.update(self.step, **_shown(logs))

    def on_epoch_end(self, epoch, logs=None):
        self.progress.finish(**_shown(logs))


def _shown(logs):
    return {name: value for name, value in (logs or {}).items() if name != "learning_rate"}


class TrainingLog(keras.callbacks.Callback):
    """Writes `log.csv` (a row per epoch), `steps.csv` (every `log_every` steps), `training.png` and
    TensorBoard scalars.

    It adds `learning_rate` and `tokens_per_second` to the epoch logs, so the callbacks after it
    (the history) record them too. Throughput leaves out each epoch's first batch, which includes
    tracing and compiling.

    TensorBoard files are written with TensorFlow's own summary ops (`tensorboard_dir/train` and
    `/validation`, tags `epoch_<metric>` by epoch and `step_loss`, `step_learning_rate` by step),
    so they need no `tensorboard` package, which Keras' `TensorBoard` callback does.

    Args:
        folder: where the files go.
        steps_per_epoch: batches in a full epoch.
        tokens_per_step: tokens in one global batch.
        initial_epoch, initial_step: the restored position.
        log_every: write a `steps.csv` row and step scalars every that many steps (0: never).
        tensorboard_dir: folder of the TensorBoard event files (None: none).
        enabled: False on workers that must not write.
    """

    def __init__(self, folder, *, steps_per_epoch, tokens_per_step, initial_epoch=0, initial_step=0, log_every=0,
                 tensorboard_dir=None, enabled=True):
        super().__init__()
        self.folder = Path(folder)
        self.tensorboard = _Scalars(tensorboard_dir) if tensorboard_dir and enabled else None
        self.steps_per_epoch, self.tokens_per_step = steps_per_epoch, tokens_per_step
        self.epoch, self.step = initial_epoch, initial_step
        self.log_every, self.enabled = log_every, enabled
        self.timed_steps, self.timed_seconds = 0, 0.0
        self._first = self._last = None
        self._epoch_steps = 0

    @property
    def tokens_per_second(self):
        """Mean training throughput so far (nan before two batches of one epoch ran)."""
        return self.timed_steps * self.tokens_per_step / self.timed_seconds if self.timed_seconds else math.nan

    def on_epoch_begin(self, epoch, logs=None):
        if epoch != self.epoch:
            self.epoch, self.step = epoch, 0
        self._first = self._last = None
        self._epoch_steps = 0

    def on_train_batch_end(self, batch, logs=None):
        now = time.perf_counter()
        self.step += 1
        if self._first is None:
            self._first = now
        else:
            self._epoch_steps += 1
        self._last = now
        global_step = self.epoch * self.steps_per_epoch + self.step
        if self.enabled and self.log_every and global_step % self.log_every == 0:
            row = {"step": global_step, "epoch": self.epoch + 1, "loss": (logs or {}).get("loss"),
                   "learning_rate": learning_rate(self.model)}
            _append_row(self.folder / STEPS_CSV, row)
            if self.tensorboard:
                self.tensorboard.write("train", {"step_loss": row["loss"], "step_learning_rate": row["learning_rate"]},
                                       global_step)

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        seconds = (self._last - self._first) if self._first is not None else 0.0
        if self._epoch_steps and seconds > 0:
            self.timed_steps += self._epoch_steps
            self.timed_seconds += seconds
            logs["tokens_per_second"] = self._epoch_steps * self.tokens_per_step / seconds
        logs["learning_rate"] = learning_rate(self.model)
        if self.enabled:
            row = {"epoch": epoch + 1, "step": epoch * self.steps_per_epoch + self.step, **logs}
            _append_row(self.folder / LOG_CSV, row)
            plot_training(self.folder)
        if self.tensorboard:
            self.tensorboard.write("train", {f"epoch_{k}": v for k, v in logs.items() if not k.startswith("val_")},
                                   epoch + 1)
            self.tensorboard.write("validation", {f"epoch_{k[4:]}": v for k, v in logs.items() if k.startswith("val_")},
                                   epoch + 1)

    def on_train_end(self, logs=None):
        if self.tensorboard:
            self.tensorboard.flush()


class _Scalars:
    """TensorBoard scalar summaries in `folder/<run>/events.out.tfevents.*`, through TensorFlow alone."""

    def __init__(self, folder):
        self.folder = Path(folder)
        self._writers = {}

    def write(self, run, values, step):
        import tensorflow as tf
        from tensorflow.core.framework import summary_pb2

        values = {tag: value for tag, value in values.items() if value is not None}
        if not values:
            return
        if run not in self._writers:
            self._writers[run] = tf.summary.create_file_writer(str(self.folder / run))
        # The metadata TensorBoard's scalar plugin looks for (what `tf.summary.scalar` writes).
        metadata = summary_pb2.SummaryMetadata(
            plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars"))
        with self._writers[run].as_default():
            for tag, value in values.items():
                tf.summary.write(tag, tf.constant(float(np.asarray(value)), tf.float32), step=int(step),
                                 metadata=metadata)

    def flush(self):
        for writer in self._writers.values():
            writer.flush()


def learning_rate(model):
    """The optimizer's current learning rate as a float (a schedule is evaluated at its step)."""
    return float(np.asarray(keras.ops.convert_to_numpy(model.optimizer.learning_rate)))


def _append_row(path, row):
    row = {key: _scalar(value) for key, value in row.items()}
    exists = path.is_file() and path.stat().st_size > 0
    fields = _header(path) if exists else list(row)
    with open(path, "a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields, extrasaction="ignore")
        if not exists:
            writer.writeheader()
        writer.writerow(row)


def _scalar(value):
    if value is None:
        return ""
    if isinstance(value, (int, str)):
        return value
    return repr(float(np.asarray(value)))


def _header(path):
    with open(path, newline="") as handle:
        return next(csv.reader(handle))


def read_csv(path):
    """The rows of a log written by `TrainingLog`, as dicts of floats (empty cells: nan)."""
    path = Path(path)
    if not path.is_file():
        return []
    with open(path, newline="") as handle:
        return [{key: float(value) if value != "" else math.nan for key, value in row.items()}
                for row in csv.DictReader(handle)]


def truncate_logs(folder, *, epoch, global_step):
    """Drops the log rows written after a backup: epochs after `epoch` and steps after `global_step`.

    A killed run may have logged rows past its last backup; the resumed run writes them again.
    """
    for name, column, last in ((LOG_CSV, "epoch", epoch), (STEPS_CSV, "step", global_step)):
        path = Path(folder) / name
        if not path.is_file():
            continue
        with open(path, newline="") as handle:
            reader = csv.DictReader(handle)
            fields, rows = reader.fieldnames, [row for row in reader if float(row[column]) <= last]
        with atomic_file(path) as temporary, open(temporary, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=fields)
            writer.writeheader()
            writer.writerows(rows)


def plot_training(folder, path=None):
    """Draws the loss (train, validation) and learning rate against the step into a PNG.

    Reads `log.csv` and `steps.csv` from `folder`; writes `folder/training.png` (or `path`)
    atomically. Needs matplotlib (`pip install 'tfllm[viz]'`); without it, logs a warning and
    returns None. Draws on the Agg canvas without touching matplotlib's global backend.
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        logger.warning("matplotlib is not installed: no %s (pip install 'tfllm[viz]')", PLOT_FILE)
        return None
    folder = Path(folder)
    epochs, steps = read_csv(folder / LOG_CSV), read_csv(folder / STEPS_CSV)
    figure = Figure(figsize=(10, 4), layout="constrained")
    FigureCanvasAgg(figure)
    loss_axes, rate_axes = figure.subplots(1, 2)
    if steps:
        loss_axes.plot([r["step"] for r in steps], [r["loss"] for r in steps], lw=1, alpha=0.6,
                       label="train (running mean of the epoch)")
    _plot_column(loss_axes, epochs, "loss", "o-", "train (epoch)")
    _plot_column(loss_axes, epochs, "val_loss", "s-", "validation")
    rate_rows = steps or epochs
    rate_axes.plot([r["step"] for r in rate_rows], [r["learning_rate"] for r in rate_rows], color="tab:green")
    for axes, title in ((loss_axes, "loss"), (rate_axes, "learning rate")):
        axes.set_xlabel("step")
        axes.set_title(title)
        axes.grid(alpha=0.3)
    loss_axes.legend()
    path = Path(path) if path is not None else folder / PLOT_FILE
    with atomic_file(path) as temporary:
        figure.savefig(temporary, format="png", dpi=100)
    return path


def _plot_column(axes, rows, column, style, label):
    points = [(r["step"], r[column]) for r in rows if column in r and not math.isnan(r[column])]
    if points:
        axes.plot(*zip(*points), style, label=label)
