"""Tiny checkpoints the TFLite and ONNX export tests share, written once per session with transformers."""

import pytest

from export_testing import GPT2_OVERRIDES
from testing import TINY_BERT, TINY_LLAMA, make_hf_gpt2, make_hf_model


@pytest.fixture(scope="session")
def gpt2_folder(tmp_path_factory):
    """A random GPT-2 (vocabulary 300) with a byte-level BPE tokenizer trained on Python's docs."""
    from tfllm.training.data import pydoc_texts as load_corpus
    from tfllm.tokenizers import train_byte_level_bpe

    folder = tmp_path_factory.mktemp("export_gpt2")
    make_hf_gpt2(folder, **GPT2_OVERRIDES)
    tokenizer = train_byte_level_bpe(load_corpus(8), vocab_size=GPT2_OVERRIDES["vocab_size"])
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def llama_folder(tmp_path_factory):
    """A random Llama with grouped-query attention (4 query heads, 2 key/value heads)."""
    folder = tmp_path_factory.mktemp("export_llama")
    make_hf_model(folder, "LlamaForCausalLM", TINY_LLAMA)
    return folder


@pytest.fixture(scope="session")
def bert_folders(tmp_path_factory):
    """Random BertModel and BertForSequenceClassification (3 labels) folders: `{"backbone": ..., "classifier": ...}`."""
    root = tmp_path_factory.mktemp("export_bert")
    make_hf_model(root / "backbone", "BertModel", TINY_BERT)
    make_hf_model(root / "classifier", "BertForSequenceClassification", TINY_BERT, num_labels=3)
    return {"backbone": root / "backbone", "classifier": root / "classifier"}

