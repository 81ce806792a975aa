"""Fine-tuning the real all-MiniLM-L6-v2 checkpoint for classification with `tfllm.training.train`.

The labelled set is made here: short reviews whose sentiment is carried by an adjective or a
phrase. The held-out part uses subjects and sentence frames that training never sees, so the
accuracy measures what the model learned about the sentiment words, not the sentences.
"""

import itertools
import json
import random

import numpy as np
import pytest
from testing import minilm_folder

POSITIVE = ("wonderful", "excellent", "delightful", "brilliant", "superb", "charming", "moving", "fantastic",
            "a joy to watch", "worth every minute")
NEGATIVE = ("terrible", "awful", "dreadful", "boring", "tedious", "painful", "clumsy", "disappointing",
            "a waste of time", "hard to sit through")
TRAIN_SUBJECTS = ("The movie", "This film", "The acting", "The story", "The soundtrack", "The ending")
HELD_OUT_SUBJECTS = ("The sequel", "Her performance", "The script", "The documentary")
TRAIN_FRAMES = ("{subject} was {word}.", "Honestly, {subject} is {word}.", "{subject} felt {word} to me.")
HELD_OUT_FRAMES = ("I thought {subject} was {word}.", "Everyone agrees {subject} is {word}!")


def _examples(subjects, frames):
    rows = []
    for label, words in (("positive", POSITIVE), ("negative", NEGATIVE)):
        for subject, frame, word in itertools.product(subjects, frames, words):
            text = frame.format(subject=subject.lower() if frame[0] != "{" else subject, word=word)
            rows.append({"text": text, "label": label})
    return rows


def _write(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return str(path)


@pytest.fixture(scope="module")
def finetuned(tmp_path_factory):
    from tfllm.training.trainer import TrainConfig, evaluate, train

    folder = tmp_path_factory.mktemp("minilm_finetune")
    rng = random.Random(0)
    train_rows = _examples(TRAIN_SUBJECTS, TRAIN_FRAMES)  # 180 rows
    held_out_rows = _examples(HELD_OUT_SUBJECTS, HELD_OUT_FRAMES)  # 160 rows
    rng.shuffle(train_rows)
    train_path = _write(folder / "train.jsonl", train_rows)
    held_out_path = _write(folder / "held_out.jsonl", held_out_rows)
    output = str(folder / "out")
    base = minilm_folder()
    before = evaluate_untrained(base, held_out_path, tmp_path_factory)
    result = train(TrainConfig(model=base, task="classification", data=[train_path], validation_data=[held_out_path],
                               output=output, epochs=3, batch_size=16, seq_len=24, learning_rate=1e-4,
                               warmup_ratio=0.1, checkpoint_every=0, verbose=0))
    after = evaluate(output, held_out_path, task="classification", batch_size=32, seq_len=24)
    return {"result": result, "after": after, "before": before, "output": output, "held_out": len(held_out_rows),
            "train": len(train_rows)}


def evaluate_untrained(base, held_out_path, tmp_path_factory):
    """Held-out accuracy of MiniLM with a freshly initialised 2-label head (the starting point)."""
    from tfllm.training.data import build_datasets
    from tfllm.training.trainer import evaluate_dataset

    import tfllm

    tokenizer = tfllm.AutoTokenizer.from_pretrained(base)
    model = tfllm.AutoModelForSequenceClassification.from_pretrained(base, num_labels=2)
    prepared = build_datasets("classification", tokenizer, held_out_path, sequence_length=24, batch_size=1,
                              validation_data=held_out_path, label2id={"negative": 0, "positive": 1}, shuffle=False)
    return evaluate_dataset(model, prepared.validation.unbatch().batch(32), "classification")


@pytest.mark.slow
def test_minilm_reaches_high_held_out_accuracy(finetuned):
    after = finetuned["after"]
    print("held-out accuracy", finetuned["before"], "->", after)
    assert finetuned["after"]["examples"] == finetuned["held_out"] == 160
    # A fresh head is near chance; fine-tuning on 180 reviews reaches >= 0.95 on unseen subjects and frames.
    assert finetuned["before"]["accuracy"] < 0.8, finetuned["before"]
    assert after["accuracy"] >= 0.95, after
    assert after["loss"] < finetuned["before"]["loss"], (after, finetuned["before"])
    # The run's own validation on the same held-out file agrees with `evaluate` on the saved folder.
    validation = finetuned["result"]["validation"]
    np.testing.assert_allclose(validation["accuracy"], after["accuracy"], atol=1e-6)
    np.testing.assert_allclose(validation["loss"], after["loss"], rtol=1e-4)


@pytest.mark.slow
def test_saved_folder_carries_the_string_labels(finetuned):
    import tfllm

    config = json.load(open(f"{finetuned['output']}/config.json"))
    assert config["id2label"] == {"0": "negative", "1": "positive"}
    model = tfllm.AutoModelForSequenceClassification.from_pretrained(finetuned["output"])
    tokenizer = tfllm.AutoTokenizer.from_pretrained(finetuned["output"])
    batch = tokenizer(["The sequel was superb.", "The script was dreadful."], return_tensors="tf", padding=True)
    predicted = np.argmax(model(batch).numpy(), axis=-1)
    assert [config["id2label"][str(i)] for i in predicted] == ["positive", "negative"]
