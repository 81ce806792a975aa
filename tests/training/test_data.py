"""Tests for tfllm.training.data: reading, packing, masking, labels, seq2seq shift, splits and errors."""

import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from tokenizers import Tokenizer as BackendTokenizer
from tokenizers import models, pre_tokenizers, processors

from testing import write_wordpiece_vocab
from tfllm.tokenizers import AutoTokenizer, Tokenizer
from tfllm.training.data import (
    BUILTIN_CORPORA, TASKS, DataError, Record, TrainingData, build_datasets, read_records,
)

ROOT = Path(__file__).resolve().parents[2]
WORDS = [f"t{i}" for i in range(40)]  # word-level ids: "<pad>" 0, "</s>" 1, "<unk>" 2, t{i} -> i + 3
DATA_POLICY = tf.data.experimental.AutoShardPolicy.DATA


def word_tokenizer(eos_template=False):
    """A word-level tokenizer with T5's special ids; `eos_template` appends "</s>" to every text, as T5 does."""
    vocab = {token: i for i, token in enumerate(["<pad>", "</s>", "<unk>", *WORDS])}
    backend = BackendTokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    if eos_template:
        backend.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return Tokenizer(backend, eos_token="</s>", pad_token="<pad>", unk_token="<unk>")


@pytest.fixture(scope="module")
def bert_tokenizer(tmp_path_factory):
    folder = tmp_path_factory.mktemp("wordpiece")
    write_wordpiece_vocab(str(folder))
    return AutoTokenizer.from_pretrained(str(folder))


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return str(path)


def write_jsonl(path, rows):
    return write(path, "".join(json.dumps(row) + "\n" for row in rows))


def words(*indices):
    return " ".join(WORDS[i] for i in indices)


def one_epoch(dataset):
    return [tf.nest.map_structure(lambda t: t.numpy(), element) for element in dataset]


def stack(batches, index, key=None):
    parts = [batch[index] if key is None else batch[index][key] for batch in batches]
    return np.concatenate(parts)


# === Reading ===


def test_read_txt_splits_documents_on_blank_lines(tmp_path):
    path = write(tmp_path / "a.txt", "\n t0 t1\nt2\n\n   \n\nt3\r\n\nt4 t5\n")
    records = read_records(path)
    assert [r.values["text"] for r in records] == [" t0 t1\nt2", "t3", "t4 t5"]
    assert [r.source for r in records] == [f"{path}:2", f"{path}:7", f"{path}:9"]
    assert isinstance(records[0], Record)


def test_read_jsonl_skips_blank_lines_and_checks_fields(tmp_path):
    path = write(tmp_path / "a.jsonl", '{"text": "x", "label": 1}\n\n{"text": "y", "label": 0, "extra": 2}\n')
    records = read_records(path, fields=["text", "label"])
    assert [r.values["text"] for r in records] == ["x", "y"]
    assert [r.source for r in records] == [f"{path}:1", f"{path}:3"]
    assert TASKS == ("causal_lm", "masked_lm", "classification", "seq2seq") and BUILTIN_CORPORA == ("pydoc",)


# === Causal LM ===


def test_causal_lm_packs_documents_joined_with_eos(tmp_path):
    path = write(tmp_path / "docs.txt", f"{words(0, 1, 2)}\n\n{words(3, 4)}\n\n{words(5, 6, 7, 8)}\n")
    for tokenizer in (word_tokenizer(), word_tokenizer(eos_template=True)):  # eos is never doubled
        data = build_datasets("causal_lm", tokenizer, path, sequence_length=3, batch_size=3, validation_split=0,
                              shuffle=False)
        # Stream: 3 4 5 </s> 6 7 </s> 8 9 10 11 </s> -> blocks of 4 tokens.
        (inputs, labels, weights), = one_epoch(data.train)
        np.testing.assert_array_equal(inputs["input_ids"], [[3, 4, 5], [6, 7, 1], [9, 10, 11]])
        np.testing.assert_array_equal(labels, [[4, 5, 1], [7, 1, 8], [10, 11, 1]])
        np.testing.assert_array_equal(inputs["attention_mask"], np.ones((3, 3)))
        np.testing.assert_array_equal(weights, np.ones((3, 3)))
        assert weights.dtype == np.float32 and labels.dtype == np.int32 and inputs["input_ids"].dtype == np.int32
        assert (data.train_examples, data.validation_examples, data.steps_per_epoch) == (3, 0, 1)
        assert data.validation is None and data.tokens_per_example == 3 and data.label2id is None


