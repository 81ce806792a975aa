"""Pipelines against transformers' pipelines on the same folder."""

import pytest

import tfllm
from testing import make_hf_gpt2
from tfllm.tokenizers import train_byte_level_bpe

TEXT = ("The for statement is used to iterate over the elements of a sequence. "
        "A class definition defines a class object. The with statement wraps a block. ") * 20


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    path = tmp_path_factory.mktemp("pipeline_gpt2")
    tokenizer = train_byte_level_bpe([TEXT], vocab_size=300)
    make_hf_gpt2(path, vocab_size=tokenizer.vocab_size, bos_token_id=tokenizer.eos_token_id,
                 eos_token_id=tokenizer.eos_token_id)
    tokenizer.save_pretrained(path)
    return path


def test_text_generation_matches_transformers_pipeline(folder):
    import transformers

    prompts = ["The for statement", "A class"]
    theirs = transformers.pipeline("text-generation", model=str(folder), framework="pt")
    ours = tfllm.pipeline("text-generation", model=folder)
    for prompt in prompts:
        expected = theirs(prompt, max_new_tokens=8, do_sample=False)
        assert len(expected[0]["generated_text"]) > len(prompt)
        assert ours(prompt, max_new_tokens=8) == expected
    batch = ours(prompts, max_new_tokens=8)
    assert [row[0]["generated_text"] for row in batch] == [ours(p, max_new_tokens=8)[0]["generated_text"] for p in prompts]


def test_text_generation_without_full_text(folder):
    generator = tfllm.pipeline("text-generation", model=folder)
    full = generator("The with", max_new_tokens=5)[0]["generated_text"]
    tail = generator("The with", max_new_tokens=5, return_full_text=False)[0]["generated_text"]
    assert full == "The with" + tail


def test_unknown_task_names_the_argument(folder):
    with pytest.raises(ValueError, match="`task`.*text-generation"):
        tfllm.pipeline("summarise-my-day", model=folder)
