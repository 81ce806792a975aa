"""`tfllm train` and `tfllm eval` end to end: outputs, metrics, and bad input stopped before training."""

import contextlib
import io
import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from testing import write_corpus

from tfllm.cli import main

HELPER = Path(__file__).with_name("tfllm_train_helper.py")
ROOT = Path(__file__).resolve().parents[2]


def run_main(argv):
    """Runs `tfllm ARGV` in this process; returns (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


TRAIN = ["--config", "tiny", "--epochs", "2", "--batch-size", "4", "--seq-len", "16", "--vocab-size", "280",
         "--learning-rate", "3e-3", "--log-every", "1", "--checkpoint-every", "5", "--progress", "line"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    folder = tmp_path_factory.mktemp("train_cli")
    corpus = write_corpus(folder / "corpus.txt")
    output = folder / "out"
    code, out, err = run_main(["train", "--data", corpus, "--output", str(output), *TRAIN])
    assert code == 0, err
    return {"corpus": corpus, "output": output, "stdout": out, "folder": folder}


def test_train_writes_a_folder_that_loads_and_its_logs(trained):
    import tfllm
    from tfllm.training import callbacks as cb

    output = trained["output"]
    tokenizer = tfllm.AutoTokenizer.from_pretrained(output)
    model = tfllm.AutoModelForCausalLM.from_pretrained(output)
    batch = tokenizer(["the cat sees the ball"], return_tensors="tf")
    assert tuple(model(batch).shape) == (1, batch["input_ids"].shape[1], len(tokenizer))
    assert json.loads((output / "config.json").read_text())["architectures"] == ["GPT2LMHeadModel"]
    assert not (output / "backup").exists()  # removed once the model is written

    epochs = cb.read_csv(output / "log.csv")
    per_epoch = int(epochs[0]["step"])
    assert [row["epoch"] for row in epochs] == [1, 2] and epochs[1]["step"] == 2 * per_epoch
    for column in ("loss", "accuracy", "val_loss", "val_accuracy", "learning_rate", "tokens_per_second"):
        assert all(math.isfinite(row[column]) for row in epochs), column
    assert epochs[1]["loss"] < epochs[0]["loss"] and epochs[1]["val_loss"] < epochs[0]["val_loss"]
    assert epochs[1]["val_loss"] < 0.7 * math.log(len(tokenizer))  # well below a uniform guess
    steps = cb.read_csv(output / "steps.csv")
    assert [row["step"] for row in steps] == list(range(1, 2 * per_epoch + 1))
    rates = [row["learning_rate"] for row in steps]
    assert max(rates) == pytest.approx(3e-3, rel=0.05) and rates[-1] < 1e-4  # cosine decay to 0
    assert f"trained {2 * per_epoch} steps (2 epoch(s) of {per_epoch})" in trained["stdout"]


def test_train_writes_a_png_plot(trained):
    from matplotlib import image

    path = trained["output"] / "training.png"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    pixels = image.imread(path)
    assert pixels.shape[0] >= 300 and pixels.shape[1] >= 800 and pixels.std() > 0.05  # a drawing, not blank


def test_train_writes_tensorboard_scalars_that_match_the_csv(trained):
    import tensorflow as tf

    from tfllm.training import callbacks as cb

    def scalars(run):
        values = {}
        for path in sorted((trained["output"] / "tensorboard" / run).glob("events.out.tfevents.*")):
            for event in tf.compat.v1.train.summary_iterator(str(path)):
                for value in event.summary.value:
                    assert value.metadata.plugin_data.plugin_name == "scalars"
                    values.setdefault(value.tag, []).append((event.step, float(tf.make_ndarray(value.tensor))))
        return values

    epochs = cb.read_csv(trained["output"] / "log.csv")
    train, validation = scalars("train"), scalars("validation")
    assert train["epoch_loss"] == [(1, pytest.approx(epochs[0]["loss"])), (2, pytest.approx(epochs[1]["loss"]))]
    assert [value for _, value in validation["epoch_loss"]] == pytest.approx([row["val_loss"] for row in epochs])
    assert len(train["step_loss"]) == int(epochs[1]["step"])


def test_train_reports_its_steps_without_a_terminal(trained):
    lines = [line for line in trained["stdout"].splitlines() if line.startswith("epoch ")]
    # `--progress line`: each epoch's first step, then a line per ~10 s, then its end with the validation.
    assert [line.split("  ")[0] for line in (lines[0], lines[-1])] == ["epoch 1/2", "epoch 2/2"]
    assert lines[0].split("  ")[1].startswith("1/") and "val_loss" in lines[-1]
    assert len(lines) < 12  # not a line per step


def test_eval_prints_loss_perplexity_accuracy(trained):
    arguments = ["eval", "--model", str(trained["output"]), "--data", trained["corpus"], "--seq-len", "16",
                 "--batch-size", "4"]
    code, out, err = run_main(arguments + ["--progress", "line"])
    assert code == 0, err
    batches = [line for line in out.splitlines() if line.startswith("eval  ")]
    assert batches[0].startswith("eval  1/") and "loss" in batches[-1]
    out = "\n".join(line for line in out.splitlines() if not line.startswith("eval  "))
    printed = dict(line.split(": ") for line in out.splitlines() if ": " in line)
    loss, perplexity = float(printed["loss"]), float(printed["perplexity"])
    assert perplexity == pytest.approx(math.exp(loss), rel=2e-6)
    assert 0.0 < float(printed["accuracy"]) <= 1.0
    code, out, _ = run_main(arguments + ["--json"])
    metrics = json.loads(out)
    assert metrics["perplexity"] == math.exp(metrics["loss"]) and metrics["loss"] == pytest.approx(loss, abs=1e-6)
    # Every packed block of the file is scored: 16 tokens each.
    assert metrics["tokens"] == 16 * metrics["examples"] and metrics["examples"] > 20


def test_a_trained_output_is_not_overwritten_without_the_flag(trained):
    before = (trained["output"] / "model.safetensors").read_bytes()
    code, _, err = run_main(["train", "--data", trained["corpus"], "--output", str(trained["output"]), *TRAIN])
    assert code == 2
    assert "Invalid value for argument `output`. Expected a folder without a trained model (or --overwrite)" in err
    assert (trained["output"] / "model.safetensors").read_bytes() == before


def test_ctrl_c_prints_one_line_and_exits_130(tmp_path):
    """SIGINT once a checkpoint exists: no traceback, no TensorFlow log, the step and the checkpoint's step."""
    corpus = write_corpus(tmp_path / "corpus.txt")
    output = tmp_path / "out"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)  # as a user's shell has it
    command = [sys.executable, "-m", "tfllm.cli", "train", "--data", corpus, "--output", str(output), *TRAIN,
               "--epochs", "200", "--checkpoint-every", "2"]
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 240
        while not (output / "backup" / "latest.json").exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == 130, err[-3000:]
    assert re.fullmatch(r"tfllm train: interrupted at step (\d+), last checkpoint at step (\d+); "
                        r"rerun the same command to resume\n", err), err[-3000:]
    step, checkpoint = map(int, re.match(r".* step (\d+), .* step (\d+);", err).groups())
    assert checkpoint == cb_latest_step(output) and 2 <= checkpoint <= step
    assert "epoch 1/200  1/" in out


