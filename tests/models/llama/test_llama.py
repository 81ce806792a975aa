"""Llama, Mistral and Qwen2 beyond the family harness (tests/models/test_families.py): the backbone,
checkpoint formats, refused options."""

import copy
import os

import numpy as np
import pytest
import torch

import tfllm
from tfllm.models.llama import LlamaBackbone
from testing import edited_copy, hf_logits, hf_position_ids, left_padded_batch, real_positions_diff

TINY = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            vocab_size=99, max_position_embeddings=48, bos_token_id=97, eos_token_id=98, rms_norm_eps=1e-6)

# name -> (transformers class, config overrides)
VARIANTS = {
    "llama": ("LlamaForCausalLM", dict(tie_word_embeddings=False)),
    "mistral": ("MistralForCausalLM", dict(sliding_window=None)),
    "qwen2": ("Qwen2ForCausalLM", dict(tie_word_embeddings=True)),
    "llama_rope": ("LlamaForCausalLM", dict(rope_theta=500.0, rope_scaling={"rope_type": "linear", "factor": 2.0},
                                            head_dim=16)),
}


# Llama's attention and MLP biases are independent options; not part of the `reference` fixture's run.
BIAS_VARIANTS = {
    "llama_attention_bias": ("LlamaForCausalLM", dict(attention_bias=True, mlp_bias=False)),
    "llama_mlp_bias": ("LlamaForCausalLM", dict(attention_bias=False, mlp_bias=True)),
}


def make_hf_model(folder, name, seed=0):
    """Writes a random transformers model of variant `name` to `folder` and returns it (eval mode)."""
    import transformers

    class_name, overrides = {**VARIANTS, **BIAS_VARIANTS}[name]
    model_class = getattr(transformers, class_name)
    torch.manual_seed(seed)
    config = model_class.config_class(**{**TINY, **overrides}, attn_implementation="eager")
    model = model_class(config).eval()
    # Wider than the default init so greedy choices are decisive; biases and norm scales are
    # randomized too, so a weight loaded into the wrong place shows.
    with torch.no_grad():
        for key, parameter in model.named_parameters():
            if parameter.dim() > 1:
                parameter.normal_(0.0, 0.2)
            elif "norm" in key:
                parameter.normal_(1.0, 0.1)
            else:
                parameter.normal_(0.0, 0.2)
    model.save_pretrained(folder)
    return model


@pytest.fixture(scope="module", params=sorted(VARIANTS))
def reference(request, tmp_path_factory):
    root = tmp_path_factory.mktemp(request.param)
    hf_model = make_hf_model(root / "safetensors", request.param)
    ids, mask = left_padded_batch()
    return dict(name=request.param, root=root, hf_model=hf_model, ids=ids, mask=mask,
                logits=hf_logits(hf_model, ids, mask))


def test_backbone_matches_hidden_states(reference):
    backbone = tfllm.AutoModel.from_pretrained(reference["root"] / "safetensors")
    assert isinstance(backbone, LlamaBackbone)
    ids, mask = reference["ids"], reference["mask"]
    with torch.no_grad():
        hidden = reference["hf_model"].model(
            input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
            position_ids=torch.tensor(hf_position_ids(mask)),
        ).last_hidden_state.numpy()
    ours = backbone({"input_ids": ids, "attention_mask": mask})["last_hidden_state"].numpy()
    assert np.abs((ours - hidden) * mask[:, :, None]).max() < 1e-4


# --- Refusals -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def llama_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("formats") / "llama"
    make_hf_model(folder, "llama")
    return folder


def test_bfloat16_and_sharded_checkpoints_load(llama_folder, tmp_path):
    import transformers

    hf_model = transformers.LlamaForCausalLM.from_pretrained(llama_folder, attn_implementation="eager").eval()
    ids, mask = left_padded_batch()
    half = copy.deepcopy(hf_model).to(torch.bfloat16)
    half.save_pretrained(tmp_path / "bf16")
    widened = hf_logits(half.float(), ids, mask)  # the bf16 weights, computed in float32
    model = tfllm.AutoModelForCausalLM.from_pretrained(tmp_path / "bf16")
    assert real_positions_diff(model({"input_ids": ids, "attention_mask": mask}), widened, mask) < 1e-3

    hf_model.save_pretrained(tmp_path / "sharded", max_shard_size="20KB")
    assert os.path.exists(tmp_path / "sharded" / "model.safetensors.index.json")
    model = tfllm.AutoModelForCausalLM.from_pretrained(tmp_path / "sharded")
    logits = model({"input_ids": ids, "attention_mask": mask})
    assert real_positions_diff(logits, hf_logits(hf_model, ids, mask), mask) < 1e-4


