"""`tfllm.training.trainer`: settings checks, the epoch data stream, evaluation, every task, LoRA, precision."""

import json
import math
import random

import keras
import numpy as np
import pytest
from testing import CORPUS_WORDS, write_corpus
import tensorflow as tf

from tfllm.training import callbacks as cb
from tfllm.training.trainer import TrainConfig, evaluate, evaluate_dataset, tiny_config, train



# === Settings ===


def config(**overrides):
    return TrainConfig(**{"output": "out", "data": ["train.txt"], "config": "tiny", **overrides})


@pytest.mark.parametrize("overrides, message", [
    ({"task": "translation"}, "Invalid value for argument `task`. Expected one of 'causal_lm'"),
    ({"model": "."}, "Invalid value for argument `model`. Expected exactly one of --model DIR and --config"),
    ({"config": None}, "Invalid value for argument `model`. Expected exactly one of --model DIR and --config"),
    ({"config": "huge"}, "Invalid value for argument `config`. Expected \"tiny\" or an existing config.json file. "
                         "Received: config='huge'"),
    ({"config": None, "model": "/no/such/folder"}, "Invalid value for argument `model`. Expected an existing folder"),
    ({"task": "classification"}, "Invalid value for argument `tokenizer`. Expected a tokenizer folder (--tokenizer "
                                 "DIR): a fresh classification model needs one"),
    ({"epochs": 0}, "Invalid value for argument `epochs`. Expected an integer >= 1. Received: epochs=0"),
    ({"batch_size": 2.5}, "Invalid value for argument `batch_size`. Expected an integer >= 1"),
    ({"max_steps": 0}, "Invalid value for argument `max_steps`. Expected an integer >= 1"),
    ({"learning_rate": 0.0}, "Invalid value for argument `learning_rate`. Expected a number in (0.0, inf]"),
    ({"warmup_ratio": 1.5}, "Invalid value for argument `warmup_ratio`. Expected a number in [0.0, 1.0]"),
    ({"strategy": "horovod"}, "Invalid value for argument `strategy`. Expected one of 'auto'"),
    ({"schedule": "step"}, "Invalid value for argument `schedule`. Expected one of 'cosine'"),
    ({"precision": "float8"}, "Invalid value for argument `precision`. Expected one of 'float32'"),
    ({"verbose": 3}, "Invalid value for argument `verbose`. Expected one of 'auto', 0, 1, 2"),
    ({"data": []}, "Invalid value for argument `data`. Expected at least one training file"),
])
def test_bad_settings_are_refused_with_the_argument_named(overrides, message):
    with pytest.raises(ValueError) as error:
        config(**overrides).validate()
    assert message in str(error.value)


def test_fingerprint_covers_the_settings_that_decide_the_weights():
    base = config().fingerprint()
    assert config(verbose=0, callbacks=[keras.callbacks.Callback()], overwrite=True, log_every=1).fingerprint() == base
    assert config(learning_rate=1e-3).fingerprint() != base
    assert config(seed=1).fingerprint() != base


def test_tiny_config_per_task():
    from tfllm.tokenizers import Tokenizer, train_byte_level_bpe

    trained = train_byte_level_bpe(["the cat sees the dog"] * 4, vocab_size=270, special_tokens=("<e>",))
    tokenizer = Tokenizer(trained.backend_tokenizer, eos_token="<e>", pad_token="<e>")
    assert {task: tiny_config(task, tokenizer, 16)["model_type"] for task in
            ("causal_lm", "masked_lm", "classification", "seq2seq")} == {
        "causal_lm": "gpt2", "masked_lm": "bert", "classification": "bert", "seq2seq": "t5"}
    assert tiny_config("causal_lm", tokenizer, 300)["n_positions"] == 300
    assert tiny_config("masked_lm", tokenizer, 16)["vocab_size"] == len(tokenizer)


# === The data stream ===


# === Evaluation ===


