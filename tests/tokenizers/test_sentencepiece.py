"""SentencePiece Unigram (T5) tokenizers against transformers' T5Tokenizer and T5TokenizerFast."""

import json
import shutil

import numpy as np
import pytest
import transformers

from testing import train_tiny_spiece
from tfllm.tokenizers import AutoTokenizer
from tfllm.tokenizers.sentencepiece import parse_model_proto

EXTRA_IDS = 100  # T5Tokenizer's default

TEXTS = {
    "ascii": "Hello world, this is a simple test.",
    "spaces": "  leading,  double  and trailing spaces  ",
    "accents": "Café naïve résumé Ångström façade",
    "unknown_chars": "中文 ☃ 🤖 and more",
    "digits": "Prices: 3.50, 1,000,000 items (50%) in 2024",
    "sentinels": "The <extra_id_0> walks in <extra_id_1> park",
    "sentinel_glued": "end.<extra_id_0>start",
    "nfkc": "ﬁ ① Ｈｅｌｌｏ",
    "tabs_newlines": "line one\nline two\tindented",
    "empty": "",
}


@pytest.fixture(scope="module")
def spiece_folder(tmp_path_factory):
    """A tiny Unigram spiece.model (vocabulary 200) with T5's ids: pad 0, eos 1, unk 2, no bos."""
    folder = tmp_path_factory.mktemp("spiece") / "model"
    train_tiny_spiece(folder)
    return folder


@pytest.fixture(scope="module")
def slow(spiece_folder):
    return transformers.T5Tokenizer(str(spiece_folder / "spiece.model"), legacy=True)


@pytest.fixture(scope="module")
def fast(spiece_folder):
    return transformers.T5TokenizerFast.from_pretrained(spiece_folder)


@pytest.fixture(scope="module")
def ours(spiece_folder):
    return AutoTokenizer.from_pretrained(spiece_folder)


@pytest.mark.parametrize("name", sorted(TEXTS))
def test_ids_equal_transformers(ours, slow, fast, name):
    text = TEXTS[name]
    expected = fast(text)["input_ids"]
    assert ours.encode(text) == expected
    assert slow(text)["input_ids"] == expected  # the fast conversion is faithful on these texts
    assert expected[-1] == 1  # </s> appended
    assert ours.encode(text, add_special_tokens=False) == fast(text, add_special_tokens=False)["input_ids"]


def test_special_tokens_and_sentinels(ours, fast):
    assert (ours.pad_token_id, ours.eos_token_id, ours.unk_token_id) == (0, 1, 2)
    assert ours.bos_token_id is None
    assert len(ours) == len(fast) == 200 + EXTRA_IDS
    for i in (0, 1, EXTRA_IDS - 1):
        token = f"<extra_id_{i}>"
        assert ours.convert_tokens_to_ids(token) == fast.convert_tokens_to_ids(token) == 200 + EXTRA_IDS - 1 - i


@pytest.mark.parametrize("skip_special_tokens", [False, True])
def test_decode_equals_transformers(ours, fast, skip_special_tokens):
    for text in TEXTS.values():
        ids = fast(text)["input_ids"]
        assert ours.decode(ids, skip_special_tokens=skip_special_tokens) == fast.decode(
            ids, skip_special_tokens=skip_special_tokens
        ), text


def test_padded_batch_equals_transformers(ours, fast):
    texts = [TEXTS["ascii"], TEXTS["accents"], TEXTS["empty"], TEXTS["sentinels"]]
    batch = ours(texts, padding=True, return_tensors="np")
    expected = fast(texts, padding=True, return_tensors="np")
    np.testing.assert_array_equal(batch["input_ids"], expected["input_ids"])
    np.testing.assert_array_equal(batch["attention_mask"], expected["attention_mask"])
    assert batch["input_ids"][2, 1] == 0  # right padding with <pad>
    assert ours.batch_decode(batch["input_ids"], skip_special_tokens=True) == fast.batch_decode(
        expected["input_ids"], skip_special_tokens=True
    )


def test_tokenizer_json_saved_by_transformers_loads_equal(fast, tmp_path):
    fast.save_pretrained(tmp_path)
    (tmp_path / "spiece.model").unlink()  # only tokenizer.json and the configs are left
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    for text in TEXTS.values():
        assert loaded.encode(text) == fast(text)["input_ids"], text
    assert (loaded.pad_token_id, loaded.eos_token_id, loaded.unk_token_id) == (0, 1, 2)
    assert "token_type_ids" not in loaded(TEXTS["ascii"])


def test_save_pretrained_loads_in_transformers(ours, fast, tmp_path):
    ours.save_pretrained(tmp_path)
    reloaded = transformers.AutoTokenizer.from_pretrained(tmp_path)
    again = AutoTokenizer.from_pretrained(tmp_path)
    for text in TEXTS.values():
        assert reloaded(text)["input_ids"] == fast(text)["input_ids"], text
        assert again.encode(text) == fast(text)["input_ids"], text


@pytest.mark.parametrize("options", [{}, {"legacy": False}, {"add_prefix_space": False}], ids=str)
def test_config_extra_ids_and_prefix_space(spiece_folder, tmp_path, options):
    shutil.copy(spiece_folder / "spiece.model", tmp_path / "spiece.model")
    config = {"extra_ids": 3, "tokenizer_class": "T5Tokenizer", **options}
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    ours = AutoTokenizer.from_pretrained(tmp_path)
    reference = transformers.T5TokenizerFast.from_pretrained(tmp_path)
    assert len(ours) == len(reference) == 203
    assert ours.convert_tokens_to_ids("<extra_id_2>") == 200
    for text in ("one <extra_id_2> two", "Hello<extra_id_0>world", TEXTS["spaces"]):
        assert ours.encode(text) == reference(text)["input_ids"], text
        assert ours.decode(ours.encode(text)) == reference.decode(reference(text)["input_ids"]), text


def test_model_proto_parsed_like_protobuf(spiece_folder):
    from transformers.convert_slow_tokenizer import import_protobuf

    model_pb2 = import_protobuf()  # transformers' generated protobuf module, as its converter uses it
    data = (spiece_folder / "spiece.model").read_bytes()
    reference = model_pb2.ModelProto.FromString(data)
    parsed = parse_model_proto(data)
    assert [(p.piece, p.score, p.type) for p in reference.pieces] == parsed.pieces
    assert parsed.unk_id == reference.trainer_spec.unk_id == 2
    assert parsed.model_type == reference.trainer_spec.model_type == 1
    assert parsed.precompiled_charsmap == reference.normalizer_spec.precompiled_charsmap != b""
    assert parsed.add_dummy_prefix and parsed.remove_extra_whitespaces


def test_bpe_model_is_refused(spiece_folder, tmp_path):
    import sentencepiece

    sentencepiece.SentencePieceTrainer.train(
        input=str(spiece_folder.parent / "corpus.txt"), model_prefix=str(tmp_path / "spiece"), vocab_size=150,
        model_type="bpe", minloglevel=2,
    )
    with pytest.raises(NotImplementedError, match="SentencePiece model_type=2"):
        AutoTokenizer.from_pretrained(tmp_path)


def test_corrupt_model_is_refused(tmp_path):
    (tmp_path / "spiece.model").write_bytes(b"\x0a\xff\x01not a model")
    with pytest.raises(ValueError, match="spiece.model is not a valid SentencePiece model"):
        AutoTokenizer.from_pretrained(tmp_path)