def long_corpus(tmp_path, documents=20, length=10, name="long.txt"):
    rng = np.random.default_rng(0)
    text = "\n\n".join(words(*rng.integers(0, len(WORDS), length)) for _ in range(documents))
    return write(tmp_path / name, text)


def test_shuffle_is_seeded_and_options_shard_by_data(tmp_path):
    path = long_corpus(tmp_path)  # 220 tokens -> 27 blocks of 8
    build = lambda seed: build_datasets("causal_lm", word_tokenizer(), path, sequence_length=7, batch_size=4,
                                        validation_split=0.2, seed=seed)
    data = build(0)
    first, second = one_epoch(data.train), one_epoch(data.train)
    assert len(first) == data.steps_per_epoch == data.train_examples // 4
    assert not np.array_equal(stack(first, 1), stack(second, 1))  # reshuffled each epoch
    np.testing.assert_array_equal(stack(first, 1), stack(one_epoch(build(0).train), 1))  # seeded
    assert not np.array_equal(stack(first, 1), stack(one_epoch(build(1).train), 1))
    for dataset in (data.train, data.validation):
        assert dataset.options().experimental_distribute.auto_shard_policy == DATA_POLICY
    assert data.train.element_spec[1].shape.as_list() == [4, 7]  # drop_remainder: static batch size


def test_validation_split_is_held_out_disjoint_and_deterministic(tmp_path):
    path = long_corpus(tmp_path, documents=16, length=9)  # 160 tokens -> 20 blocks of 8
    build = lambda seed: build_datasets("causal_lm", word_tokenizer(), path, sequence_length=7, batch_size=2,
                                        validation_split=0.25, seed=seed)
    data = build(0)
    assert (data.train_examples, data.validation_examples, data.steps_per_epoch) == (15, 5, 7)
    train = stack(one_epoch(data.train), 0, "input_ids")
    validation = stack(one_epoch(data.validation), 0, "input_ids")
    assert len(validation) == 5 and len(train) == 14  # one training block left over by drop_remainder
    everything = build_datasets("causal_lm", word_tokenizer(), path, sequence_length=7, batch_size=2,
                                validation_split=0, shuffle=False)
    all_blocks = {tuple(row) for row in stack(one_epoch(everything.train), 0, "input_ids")}
    assert len(all_blocks) == 20
    train_set, validation_set = {tuple(r) for r in train}, {tuple(r) for r in validation}
    assert not train_set & validation_set and validation_set <= all_blocks and train_set <= all_blocks
    again = stack(one_epoch(build(0).validation), 0, "input_ids")
    np.testing.assert_array_equal(validation, again)
    assert {tuple(r) for r in stack(one_epoch(build(5).validation), 0, "input_ids")} != validation_set


def test_validation_data_file_is_used_instead_of_a_split(tmp_path):
    train = long_corpus(tmp_path, documents=8)
    held = write(tmp_path / "held.txt", words(*range(17)))
    data = build_datasets("causal_lm", word_tokenizer(), train, sequence_length=7, batch_size=2,
                          validation_data=held, validation_split=0.5)
    assert data.validation_examples == 2 and data.train_examples == 11
    (inputs, labels, _), = one_epoch(data.validation)
    np.testing.assert_array_equal(inputs["input_ids"][0], np.arange(7) + 3)
    np.testing.assert_array_equal(labels[1], np.arange(9, 16) + 3)


def test_pydoc_corpus_builds_without_files():
    from pydoc_data.topics import topics

    data = build_datasets("causal_lm", word_tokenizer(), "pydoc", sequence_length=64, batch_size=8)
    assert data.train_examples > 100 and data.validation_examples == round(0.1 * (data.train_examples
                                                                                  + data.validation_examples))
    assert len(topics) > 50


