"""train_byte_level_bpe, the Tokenizer constructor, and the import cost of the package."""

import copy
import os
import subprocess
import sys

import pytest
from pydoc_data.topics import topics

import tfllm
from tfllm.tokenizers import Tokenizer, train_byte_level_bpe


def test_trained_tokenizer(trained, samples):
    assert trained.vocab_size == len(trained) == 400
    assert trained.eos_token == trained.bos_token == "<|endoftext|>"
    assert trained.eos_token_id == trained.bos_token_id == 0
    assert trained.pad_token_id is None and trained.unk_token_id is None
    for text in samples.values():
        assert trained.decode(trained.encode(text)) == text
    # Python docs text compresses: fewer tokens than bytes.
    text = samples["long"]
    assert len(trained.encode(text)) < 0.7 * len(text.encode("utf-8"))


def test_train_on_pydoc_topics_like_quickstart():
    tokenizer = train_byte_level_bpe(topics.values(), vocab_size=1000)
    assert tokenizer.vocab_size == 1000
    code = "def f(x):\n    return x ** 2  # ünïcode"
    assert tokenizer.decode(tokenizer.encode(code)) == code


def test_train_without_endoftext():
    tokenizer = train_byte_level_bpe(["aaa bbb"] * 5, vocab_size=300, special_tokens=("<s>",))
    assert tokenizer.eos_token is None and tokenizer.convert_tokens_to_ids("<s>") == 0


@pytest.mark.parametrize("vocab_size", [100, 256, "500", True])
def test_bad_vocab_size(vocab_size):
    with pytest.raises(ValueError, match=f"argument `vocab_size`.*at least 257.*{vocab_size!r}"):
        train_byte_level_bpe(["hello"], vocab_size=vocab_size)


def test_single_string_is_rejected():
    with pytest.raises(ValueError, match="argument `texts`"):
        train_byte_level_bpe("hello world", vocab_size=300)


def test_constructor_adds_special_tokens_and_copies_backend(trained):
    backend = copy.deepcopy(trained.backend_tokenizer)
    tokenizer = Tokenizer(backend, pad_token="<pad>", padding_side="left")
    assert tokenizer.pad_token_id == 400 and len(tokenizer) == 401
    assert backend.get_vocab_size() == 400  # the caller's backend is not changed
    assert tokenizer(["a", "bb cc"], padding=True)["input_ids"][0][0] == 400


def test_constructor_errors(trained):
    backend = trained.backend_tokenizer
    with pytest.raises(ValueError, match="argument `padding_side`.*padding_side='middle'"):
        Tokenizer(backend, padding_side="middle")
    with pytest.raises(ValueError, match="argument `add_bos_token`.*no bos_token"):
        Tokenizer(backend, add_bos_token=True)
    with pytest.raises(ValueError, match="argument `pad_token`"):
        Tokenizer(backend, pad_token="")
    with pytest.raises(ValueError, match="argument `model_max_length`.*-1"):
        Tokenizer(backend, model_max_length=-1)


def test_padding_without_pad_or_eos_token(trained):
    tokenizer = Tokenizer(trained.backend_tokenizer)
    with pytest.raises(ValueError, match="argument `padding`.*neither a pad_token nor an eos"):
        tokenizer(["a", "bb cc"], padding=True)


def test_import_does_not_load_tensorflow():
    # The tfllm package itself imports models (and TensorFlow); stub it to test this package alone.
    code = (
        "import sys, types; pkg = types.ModuleType('tfllm'); pkg.__path__ = [sys.argv[1]]; "
        "sys.modules['tfllm'] = pkg; import tfllm.tokenizers as t; "
        "t.train_byte_level_bpe(['ab ab'] * 3, vocab_size=260)(['ab'], return_tensors='np'); "
        "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules"
    )
    subprocess.run(
        [sys.executable, "-c", code, os.path.dirname(tfllm.__file__)], check=True, timeout=60
    )


@pytest.mark.parametrize("module", ["tokenizer", "auto", "bpe"])
def test_docstring_examples_run(module):
    import doctest  # pylint: disable=import-outside-toplevel
    import importlib  # pylint: disable=import-outside-toplevel

    result = doctest.testmod(importlib.import_module(f"tfllm.tokenizers.{module}"))
    assert result.attempted > 0 and result.failed == 0