def test_evaluate_dataset_is_the_weighted_token_mean():
    from tfllm.models.gpt2 import GPT2Backbone, GPT2CausalLM

    keras.utils.set_random_seed(0)
    model = GPT2CausalLM(GPT2Backbone(vocabulary_size=40, num_layers=1, num_heads=2, hidden_dim=16,
                                      intermediate_dim=32, max_sequence_length=16))
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 40, (6, 9)).astype(np.int32)
    weights = (rng.random((6, 8)) > 0.3).astype(np.float32)  # some positions do not count
    inputs = {"input_ids": ids[:, :-1], "attention_mask": np.ones((6, 8), np.int32)}
    dataset = tf.data.Dataset.from_tensor_slices((inputs, ids[:, 1:], weights)).batch(4)  # 4 + 2
    result = evaluate_dataset(model, dataset, "causal_lm")

    logits = np.asarray(model(inputs), np.float64)
    log_probs = logits - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1, keepdims=True)) - \
        logits.max(-1, keepdims=True)
    losses = -np.take_along_axis(log_probs, ids[:, 1:, None], axis=-1)[..., 0]
    expected = (losses * weights).sum() / weights.sum()
    assert result["loss"] == pytest.approx(expected, rel=1e-5)
    assert result["perplexity"] == math.exp(result["loss"])
    assert result["accuracy"] == pytest.approx(((logits.argmax(-1) == ids[:, 1:]) * weights).sum() / weights.sum())
    assert result["tokens"] == int(weights.sum())
    assert "perplexity" not in evaluate_dataset(model, dataset, "classification")


def test_evaluate_refuses_a_missing_folder(tmp_path):
    with pytest.raises(ValueError, match="Invalid value for argument `model`. Expected an existing folder"):
        evaluate(tmp_path / "nope", "data.txt", task="causal_lm")


# === Logs and plot ===


def test_truncate_logs_drops_rows_after_the_backup_and_the_plot_is_a_png(tmp_path):
    (tmp_path / cb.LOG_CSV).write_text("epoch,step,loss,val_loss,learning_rate\n1,4,3.0,3.1,0.002\n2,8,2.5,2.7,0.001\n")
    steps = "step,epoch,loss,learning_rate\n" + "".join(f"{s},{(s - 1) // 4 + 1},{4 - s / 4},{0.003 - s / 4000}\n"
                                                         for s in range(1, 11))
    (tmp_path / cb.STEPS_CSV).write_text(steps)
    cb.truncate_logs(tmp_path, epoch=1, global_step=6)
    assert [row["epoch"] for row in cb.read_csv(tmp_path / cb.LOG_CSV)] == [1]
    assert [row["step"] for row in cb.read_csv(tmp_path / cb.STEPS_CSV)] == [1, 2, 3, 4, 5, 6]
    path = cb.plot_training(tmp_path)
    assert path == tmp_path / cb.PLOT_FILE and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(tmp_path.glob(".*.tmp"))  # written through a temporary file, renamed


# === Every task, LoRA and mixed precision through `train` ===