def test_causal_lm_dataset_fits_a_tiny_gpt2(tmp_path):
    from tfllm.models.gpt2 import GPT2Backbone, GPT2CausalLM

    keras.utils.set_random_seed(0)
    tokenizer = word_tokenizer()
    data = build_datasets("causal_lm", tokenizer, long_corpus(tmp_path), sequence_length=8, batch_size=4,
                          max_positions=16)
    backbone = GPT2Backbone(vocabulary_size=tokenizer.vocab_size, num_layers=1, num_heads=2, hidden_dim=16,
                            intermediate_dim=32, max_sequence_length=16, dropout=0.0)
    model = GPT2CausalLM(backbone, bos_token_id=1, eos_token_id=1)
    model.compile(optimizer=keras.optimizers.Adam(1e-2), jit_compile=False,
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), weighted_metrics=["accuracy"])
    history = model.fit(data.train, epochs=1, steps_per_epoch=2, validation_data=data.validation, verbose=0,
                        shuffle=False)
    assert np.isfinite(history.history["loss"][0]) and np.isfinite(history.history["val_loss"][0])
    assert history.history["loss"][0] < np.log(tokenizer.vocab_size) + 1.0


# === Masked LM ===


def masked_lm_corpus(tmp_path, bert_tokenizer, documents, length, seed=0):
    vocab = sorted(t for t in bert_tokenizer.get_vocab() if t.isalpha() and t.islower())
    rng = np.random.default_rng(seed)
    text = "\n\n".join(" ".join(rng.choice(vocab, length)) for _ in range(documents))
    return write(tmp_path / "mlm.txt", text)


def test_masked_lm_chunks_documents_and_masks_only_ordinary_tokens(tmp_path, bert_tokenizer):
    tok = bert_tokenizer
    path = write(tmp_path / "one.txt", " ".join(["cat", "dog"] * 10))  # 20 word tokens
    data = build_datasets("masked_lm", tok, path, sequence_length=8, batch_size=4, validation_split=0,
                          shuffle=False, mlm_probability=1.0)
    (inputs, labels, weights), = one_epoch(data.train)
    cat, dog = tok.convert_tokens_to_ids(["cat", "dog"])
    cls, sep, pad = tok.cls_token_id, tok.sep_token_id, tok.pad_token_id
    # 20 tokens -> chunks of 6, 6, 6, 2 between [CLS] and [SEP].
    np.testing.assert_array_equal(labels[0], [cls, cat, dog, cat, dog, cat, dog, sep])
    np.testing.assert_array_equal(labels[3], [cls, cat, dog, sep, pad, pad, pad, pad])
    np.testing.assert_array_equal(inputs["attention_mask"][3], [1, 1, 1, 1, 0, 0, 0, 0])
    np.testing.assert_array_equal(inputs["token_type_ids"], np.zeros((4, 8)))
    special = np.isin(labels, [cls, sep, pad])
    np.testing.assert_array_equal(weights, (~special).astype(np.float32))  # probability 1: all the others
    np.testing.assert_array_equal(inputs["input_ids"][special], labels[special])


