"""`train(config)`: one `model.fit` under a `tf.distribute` strategy, from flags to a Hugging Face folder.

The library, not the user, creates the model, optimizer and metrics inside `strategy.scope()`.
Everything is checked (arguments, data naming `path:line`, sequence length against the model's
positions, batch size against the replicas) before the first step.

Fault tolerance: `ResumableBackup` saves the training state every `checkpoint_every` steps. A run
restarted with the same command restores it and restarts the data stream at the saved step, so it
ends with the weights an uninterrupted run reaches. That needs a data stream that is a function of
the epoch alone: each epoch gets its own stream, `TrainingData.epoch(epoch, skip)` (one `fit` per
epoch), shuffled and masked with a seed made of `(seed, epoch)`, not tf.data's per-iterator
reshuffle state, which a restarted process (or the extra iterator Keras opens for its first batch
under a distribution strategy) would not reproduce.

Example:
>>> result = train(TrainConfig(config="tiny", task="causal_lm", data=["notes.txt"], output="out",
...                            epochs=2, batch_size=8, seq_len=64, learning_rate=3e-3))
>>> tfllm.AutoModelForCausalLM.from_pretrained("out")
"""

import dataclasses
import hashlib
import json
import logging
import math
import os
import shutil
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from tfllm.errors import check_choice, check_float, check_int, invalid_argument
from tfllm.files import staged_folder, sync_folder
from tfllm.training import builders, lora, optim
from tfllm.training import callbacks as cb
from tfllm.training import data as data_lib
from tfllm.training.builders import tiny_config
from tfllm.training.evaluation import evaluate, evaluate_dataset
from tfllm.training.strategy import STRATEGY_NAMES, check_batch_size, get_strategy

logger = logging.getLogger(__name__)

__all__ = ["TrainConfig", "TrainingInterrupted", "evaluate", "evaluate_dataset", "tiny_config", "train"]

TASKS = data_lib.TASKS
BACKUP_DIR = "backup"
TENSORBOARD_DIR = "tensorboard"
ADAPTERS_DIR = "adapters"
RUN_FILE = "run.json"
TOKENIZER_DIR = "tokenizer"
# `TrainConfig.verbose` (Keras' values) -> `tfllm.progress` modes.
PROGRESS_MODES = {"auto": "auto", 1: "bar", 2: "line", 0: "none"}