def _edited(folder, tmp_path, **changes):
    return edited_copy(folder, tmp_path / "edited", **changes)


@pytest.mark.parametrize(
    "changes, option",
    [
        (dict(rope_scaling={"rope_type": "llama3", "factor": 8.0}), "rope_scaling"),
        (dict(rope_scaling={"type": "dynamic", "factor": 2.0}), "rope_scaling"),
        (dict(rope_scaling={"rope_type": "yarn", "factor": 2.0}), "rope_scaling"),
        (dict(hidden_act="gelu"), "hidden_act"),
        (dict(model_type="mistral", sliding_window=16), "sliding_window"),
        (dict(model_type="qwen2", use_sliding_window=True, sliding_window=16), "sliding_window"),
    ],
)
def test_unsupported_option_raises_not_implemented_naming_it(llama_folder, tmp_path, changes, option):
    with pytest.raises(NotImplementedError, match=f"`{option}="):
        tfllm.AutoModelForCausalLM.from_pretrained(_edited(llama_folder, tmp_path, **changes))


def test_qwen2_sliding_window_is_ignored_when_not_used(llama_folder, tmp_path):
    config = tfllm.AutoConfig.from_pretrained(
        _edited(llama_folder, tmp_path, model_type="qwen2", use_sliding_window=False, sliding_window=16)
    )
    assert config.backbone_kwargs["variant"] == "qwen2"
    kwargs = config.backbone_kwargs
    assert kwargs["attention_bias"] and not kwargs["attention_output_bias"] and not kwargs["mlp_bias"]


def test_sliding_window_as_long_as_the_positions_is_accepted(llama_folder, tmp_path):
    config = tfllm.AutoConfig.from_pretrained(_edited(llama_folder, tmp_path, model_type="mistral", sliding_window=48))
    assert config.backbone_kwargs["variant"] == "mistral"


def test_saving_a_variant_with_impossible_biases_is_refused(tmp_path):
    backbone = LlamaBackbone(vocabulary_size=10, num_layers=1, num_heads=2, hidden_dim=8, intermediate_dim=16,
                             variant="mistral", attention_bias=True)
    backbone.build()
    with pytest.raises(ValueError, match="`mistral`.*attention_bias=False"):
        backbone.save_pretrained(tmp_path / "out")


@pytest.mark.parametrize("name", sorted(BIAS_VARIANTS))
def test_attention_and_mlp_biases_are_independent_as_in_transformers(name, tmp_path):
    import transformers

    hf_model = make_hf_model(tmp_path / "in", name)
    ids, mask = left_padded_batch()
    model = tfllm.AutoModelForCausalLM.from_pretrained(tmp_path / "in")
    block = model.backbone.transformer_layers[0]
    assert (block.attention.qkv.bias is not None) == hf_model.config.attention_bias
    assert (block.attention.output_dense.bias is not None) == hf_model.config.attention_bias
    assert (block.ffn.up.bias is not None) == hf_model.config.mlp_bias
    expected = hf_logits(hf_model, ids, mask)
    assert real_positions_diff(model({"input_ids": ids, "attention_mask": mask}), expected, mask) < 1e-4
    model.save_pretrained(tmp_path / "out")
    reloaded = transformers.LlamaForCausalLM.from_pretrained(tmp_path / "out").eval()
    assert (reloaded.config.attention_bias, reloaded.config.mlp_bias) == (hf_model.config.attention_bias,
                                                                         hf_model.config.mlp_bias)
    assert real_positions_diff(hf_logits(reloaded, ids, mask), expected, mask) < 1e-4


def test_saving_llama_with_a_query_bias_but_no_output_bias_is_refused(tmp_path):
    backbone = LlamaBackbone(vocabulary_size=10, num_layers=1, num_heads=2, hidden_dim=8, intermediate_dim=16,
                             attention_bias=True)
    backbone.build()
    with pytest.raises(ValueError, match="attention_bias covers the query/key/value and output projections"):
        backbone.save_pretrained(tmp_path / "out")


def test_bad_variant_is_refused_by_name():
    with pytest.raises(ValueError, match="`variant`"):
        LlamaBackbone(vocabulary_size=10, num_layers=1, num_heads=2, hidden_dim=8, intermediate_dim=16, variant="gemma")