def test_masked_lm_rates_are_bert_like_and_change_each_epoch(tmp_path, bert_tokenizer):
    tok = bert_tokenizer
    path = masked_lm_corpus(tmp_path, tok, documents=200, length=30)
    build = lambda: build_datasets("masked_lm", tok, path, sequence_length=32, batch_size=20, seed=3)
    data = build()
    assert data.train_examples == 180 and data.validation_examples == 20
    epochs = [one_epoch(data.train) for _ in range(2)]
    ordinary = 0
    for batches in epochs:
        ids, labels, weights = stack(batches, 0, "input_ids"), stack(batches, 1), stack(batches, 2)
        special = np.isin(labels, [tok.cls_token_id, tok.sep_token_id, tok.pad_token_id])
        assert not weights[special].any()  # special tokens and padding are never masked
        np.testing.assert_array_equal(ids[weights == 0], labels[weights == 0])
        ordinary = (~special).sum()
        assert ordinary == 180 * 30 and set(np.unique(weights)) == {0.0, 1.0}
        chosen = weights == 1
        assert abs(chosen.sum() / ordinary - 0.15) < 0.02
        as_mask = (ids[chosen] == tok.mask_token_id).mean()
        kept = (ids[chosen] == labels[chosen]).mean()
        assert abs(as_mask - 0.8) < 0.05 and abs(kept - 0.1) < 0.04 and abs(1 - as_mask - kept - 0.1) < 0.04
    # The same documents get different masks in the two epochs (rows matched by their original ids).
    masks = [{tuple(row): w for row, w in zip(stack(b, 1), stack(b, 2))} for b in epochs]
    common = set(masks[0]) & set(masks[1])
    assert len(common) > 100 and sum(np.array_equal(masks[0][k], masks[1][k]) for k in common) < 5
    np.testing.assert_array_equal(stack(epochs[0], 2), stack(one_epoch(build().train), 2))  # seeded
    unshuffled = build_datasets("masked_lm", tok, path, sequence_length=32, batch_size=20, shuffle=False).train
    assert not np.array_equal(*[stack(one_epoch(unshuffled), 2) for _ in range(2)])  # not only the order changes
    validation = [stack(one_epoch(data.validation), 2) for _ in range(2)]
    np.testing.assert_array_equal(*validation)  # validation masks are fixed
    assert data.validation.options().experimental_distribute.auto_shard_policy == DATA_POLICY


def test_a_fresh_build_skipped_ahead_replays_the_same_stream(tmp_path, bert_tokenizer):
    """What resuming after a crash relies on: shuffles and masks depend only on the seed and the step."""
    path = masked_lm_corpus(tmp_path, bert_tokenizer, documents=30, length=14)
    build = lambda: build_datasets("masked_lm", bert_tokenizer, path, sequence_length=16, batch_size=4, seed=1).train
    steps = 6  # 27 training examples -> 6 batches an epoch
    run = one_epoch(build().repeat().take(3 * steps))
    resumed = one_epoch(build().repeat().skip(steps + 2).take(2 * steps - 2))
    for key in (0, 2):
        np.testing.assert_array_equal(stack(run[steps + 2:], key, "input_ids" if key == 0 else None),
                                      stack(resumed, key, "input_ids" if key == 0 else None))
    assert not np.array_equal(stack(run[:steps], 2), stack(run[steps:2 * steps], 2))


def test_epoch_batches_are_a_function_of_seed_and_epoch_only(tmp_path, bert_tokenizer):
    """`TrainingData.epoch`: what the trainer resumes from. Other iterators never shift it."""
    path = masked_lm_corpus(tmp_path, bert_tokenizer, documents=30, length=14)
    build = lambda seed=1: build_datasets("masked_lm", bert_tokenizer, path, sequence_length=16, batch_size=4,
                                          seed=seed)
    data = build()
    first = one_epoch(data.epoch(0))
    assert len(first) == data.steps_per_epoch == 6
    one_epoch(data.epoch(1))
    one_epoch(data.train)  # iterating the other datasets moves nothing
    again = one_epoch(build().epoch(0))  # a fresh build, as in a restarted process
    for key in (0, 1, 2):
        np.testing.assert_array_equal(stack(first, key, "input_ids" if key == 0 else None),
                                      stack(again, key, "input_ids" if key == 0 else None))
    second = one_epoch(data.epoch(1))
    assert not np.array_equal(stack(first, 1), stack(second, 1))  # another order
    # The same documents get other masks in the next epoch (rows matched by their original ids).
    masks = [{tuple(row): w for row, w in zip(stack(b, 1), stack(b, 2))} for b in (first, second)]
    common = set(masks[0]) & set(masks[1])
    assert len(common) > 10 and sum(np.array_equal(masks[0][k], masks[1][k]) for k in common) < len(common) / 2
    assert not np.array_equal(stack(one_epoch(build(seed=2).epoch(0)), 1), stack(first, 1))
    skipped = one_epoch(data.epoch(0, skip=4))
    np.testing.assert_array_equal(stack(skipped, 2), stack(first[4:], 2))
    options = data.epoch(0).options()
    assert options.deterministic is True and options.experimental_distribute.auto_shard_policy == DATA_POLICY
    with pytest.raises(ValueError, match="Received: skip=-1"):
        data.epoch(0, skip=-1)


# === Classification ===