@pytest.fixture(scope="module")
def task_files(tmp_path_factory):
    from tfllm.tokenizers import Tokenizer, train_byte_level_bpe

    folder = tmp_path_factory.mktemp("tasks")
    rng = random.Random(0)
    texts = [" ".join(rng.choice(CORPUS_WORDS) for _ in range(rng.randint(4, 10))) for _ in range(48)]
    special = ("<pad>", "<s>", "</s>", "<mask>", "<unk>")
    trained = train_byte_level_bpe(texts, vocab_size=300, special_tokens=special)
    tokenizer = Tokenizer(trained.backend_tokenizer, pad_token="<pad>", bos_token="<s>", eos_token="</s>",
                          mask_token="<mask>", unk_token="<unk>", cls_token="<s>", sep_token="</s>")
    tokenizer.save_pretrained(folder / "tokenizer")
    rows = {"classification": [{"text": t, "label": "cat" if "cat" in t else "other"} for t in texts],
            "seq2seq": [{"source": t, "target": " ".join(reversed(t.split()))} for t in texts]}
    for task, records in rows.items():
        (folder / f"{task}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (folder / "masked_lm.txt").write_text("\n\n".join(texts) + "\n")
    return folder


@pytest.mark.slow
@pytest.mark.parametrize("task, data, auto_class", [
    ("classification", "classification.jsonl", "AutoModelForSequenceClassification"),
    ("masked_lm", "masked_lm.txt", "AutoModelForMaskedLM"),
    ("seq2seq", "seq2seq.jsonl", "AutoModelForSeq2SeqLM"),
])
def test_each_task_trains_from_tiny_and_loads_back(task_files, tmp_path, task, data, auto_class):
    import tfllm

    result = train(TrainConfig(output=str(tmp_path / "out"), data=[str(task_files / data)], task=task,
                               config="tiny", tokenizer=str(task_files / "tokenizer"), seq_len=16, batch_size=4,
                               epochs=1, max_steps=4, learning_rate=3e-3, verbose=0))
    assert result["steps"] == 4 and math.isfinite(result["loss"]) and math.isfinite(result["validation"]["loss"])
    assert ("perplexity" in result["validation"]) == (task != "classification")
    model = getattr(tfllm, auto_class).from_pretrained(tmp_path / "out")
    assert model.count_params() == result["model"].count_params()
    if task == "classification":
        assert json.loads((tmp_path / "out" / "config.json").read_text())["id2label"] == {"0": "cat", "1": "other"}


@pytest.fixture(scope="module")
def base_model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("base")
    corpus = write_corpus(folder / "corpus.txt")
    train(TrainConfig(output=str(folder / "out"), data=[corpus], config="tiny", vocab_size=280, seq_len=16,
                      batch_size=4, epochs=1, max_steps=4, learning_rate=3e-3, verbose=0))
    return {"corpus": corpus, "model": folder / "out"}


def test_lora_fine_tuning_trains_the_adapters_only_and_saves_them_and_the_merged_model(base_model, tmp_path):
    from safetensors.numpy import load_file

    from tfllm.training import lora

    output = tmp_path / "lora"
    result = train(TrainConfig(output=str(output), data=[base_model["corpus"]], model=str(base_model["model"]),
                               seq_len=16, batch_size=4, epochs=1, max_steps=6, learning_rate=1e-2, lora_rank=4,
                               lora_alpha=8, verbose=0))
    assert (output / "adapters" / lora.ADAPTER_WEIGHTS_NAME).is_file()
    adapters = load_file(output / "adapters" / lora.ADAPTER_WEIGHTS_NAME)
    assert result["trainable_parameters"] == sum(value.size for value in adapters.values())
    before, after = load_file(base_model["model"] / "model.safetensors"), load_file(output / "model.safetensors")
    changed = sorted(name for name in before if not np.array_equal(before[name], after[name]))
    assert changed == ["transformer.h.0.attn.c_attn.weight", "transformer.h.1.attn.c_attn.weight"]  # merged qkv


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["mixed_bfloat16", "mixed_float16"])
def test_mixed_precision_training_saves_float32_weights(base_model, tmp_path, precision):
    from safetensors.numpy import load_file

    result = train(TrainConfig(output=str(tmp_path / "out"), data=[base_model["corpus"]],
                               model=str(base_model["model"]), seq_len=16, batch_size=4, max_steps=4,
                               learning_rate=3e-3, precision=precision, verbose=0))
    assert math.isfinite(result["loss"])
    assert keras.config.dtype_policy().name == "float32"  # the global policy is put back
    assert {value.dtype.name for value in load_file(tmp_path / "out" / "model.safetensors").values()} == {"float32"}


def test_training_interrupted_says_the_step_and_the_last_checkpoint():
    from tfllm.training.trainer import TrainingInterrupted

    assert str(TrainingInterrupted(37, 30)) == "interrupted at step 37, last checkpoint at step 30"
    assert str(TrainingInterrupted(3, None)) == "interrupted at step 3, no checkpoint yet"
    assert isinstance(TrainingInterrupted(3, None), KeyboardInterrupt)  # `except KeyboardInterrupt` still catches it
