"""The text2text-generation pipeline against transformers' on a tiny T5 with a SentencePiece tokenizer."""

import pytest
import torch
import transformers

import tfllm
from testing import train_tiny_spiece

INPUTS = ["translate: the function returns a value", "summarize: class definitions", "x"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("t5") / "model"
    train_tiny_spiece(folder)
    tokenizer = transformers.T5TokenizerFast.from_pretrained(folder)
    torch.manual_seed(0)
    config = transformers.T5Config(vocab_size=len(tokenizer), d_model=32, d_ff=64, num_layers=2, num_heads=4, d_kv=8,
                                   feed_forward_proj="gated-gelu", tie_word_embeddings=False, dropout_rate=0.0,
                                   decoder_start_token_id=0, eos_token_id=1, pad_token_id=0)
    model = transformers.T5ForConditionalGeneration(config).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.dim() > 1:
                parameter.normal_(0.0, 0.3)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


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