def test_classification_pairs_string_labels_and_padding(tmp_path, bert_tokenizer):
    tok = bert_tokenizer
    rows = [{"a": "the cat sat", "b": "the dog", "y": "pos"}, {"a": "bad movie", "b": "hate", "y": "neg"},
            {"a": "good film", "b": "love it", "y": "mid"}, {"a": "red", "b": "blue", "y": "pos"}]
    path = write_jsonl(tmp_path / "cls.jsonl", rows)
    data = build_datasets("classification", tok, path, sequence_length=10, batch_size=4, validation_split=0,
                          shuffle=False, text_field="a", text_pair_field="b", label_field="y")
    assert data.label2id == {"mid": 0, "neg": 1, "pos": 2}
    (inputs, labels, weights), = one_epoch(data.train)
    np.testing.assert_array_equal(labels, [2, 1, 0, 2])
    np.testing.assert_array_equal(weights, np.ones(4))
    expected = tok("the cat sat", "the dog", return_token_type_ids=True)
    n = len(expected["input_ids"])
    np.testing.assert_array_equal(inputs["input_ids"][0], expected["input_ids"] + [tok.pad_token_id] * (10 - n))
    np.testing.assert_array_equal(inputs["token_type_ids"][0], expected["token_type_ids"] + [0] * (10 - n))
    np.testing.assert_array_equal(inputs["attention_mask"][0], [1] * n + [0] * (10 - n))
    assert inputs["token_type_ids"][0].max() == 1 and data.train.element_spec[1].shape.as_list() == [4]


def test_classification_integer_labels_given_label2id_and_truncation(tmp_path, bert_tokenizer):
    ints = write_jsonl(tmp_path / "ints.jsonl", [{"text": "the cat " * 20, "label": i % 3} for i in range(6)])
    data = build_datasets("classification", bert_tokenizer, ints, sequence_length=6, batch_size=3, num_labels=3,
                          validation_split=0, shuffle=False)
    batches = one_epoch(data.train)
    np.testing.assert_array_equal(stack(batches, 1), [0, 1, 2, 0, 1, 2])
    assert data.label2id is None and stack(batches, 0, "input_ids")[0, -1] == bert_tokenizer.sep_token_id
    named = write_jsonl(tmp_path / "named.jsonl", [{"text": "red", "label": "b"}, {"text": "blue", "label": "a"}])
    data = build_datasets("classification", bert_tokenizer, named, sequence_length=6, batch_size=2,
                          label2id={"a": 5, "b": 7}, validation_split=0, shuffle=False)
    np.testing.assert_array_equal(stack(one_epoch(data.train), 1), [7, 5])
    assert data.label2id == {"a": 5, "b": 7}


# === Seq2seq ===