def cb_latest_step(output):
    from tfllm.training import callbacks as cb

    return cb.latest_backup(output / "backup").global_step


# === Bad input: exit code 2, a message naming the file and line or the argument, nothing trained ===


def assert_refused(tmp_path, arguments, *messages):
    output = tmp_path / "refused"
    code, out, err = run_main(["train", "--output", str(output), *arguments])
    assert code == 2, (out, err)
    assert err.startswith("tfllm train: error: ")
    for message in messages:
        assert message in err
    assert not output.exists()  # stopped before anything was written
    return err


def test_empty_data_file_is_refused(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    assert_refused(tmp_path, ["--data", str(empty), *TRAIN], f"{empty}:2: no records")


def test_missing_data_file_is_refused(tmp_path):
    assert_refused(tmp_path, ["--data", str(tmp_path / "nope.txt"), *TRAIN], "(no such file)", "nope.txt")


def test_too_little_data_for_one_batch_names_the_last_record(tmp_path):
    small = tmp_path / "small.txt"
    small.write_text("the cat sees the ball.\n\na dog.\n")
    assert_refused(tmp_path, ["--data", str(small), *TRAIN], f"{small}:3: the data ends here with",
                   "fewer than one batch of batch_size=4")


@pytest.fixture(scope="module")
def tokenizer_folder(trained):
    return str(trained["output"])


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(path)


CLASSIFY = ["--task", "classification", "--config", "tiny", "--batch-size", "2", "--seq-len", "16"]


def test_missing_json_field_is_refused(tmp_path, tokenizer_folder):
    data = write_jsonl(tmp_path / "labels.jsonl", [{"text": "a cat", "label": 0}, {"text": "a dog", "label": 1},
                                                   {"text": "a bird"}])
    assert_refused(tmp_path, ["--data", data, "--tokenizer", tokenizer_folder, *CLASSIFY],
                   f"{data}:3: missing field 'label' (argument `label_field`)")


def test_label_outside_num_labels_is_refused(tmp_path, tokenizer_folder):
    data = write_jsonl(tmp_path / "labels.jsonl", [{"text": "a cat", "label": 0}, {"text": "a dog", "label": 5}])
    assert_refused(tmp_path, ["--data", data, "--tokenizer", tokenizer_folder, "--num-labels", "2", *CLASSIFY],
                   f"{data}:2: label 5 (id 5) is outside [0, num_labels=2)")


def test_sequence_length_beyond_the_model_positions_is_refused(tmp_path, trained):
    positions = json.loads((trained["output"] / "config.json").read_text())["n_positions"]
    arguments = ["--model", str(trained["output"]), "--data", trained["corpus"], "--seq-len", str(positions + 1)]
    assert_refused(tmp_path, arguments, "Invalid value for argument `sequence_length`. "
                   f"Expected an integer <= {positions}, the model's maximum number of positions",
                   f"Received: sequence_length={positions + 1}")


def test_fresh_non_causal_model_without_tokenizer_is_refused(tmp_path):
    data = write_jsonl(tmp_path / "labels.jsonl", [{"text": "a cat", "label": 0}])
    assert_refused(tmp_path, ["--data", data, *CLASSIFY], "Invalid value for argument `tokenizer`. Expected a "
                   "tokenizer folder (--tokenizer DIR): a fresh classification model needs one")


@pytest.mark.parametrize("flag, value, name", [("--strategy", "horovod", "strategy"),
                                                ("--precision", "float8", "precision"),
                                                ("--epochs", "0", "epochs"),
                                                ("--schedule", "step", "schedule")])
def test_bad_flag_values_are_refused(tmp_path, trained, flag, value, name):
    arguments = ["--data", trained["corpus"], *TRAIN, flag, value]
    assert_refused(tmp_path, arguments, f"Invalid value for argument `{name}`.", f"Received: {name}=")


def test_batch_size_not_divisible_by_the_replicas_is_refused(tmp_path, trained):
    output = tmp_path / "mirrored"
    command = [sys.executable, str(HELPER), "--cpus", "2", "train", "--strategy", "mirrored", "--data",
               trained["corpus"], "--output", str(output), *TRAIN, "--batch-size", "3"]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr[-2000:]
    assert ("Invalid value for argument `batch_size`. Expected a positive multiple of the number of replicas (2). "
            "Received: batch_size=3") in result.stderr
    assert not output.exists()


@pytest.mark.slow
def test_mirrored_two_replicas_reaches_the_default_strategy_weights(tmp_path, trained):
    """The trainer's data stream and `fit` under MirroredStrategy (2 logical CPUs) and the default one."""
    from safetensors.numpy import load_file

    config = json.loads((trained["output"] / "config.json").read_text())
    config.update(resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)  # dropout draws differ per replica
    config_file = tmp_path / "config.json"
    config_file.write_text(json.dumps(config))
    weights = {}
    for strategy in ("default", "mirrored"):
        output = tmp_path / strategy
        arguments = ["train", "--config", str(config_file), "--tokenizer", str(trained["output"]), "--data",
                     trained["corpus"], "--output", str(output), "--strategy", strategy, "--batch-size", "4",
                     "--seq-len", "16", "--learning-rate", "3e-3", "--max-steps", "6", "--progress", "none",
                     "--deterministic"]
        result = subprocess.run([sys.executable, str(HELPER), "--cpus", "2", *arguments], cwd=ROOT,
                                capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-3000:]
        assert "trained 6 steps" in result.stdout
        weights[strategy] = load_file(output / "model.safetensors")
    # Summing the replicas' gradients changes the float rounding only: the weights differ by a few
    # 1e-6 after 6 AdamW steps of 3e-3 (a wrong batch split or gradient scale would move them by ~1e-3).
    for name, value in weights["default"].items():
        np.testing.assert_allclose(weights["mirrored"][name], value, atol=1e-4, err_msg=name)
