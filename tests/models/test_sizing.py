"""Absurd configs are refused from the config alone, before a model is built, naming the fields at fault."""

import time

import pytest

import tfllm
from testing import edited_copy, make_hf_gpt2
from tfllm.checkpoints import CheckpointError
from tfllm.models import auto
from tfllm.models.sizing import MEMORY_LIMIT_VARIABLE, memory_limit

_TINY = dict(vocab_size=99, num_hidden_layers=2, num_attention_heads=4)


def _hf_cases():
    import transformers

    llama = dict(_TINY, hidden_size=32, intermediate_size=64, num_key_value_heads=2)
    t5 = dict(vocab_size=99, d_model=32, d_kv=8, d_ff=37, num_layers=2, num_heads=4)
    return {
        "gpt2": (transformers.GPT2Config(n_layer=2, n_embd=32, n_head=4, vocab_size=99, n_positions=64),
                 transformers.GPT2Model),
        "bert": (transformers.BertConfig(**_TINY, hidden_size=32, intermediate_size=37, max_position_embeddings=64),
                 transformers.BertModel),
        "llama": (transformers.LlamaConfig(**llama), transformers.LlamaModel),
        "llama_biases": (transformers.LlamaConfig(**llama, attention_bias=True, mlp_bias=True), transformers.LlamaModel),
        "qwen2": (transformers.Qwen2Config(**llama), transformers.Qwen2Model),
        "t5": (transformers.T5Config(**t5, num_decoder_layers=3), transformers.T5Model),
        "t5_gated": (transformers.T5Config(**t5, feed_forward_proj="gated-gelu"), transformers.T5Model),
    }


@pytest.mark.parametrize("case", ["gpt2", "bert", "llama", "llama_biases", "qwen2", "t5", "t5_gated"])
def test_parameter_count_matches_transformers(case):
    config, model_class = _hf_cases()[case]
    family = auto.get_family(config.model_type)
    backbone_kwargs, _ = family.config_from_hf(config.to_dict())
    assert sum(family.parameter_terms(backbone_kwargs).values()) == model_class(config).num_parameters()


@pytest.fixture(scope="module")
def gpt2_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("gpt2")
    make_hf_gpt2(folder)
    return folder


@pytest.mark.parametrize(
    "changes, match",
    [
        (dict(vocab_size=10**12), r"the token embedding \(vocab_size=1000000000000 x n_embd=32\): 32,000,000,000,000"),
        (dict(n_embd=10**6, n_inner=None), r"n_layer=2 blocks of n_embd=1000000, n_inner=4000000"),
        (dict(n_layer=100_000), r"n_layer=100000 blocks of n_embd=32, n_inner=64"),
    ],
    ids=["vocab_size", "n_embd", "n_layer"],
)
def test_absurd_config_is_refused_before_building(gpt2_folder, tmp_path, monkeypatch, changes, match):
    monkeypatch.setenv(MEMORY_LIMIT_VARIABLE, "2e9")  # the same limit on every machine
    folder = edited_copy(gpt2_folder, tmp_path / "absurd", **changes)
    start = time.perf_counter()
    with pytest.raises(CheckpointError, match=r"absurd/config.json implies [\d,]+ parameters \([\d.]+ [TGM]B as "
                                              r"float32\), the most in " + match) as info:
        tfllm.AutoModelForCausalLM.from_pretrained(folder)
    assert time.perf_counter() - start < 10
    assert f"more than the 2.0 GB of {MEMORY_LIMIT_VARIABLE}=2e9. Refused before building the model" in str(info.value)


def test_config_larger_than_its_weight_files_is_refused(gpt2_folder, tmp_path, monkeypatch):
    monkeypatch.setenv(MEMORY_LIMIT_VARIABLE, "1e15")
    folder = edited_copy(gpt2_folder, tmp_path / "deep", n_layer=20_000)
    with pytest.raises(CheckpointError, match=r"deep/config.json implies 170,884,768 parameters .* but its weight files hold only "
                                              r"[\d,]+ bytes, less than one per parameter"):
        tfllm.AutoModelForCausalLM.from_pretrained(folder)


@pytest.mark.parametrize("value", [1e12, -5, "big", True])
def test_sizes_must_be_positive_integers(gpt2_folder, tmp_path, value):
    folder = edited_copy(gpt2_folder, tmp_path / "typed", vocab_size=value)
    with pytest.raises(CheckpointError, match=r"typed/config.json: Invalid value for argument `vocab_size`. "
                                              r"Expected a positive integer"):
        tfllm.AutoModelForCausalLM.from_pretrained(folder)


def test_memory_limit_is_the_memory_available(monkeypatch):
    monkeypatch.delenv(MEMORY_LIMIT_VARIABLE, raising=False)
    limit, source = memory_limit()
    with open("/proc/meminfo") as handle:
        available = next(int(line.split()[1]) * 1024 for line in handle if line.startswith("MemAvailable:"))
    assert source == "memory available"
    assert abs(limit - available) < 2**30


def test_memory_limit_override(monkeypatch):
    monkeypatch.setenv(MEMORY_LIMIT_VARIABLE, "12345")
    assert memory_limit() == (12345, f"{MEMORY_LIMIT_VARIABLE}=12345")
    monkeypatch.setenv(MEMORY_LIMIT_VARIABLE, "lots")
    with pytest.raises(ValueError, match=f"Invalid value for environment variable `{MEMORY_LIMIT_VARIABLE}`"):
        memory_limit()