def test_seq2seq_decoder_inputs_are_labels_shifted_right(tmp_path):
    from tfllm.models.t5.seq2seq_lm import shift_right

    rows = [{"source": words(0, 1, 2), "target": words(3, 4)}, {"source": words(5), "target": words(6, 7, 8, 9, 10)}]
    path = write_jsonl(tmp_path / "pairs.jsonl", rows)
    data = build_datasets("seq2seq", word_tokenizer(eos_template=True), path, sequence_length=5, batch_size=2,
                          validation_split=0, shuffle=False)
    (inputs, labels, weights), = one_epoch(data.train)
    np.testing.assert_array_equal(inputs["input_ids"], [[3, 4, 5, 1, 0], [8, 1, 0, 0, 0]])
    np.testing.assert_array_equal(inputs["attention_mask"], [[1, 1, 1, 1, 0], [1, 1, 0, 0, 0]])
    np.testing.assert_array_equal(labels, [[6, 7, 1, 0, 0], [9, 10, 11, 12, 1]])  # truncation keeps </s>
    np.testing.assert_array_equal(weights, [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    np.testing.assert_array_equal(inputs["decoder_input_ids"], shift_right(labels, 0, 0).numpy())
    np.testing.assert_array_equal(inputs["decoder_input_ids"], [[0, 6, 7, 1, 0], [0, 9, 10, 11, 12]])
    np.testing.assert_array_equal(inputs["decoder_attention_mask"], [[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]])
    assert data.tokens_per_example == 10
    other = build_datasets("seq2seq", word_tokenizer(eos_template=True), path, sequence_length=5, batch_size=2,
                           validation_split=0, shuffle=False, decoder_start_token_id=2)
    assert one_epoch(other.train)[0][0]["decoder_input_ids"][0, 0] == 2


# === Errors: every bad input names the file and line, or the argument ===


def cls_rows(count, **row):
    return [{"text": "red", "label": i % 2, **row} for i in range(count)]


@pytest.mark.parametrize("name, content, kwargs, line, words_in_message", [
    ("empty.txt", "\n  \n\n", {"task": "masked_lm"}, 3, ["no records"]),
    ("empty.jsonl", "", {}, 1, ["no records"]),
    ("bad.jsonl", '{"text": "red", "label": 0}\n{"text": "red", label: 1}\n', {}, 2, ["invalid JSON"]),
    ("list.jsonl", '{"text": "red", "label": 0}\n[1, 2]\n', {}, 2, ["JSON object"]),
    ("missing.jsonl", '{"text": "a", "label": 0}\n\n{"txt": "b", "label": 1}\n', {}, 3,
     ["'text'", "`text_field`", "['label', 'txt']"]),
    ("range.jsonl", '{"text": "a", "label": 0}\n{"text": "b", "label": 3}\n', {"num_labels": 3}, 2,
     ["label 3", "num_labels=3"]),
    ("unknown.jsonl", '{"text": "a", "label": "x"}\n{"text": "b", "label": "z"}\n', {"label2id": {"x": 0}}, 2,
     ["unknown label 'z'", "['x']"]),
    ("mixed.jsonl", '{"text": "a", "label": 1}\n{"text": "b", "label": "z"}\n', {}, 2, ["string", ":1"]),
    ("float.jsonl", '{"text": "a", "label": 1.5}\n', {"batch_size": 1}, 1, ["integer id"]),
    ("nottext.jsonl", '{"text": "a", "label": 1}\n{"text": 7, "label": 0}\n', {}, 2, ["must be a string"]),
    ("few.jsonl", '{"text": "a", "label": 1}\n{"text": "b", "label": 0}\n', {"batch_size": 4}, 2,
     ["fewer than one batch of batch_size=4"]),
])
def test_bad_data_names_file_and_line(tmp_path, bert_tokenizer, name, content, kwargs, line, words_in_message):
    path = write(tmp_path / name, content)
    kwargs = {"task": "classification", "sequence_length": 8, "batch_size": 2, "validation_split": 0, **kwargs}
    with pytest.raises(DataError) as info:
        build_datasets(tokenizer=bert_tokenizer, data=path, **kwargs)
    message = str(info.value)
    assert message.startswith(f"{path}:{line}: ") or f"{path}:{line}:" in message
    for word in words_in_message:
        assert word in message


def test_bad_validation_file_and_bad_bytes_name_file_and_line(tmp_path, bert_tokenizer):
    train = write_jsonl(tmp_path / "train.jsonl", cls_rows(4))
    held = write(tmp_path / "held.jsonl", '{"text": "a", "label": 0}\n{"text": "a", "label": 9}\n')
    with pytest.raises(DataError, match=rf"^{held}:2: label 9 .*num_labels=2"):
        build_datasets("classification", bert_tokenizer, train, sequence_length=8, batch_size=2,
                       validation_data=held, num_labels=2)
    held_string = write_jsonl(tmp_path / "held2.jsonl", [{"text": "a", "label": "q"}])
    named = write_jsonl(tmp_path / "named.jsonl", [{"text": "a", "label": "p"}] * 2)
    with pytest.raises(DataError, match=rf"^{held_string}:1: unknown label 'q'"):
        build_datasets("classification", bert_tokenizer, named, sequence_length=8, batch_size=2,
                       validation_data=held_string)
    binary = tmp_path / "bad.txt"
    binary.write_bytes(b"t0 t1\n\nt2 \xff\xfe\n")
    with pytest.raises(DataError, match=rf"^{binary}:3: not UTF-8"):
        read_records(binary)
    short = write(tmp_path / "short.txt", "t0 t1 t2")
    with pytest.raises(DataError, match=rf"^{short}:1: .* 0 examples .*fewer than one batch"):
        build_datasets("causal_lm", word_tokenizer(), short, sequence_length=8, batch_size=1)
    with pytest.raises(DataError, match=rf"^{short}:1: missing field 'label'"):
        build_datasets("classification", bert_tokenizer, short, sequence_length=8, batch_size=1)


def test_bad_arguments_are_named(tmp_path, bert_tokenizer):
    path = write_jsonl(tmp_path / "ok.jsonl", cls_rows(8))
    build = lambda **kw: build_datasets(**{"task": "classification", "tokenizer": bert_tokenizer, "data": path,
                                           "sequence_length": 8, "batch_size": 4, **kw})
    cases = [
        (dict(sequence_length=64, max_positions=40), "argument `sequence_length`. Expected an integer <= 40"),
        (dict(batch_size=6, num_replicas=4), "`batch_size`. Expected a multiple of the number of replicas (4)"),
        (dict(task="translation"), "argument `task`. Expected one of 'causal_lm'"),
        (dict(data=str(tmp_path / "nope.jsonl")), "argument `data`. Expected an existing"),
        (dict(data=write(tmp_path / "x.csv", "a,b\n")), "argument `data`. Expected a file ending in one of"),
        (dict(data=3), "argument `data`. Expected a file path"),
        (dict(validation_split=1.0), "argument `validation_split`"),
        (dict(batch_size=0), "argument `batch_size`. Expected an integer >= 1"),
        (dict(label2id={"a": "0"}), "argument `label2id`"),
        (dict(task="masked_lm", tokenizer=word_tokenizer()), "a mask_token"),
        (dict(task="masked_lm", sequence_length=2), "argument `sequence_length`. Expected an integer >= 3"),
    ]
    for kwargs, message in cases:
        with pytest.raises(DataError) as info:
            build(**kwargs)
        assert message in str(info.value), (kwargs, str(info.value))
    with pytest.raises(DataError, match="argument `path`. Expected an existing"):
        read_records(tmp_path / "none.txt")
    assert isinstance(build(batch_size=8, num_replicas=4, validation_split=0), TrainingData)


def test_deeply_nested_json_line_names_file_and_line(tmp_path):
    path = write(tmp_path / "deep.jsonl", '{"text": "t0 t1"}\n{"text": ' + "[" * 100_000 + "\n")
    with pytest.raises(DataError, match=rf"^{path}:2: invalid JSON: nested too deeply"):
        read_records(path)


PEAK_SCRIPT = """
import resource, sys
from tfllm.tokenizers import AutoTokenizer
from tfllm.training.data import build_datasets

tokenizer = AutoTokenizer.from_pretrained(sys.argv[1])
build = lambda path: build_datasets("causal_lm", tokenizer, path, sequence_length=32, batch_size=8, shuffle=False)
build(sys.argv[2])  # TensorFlow's one-time allocations, on a small file
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
data = build(sys.argv[3])
print(data.train_examples, (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024)
"""


def test_a_single_line_training_file_costs_a_small_multiple_of_its_size(tmp_path):
    from tfllm.tokenizers import train_byte_level_bpe

    rng = np.random.default_rng(0)
    vocabulary = np.array("the a cat dog sees ball, tree. river (book) 42 x=3 élan".split())
    line = " ".join(vocabulary[rng.integers(0, len(vocabulary), 800_000)])  # ~4 MB, one line, one document
    big = write(tmp_path / "big.txt", line + "\n")
    small = write(tmp_path / "small.txt", line[:20_000] + "\n")
    train_byte_level_bpe([line[:200_000]], vocab_size=300).save_pretrained(tmp_path / "tokenizer")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([sys.executable, "-c", PEAK_SCRIPT, str(tmp_path / "tokenizer"), small, big], cwd=ROOT,
                            env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    examples, growth = map(int, result.stdout.split()[-2:])
    size = len(line.encode())
    assert examples > size // 33 // 4  # the whole line was tokenized (a few characters per token)
    assert growth < 20 * size, f"peak grew by {growth / size:.1f} x the file"  # 10 x here, 200 x before
