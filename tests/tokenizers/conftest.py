"""Fixtures: a tiny byte-level BPE written in the layouts Hugging Face uses."""

import json
import os

import pytest
from pydoc_data.topics import topics

from tfllm.tokenizers import train_byte_level_bpe

MULTILINGUAL = (
    "Café naïve résumé Ångström façade. 中文分词测试，日本語のテキスト、한국어 문장. "
    "Emoji: 🤖🚀❤️ 👩‍👩‍👧. Tabs\tand\nnewlines.\r\n"
)

SAMPLES = {
    "ascii": "Hello world, this is a simple test.",
    "spaces": "   leading and  double  spaces and trailing   ",
    "newlines_tabs": "line one\nline two\n\n\tindented\ttab\r\nwindows line\n",
    "punct_digits": "Prices: $3.50, 1,000,000 items (50%)! Isn't it? 'quoted' -- x=y+2; [a] {b}",
    "accents": "café naïve résumé Ångström Ørsted",
    "emoji": "I ❤️ 🤖 and 🚀 👩‍👩‍👧",
    "cjk": "中文分词测试，日本語のテキスト、한국어",
    "empty": "",
    "single_space": " ",
    "long": " ".join(list(topics.values())[3:6])[:6000],
    "special_inside": "end<|endoftext|>start and <|endoftext|> again",
}


@pytest.fixture(scope="session")
def trained():
    """A byte-level BPE trained on Python docs text plus some non-ASCII text (~400 tokens)."""
    texts = list(topics.values())[:40] + [MULTILINGUAL] * 300
    return train_byte_level_bpe(texts, vocab_size=400)


def _write_folder(folder, backend, layout, config=None, special_tokens_map=None):
    """Writes `backend` as `tokenizer.json` ("json") or `vocab.json` + `merges.txt` ("files")."""
    os.makedirs(folder, exist_ok=True)
    if layout == "json":
        backend.save(os.path.join(folder, "tokenizer.json"))
    else:
        backend.model.save(str(folder))
    if config is not None:
        with open(os.path.join(folder, "tokenizer_config.json"), "w", encoding="utf-8") as f:
            json.dump(config, f)
    if special_tokens_map is not None:
        with open(os.path.join(folder, "special_tokens_map.json"), "w", encoding="utf-8") as f:
            json.dump(special_tokens_map, f)
    return str(folder)


GPT2_CONFIG = {
    "tokenizer_class": "GPT2Tokenizer",
    "bos_token": "<|endoftext|>",
    "eos_token": "<|endoftext|>",
    "unk_token": "<|endoftext|>",
    "model_max_length": 64,
}


@pytest.fixture(scope="session")
def gpt2_folders(trained, tmp_path_factory):
    """`{"json": folder, "files": folder}`: the same GPT-2 style tokenizer in both layouts."""
    root = tmp_path_factory.mktemp("gpt2")
    return {
        layout: _write_folder(root / layout, trained.backend_tokenizer, layout, GPT2_CONFIG)
        for layout in ("json", "files")
    }


@pytest.fixture(name="samples", scope="session")
def samples_fixture():
    """`{name: text}`: texts that exercise byte-level BPE edge cases."""
    return dict(SAMPLES)


@pytest.fixture(name="gpt2_config", scope="session")
def gpt2_config_fixture():
    """A `tokenizer_config.json` as GPT-2's, with model_max_length 64."""
    return dict(GPT2_CONFIG)


@pytest.fixture(name="write_folder", scope="session")
def write_folder_fixture():
    """The folder writer: `write_folder(folder, backend, layout, config=None, special_tokens_map=None)`."""
    return _write_folder
