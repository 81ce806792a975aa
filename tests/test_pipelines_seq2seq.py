"""The text2text-generation pipeline against transformers' on a tiny T5 with a SentencePiece tokenizer."""

import pytest
import transformers

import tfllm
from testing import make_tiny_t5_folder

INPUTS = ["translate: the function returns a value", "summarize: class definitions", "x"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return make_tiny_t5_folder(tmp_path_factory.mktemp("t5") / "model")


@pytest.mark.parametrize("kwargs", [dict(max_new_tokens=8), dict(max_new_tokens=6, num_beams=1),
                                    dict(max_new_tokens=5, num_beams=3, num_return_sequences=2)])
def test_text2text_matches_transformers_pipeline(folder, kwargs):
    ours = tfllm.pipeline("text2text-generation", model=str(folder))
    theirs = transformers.pipeline("text2text-generation", model=str(folder), device="cpu")
    assert ours(INPUTS[0], **kwargs) == theirs(INPUTS[0], **kwargs)
    assert ours(INPUTS, **kwargs) == theirs(INPUTS, **kwargs)


def test_text2text_refuses_non_text(folder):
    ours = tfllm.pipeline("text2text-generation", model=str(folder))
    with pytest.raises(ValueError, match="Invalid value for argument `text`"):
        ours([1, 2])