@dataclasses.dataclass
class TrainConfig:
    """Every setting of a training run; the fields are `tfllm train`'s flags.

    Attributes:
        output: folder for the Hugging Face model, `log.csv`, `training.png`, `tensorboard/`
            (and `adapters/` with LoRA). A run in progress there (`backup/`) is resumed.
        data: training files (`.txt`, `.jsonl`) or "pydoc" (the built-in corpus).
        task: one of `TASKS`.
        model: a Hugging Face folder to fine-tune; or
        config: "tiny" (a small fresh model: GPT-2 for causal LM, with a byte-level BPE
            tokenizer trained on the data unless `tokenizer` is given; BERT or T5 for the other
            tasks, which need `tokenizer`), or a `config.json` path (fresh weights).
        tokenizer: a tokenizer folder (default: `model`'s).
        validation_data, validation_split: held-out files, or the fraction of `data` held out.
        text_field, text_pair_field, label_field, source_field, target_field: JSON Lines fields.
        num_labels: classification: label ids must lie in `[0, num_labels)` (default: from data).
        vocab_size: size of the tokenizer `config="tiny"` trains.
        epochs, batch_size (global, all replicas), seq_len, strategy (see `get_strategy`).
        learning_rate, weight_decay, warmup_steps (optimizer updates; default `warmup_ratio` of
            them), schedule, clipnorm (global norm; 0 for none), gradient_accumulation_steps,
            precision: see `tfllm.training.optim`.
        lora_rank (0: full fine-tuning), lora_alpha, lora_dropout, lora_targets: see
            `tfllm.training.lora`.
        mlm_probability: masked LM masking rate.
        checkpoint_every: back up the training state every that many steps (and at each epoch end).
        log_every: write a `steps.csv` row every that many steps (0: never).
        seed: seeds weights, shuffling and dropout.
        deterministic: enable TensorFlow's op determinism (same weights run after run).
        max_steps: stop after that many steps (overrides `epochs`).
        overwrite: replace a finished model in `output` instead of refusing.
        verbose: progress output: "auto" (a bar on a terminal, a line every ~10 s otherwise),
            1 (the bar), 2 (the lines) or 0 (none); see `tfllm.progress`.
        callbacks: extra Keras callbacks (Python API only).
    """

    output: str
    data: list
    task: str = "causal_lm"
    model: str | None = None
    config: str | None = None
    tokenizer: str | None = None
    validation_data: list | None = None
    validation_split: float = 0.1
    text_field: str = "text"
    text_pair_field: str | None = None
    label_field: str = "label"
    source_field: str = "source"
    target_field: str = "target"
    num_labels: int | None = None
    vocab_size: int = 512
    epochs: int = 1
    batch_size: int = 8
    seq_len: int = 128
    strategy: str = "auto"
    learning_rate: float = 5e-5
    weight_decay: float = 0.01
    warmup_steps: int | None = None
    warmup_ratio: float = 0.0
    schedule: str = "cosine"
    clipnorm: float = 1.0
    gradient_accumulation_steps: int = 1
    precision: str = "float32"
    lora_rank: int = 0
    lora_alpha: float = 16.0
    lora_dropout: float = 0.0
    lora_targets: list | None = None
    mlm_probability: float = 0.15
    checkpoint_every: int = 100
    log_every: int = 10
    seed: int = 0
    deterministic: bool = False
    max_steps: int | None = None
    overwrite: bool = False
    verbose: object = "auto"
    callbacks: list = dataclasses.field(default_factory=list, repr=False)

    def validate(self):
        """Raises `ValueError` naming the first bad setting."""
        check_choice("task", self.task, TASKS)
        if (self.model is None) == (self.config is None):
            raise invalid_argument("model", "exactly one of --model DIR and --config tiny|CONFIG.json",
                                   f"{self.model!r} with config={self.config!r}")
        if self.config is not None and self.config != "tiny" and not os.path.isfile(self.config):
            raise invalid_argument("config", '"tiny" or an existing config.json file', self.config)
        for name in ("model", "tokenizer"):
            if getattr(self, name) is not None and not os.path.isdir(getattr(self, name)):
                raise invalid_argument(name, "an existing folder", getattr(self, name))
        if self.config is not None and self.task != "causal_lm" and self.tokenizer is None:
            raise invalid_argument("tokenizer", f"a tokenizer folder (--tokenizer DIR): a fresh {self.task} model "
                                   "needs one (only causal_lm trains its own)", None)
        for name, minimum in (("epochs", 1), ("batch_size", 1), ("seq_len", 1), ("gradient_accumulation_steps", 1),
                              ("lora_rank", 0), ("checkpoint_every", 0), ("log_every", 0), ("vocab_size", 64)):
            check_int(name, getattr(self, name), minimum=minimum)
        for name in ("max_steps", "num_labels", "warmup_steps"):
            if getattr(self, name) is not None:
                check_int(name, getattr(self, name), minimum=0 if name == "warmup_steps" else 1)
        check_float("learning_rate", self.learning_rate, low=0.0, low_inclusive=False)
        check_float("warmup_ratio", self.warmup_ratio, 0.0, 1.0)
        check_choice("strategy", self.strategy, STRATEGY_NAMES)
        check_choice("schedule", self.schedule, optim.SCHEDULES)
        check_choice("precision", self.precision, optim.PRECISIONS)
        check_choice("verbose", self.verbose, ("auto", 0, 1, 2))
        if not self.data:
            raise invalid_argument("data", "at least one training file (or 'pydoc')", self.data)
        return self

    def fingerprint(self):
        """A hash of the settings that decide the trained weights (a resumed run must match it)."""
        ignored = {"callbacks", "verbose", "overwrite", "log_every", "checkpoint_every"}
        settings = {k: v for k, v in dataclasses.asdict(self).items() if k not in ignored}
        return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]


def train(config):
    """Trains as `config` says and writes the outputs; resumes a run interrupted in `config.output`.

    Returns:
        A dict: `output`, `log`, `plot`, `tensorboard`, `adapters` (paths or None); `epochs`,
        `steps`, `steps_per_epoch`, `train_examples`, `validation_examples`; the last epoch's logs
        (`loss`, `accuracy`, `val_loss`, `val_accuracy`, `learning_rate`); `validation` (exact
        token-weighted `loss`, `perplexity` for LMs, `accuracy`); `tokens_per_second`;
        `resumed_from` (the global step restored, or None); `trainable_parameters`; `chief` (False
        on the workers of a multi-worker run that leave writing to the chief); `model` and
        `tokenizer`.
    """
    config.validate()
    # A multi-worker strategy must exist before any other TensorFlow op runs in the process.
    strategy = get_strategy(config.strategy)
    check_batch_size(config.batch_size, strategy)
    chief = _is_chief(strategy)
    output = Path(config.output)
    resume = _resume_state(config, output)
    _seed(config)
    policy = keras.config.dtype_policy()
    try:
        optim.set_precision(config.precision)
        saved = output / BACKUP_DIR / TOKENIZER_DIR
        tokenizer = builders.load_tokenizer(config, saved if resume is not None and saved.is_dir() else None)
        hf_config = builders.model_config(config, tokenizer)
        prepared = builders.datasets(config, tokenizer, hf_config, strategy.num_replicas_in_sync)
        with strategy.scope():
            model = builders.task_model(config, hf_config, prepared)
            trainable = lora.apply_lora(model, **_lora_kwargs(config)) if config.lora_rank else None
            optimizer = optim.create_optimizer(**_optimizer_kwargs(config, prepared))
            optim.compile_for_training(model, optimizer)
        trainable = trainable or sum(int(np.prod(v.shape)) for v in model.trainable_weights)
        metrics = cb.restore_backup(model, resume) if resume else {}
        if chief:
            _start_run(config, output, tokenizer, resume)
        logs, log = _fit(config, model, prepared, resume, metrics, chief)
        result = _finish(config, model, tokenizer, prepared, logs, chief)
    finally:
        keras.config.set_dtype_policy(policy)
    result.update(tokens_per_second=log.tokens_per_second, resumed_from=resume.global_step if resume else None,
                  trainable_parameters=trainable, chief=chief)
    return result


def _is_chief(strategy):
    resolver = getattr(strategy, "cluster_resolver", None)
    task_type = getattr(resolver, "task_type", None)
    return task_type in (None, "chief") or (task_type == "worker" and resolver.task_id == 0 and
                                            "chief" not in resolver.cluster_spec().as_dict())


def _seed(config):
    keras.utils.set_random_seed(config.seed)
    if config.deterministic:
        tf.config.experimental.enable_op_determinism()


# === Resuming ===


def _resume_state(config, output):
    """The backup to resume from, or None for a fresh run (after checking `output` may be written)."""
    backup = output / BACKUP_DIR
    state = cb.latest_backup(backup) if backup.is_dir() else None
    if state is not None:
        run = json.loads((backup / RUN_FILE).read_text())
        if run["fingerprint"] != config.fingerprint():
            raise invalid_argument(
                "output", "a folder without an interrupted run of other settings (resume with the same flags, "
                f"or remove {backup} to start over)", str(output))
        logger.warning("Resuming the interrupted run in %s from epoch %d, step %d", output, state.epoch + 1, state.step)
        return state
    if (output / "config.json").exists() and not config.overwrite:
        raise FileExistsError(
            f"Invalid value for argument `output`. Expected a folder without a trained model (or --overwrite). "
            f"Received: output={str(output)!r}, which holds config.json")
    return None


def _start_run(config, output, tokenizer, resume):
    """Clears a fresh run's old logs and records its settings and tokenizer; trims a resumed run's logs."""
    backup = output / BACKUP_DIR
    if resume is not None:
        cb.truncate_logs(output, epoch=resume.epoch, global_step=resume.global_step)
    else:
        for name in (cb.LOG_CSV, cb.STEPS_CSV, cb.PLOT_FILE, TENSORBOARD_DIR, BACKUP_DIR, ADAPTERS_DIR):
            _remove(output / name)
        backup.mkdir(parents=True)
        tokenizer.save_pretrained(backup / TOKENIZER_DIR)
        (backup / RUN_FILE).write_text(json.dumps({"fingerprint": config.fingerprint()}))
    for stale in backup.glob(".*.tmp"):  # the staging folders of writes a kill interrupted
        _remove(stale)


def _remove(path):
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _lora_kwargs(config):
    return {"rank": config.lora_rank, "alpha": config.lora_alpha, "dropout": config.lora_dropout,
            "target_modules": config.lora_targets}


def _steps(config, prepared):
    """(epochs, total training steps) after `max_steps`."""
    per_epoch = prepared.steps_per_epoch
    if config.max_steps is None:
        return config.epochs, config.epochs * per_epoch
    return math.ceil(config.max_steps / per_epoch), config.max_steps


def _optimizer_kwargs(config, prepared):
    _, steps = _steps(config, prepared)
    updates = max(1, steps // config.gradient_accumulation_steps)
    warmup = config.warmup_steps if config.warmup_steps is not None else int(round(config.warmup_ratio * updates))
    return {"learning_rate": config.learning_rate, "total_steps": updates, "warmup_steps": min(warmup, updates),
            "schedule": config.schedule, "weight_decay": config.weight_decay, "clipnorm": config.clipnorm or None,
            "gradient_accumulation_steps": config.gradient_accumulation_steps}


# === The data stream and fit ===


def _fit(config, model, prepared, resume, metrics, chief):
    """Runs one `fit` per epoch, each on that epoch's stream (a resumed epoch starts at its saved step).

    Raises:
        TrainingInterrupted: on Ctrl-C, with the step reached and the last checkpoint's.
    """
    epochs, total = _steps(config, prepared)
    per_epoch = prepared.steps_per_epoch
    epoch, step, done = (resume.epoch, resume.step, resume.global_step) if resume else (0, 0, 0)
    log, backup, callbacks = _callbacks(config, prepared, (epoch, step, done), total, metrics, chief)
    logs = {}
    try:
        while epoch < epochs and done < total:
            stream = prepared.epoch(epoch, skip=step)
            steps = min(per_epoch - step, total - done)  # the last epoch may end at max_steps
            history = model.fit(stream, epochs=epochs, initial_epoch=epoch, steps_per_epoch=steps,
                                validation_data=prepared.validation, callbacks=callbacks, verbose=0, shuffle=False)
            logs = {key: values[-1] for key, values in history.history.items()} or logs
            epoch, step, done = backup.epoch, backup.step, backup.global_step
    except KeyboardInterrupt as interrupt:
        last = cb.latest_backup(backup.backup_dir) if Path(backup.backup_dir).is_dir() else None
        raise TrainingInterrupted(backup.global_step, last.global_step if last else None) from interrupt
    if not logs:  # nothing left to train: the interrupted run had finished its last step
        rows = cb.read_csv(Path(config.output) / cb.LOG_CSV)
        logs = {k: v for k, v in rows[-1].items() if k not in ("epoch", "step")} if rows else {}
    return logs, log


def _callbacks(config, prepared, position, total, metrics, chief):
    (epoch, step, done), output, per_epoch = position, Path(config.output), prepared.steps_per_epoch
    log = cb.TrainingLog(output, steps_per_epoch=per_epoch, tokens_per_step=config.batch_size *
                         prepared.tokens_per_example, initial_epoch=epoch, initial_step=step,
                         log_every=config.log_every, tensorboard_dir=output / TENSORBOARD_DIR, enabled=chief)
    backup = cb.ResumableBackup(output / BACKUP_DIR, steps_per_epoch=per_epoch, save_freq=config.checkpoint_every or
                                "epoch", initial_epoch=epoch, initial_step=step, initial_global_step=done,
                                metrics=metrics, enabled=chief)
    epochs, _ = _steps(config, prepared)
    progress = cb.EpochProgress(epochs=epochs, steps_per_epoch=per_epoch, initial_epoch=epoch, initial_step=step,
                                mode=PROGRESS_MODES[config.verbose])
    callbacks = [log, progress, *config.callbacks, cb.StopAtStep(total, done), backup, _StopAfterEpoch()]
    return log, backup, callbacks


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped `train`: `step` batches were done, the last checkpoint holds `checkpoint_step`
    (None: no checkpoint yet). Rerunning the same command resumes from that checkpoint."""

    def __init__(self, step, checkpoint_step):
        self.step, self.checkpoint_step = step, checkpoint_step
        last = f"last checkpoint at step {checkpoint_step}" if checkpoint_step is not None else "no checkpoint yet"
        super().__init__(f"interrupted at step {step}, {last}")


class _StopAfterEpoch(keras.callbacks.Callback):
    """Ends each `fit` after its epoch: the next epoch needs a stream of its own (see `TrainingData.epoch`).

    `fit` still gets the run's `epochs`, so the progress reads "epoch 3/5".
    """

    def on_epoch_end(self, epoch, logs=None):
        self.model.stop_training = True


# === Outputs ===


def _finish(config, model, tokenizer, prepared, logs, chief):
    output = Path(config.output)
    adapters = None
    if config.lora_rank:
        adapters = output / ADAPTERS_DIR
        if chief:
            lora.save_adapters(model, adapters)
        lora.merge_lora(model)
    validation = evaluate_dataset(model, prepared.validation, config.task) if prepared.validation else None
    if chief:
        _publish(model, tokenizer, output)
        if (output / cb.LOG_CSV).is_file():
            cb.plot_training(output)
        shutil.rmtree(output / BACKUP_DIR, ignore_errors=True)
    epochs, steps = _steps(config, prepared)
    result = {"output": str(output), "log": str(output / cb.LOG_CSV), "plot": str(output / cb.PLOT_FILE),
              "tensorboard": str(output / TENSORBOARD_DIR), "adapters": str(adapters) if adapters else None,
              "epochs": epochs, "steps": steps, "steps_per_epoch": prepared.steps_per_epoch,
              "train_examples": prepared.train_examples, "validation_examples": prepared.validation_examples,
              "validation": validation, "model": model, "tokenizer": tokenizer}
    result.update({key: float(value) for key, value in logs.items()})
    return result


def _publish(model, tokenizer, output):
    """Writes the HF folder's files into `output`, each replaced in one rename (logs stay).

    They are staged as `tfllm.files.atomic_folder` stages a folder (a killed run's staging is removed
    by the next), flushed to disk, then moved in one by one.
    """
    with staged_folder(output, "model", "model") as (_, staging):
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        sync_folder(staging)
        for path in sorted(staging.iterdir()):
            os.replace(path, output / path.name)
    logger.info("Saved the model and tokenizer to %s", output)
