"""GPT-2 beyond the family harness (tests/models/test_families.py): checkpoints in every format, padding,
sampling, the backbone, refusals."""

import json
import os
import shutil

import numpy as np
import pytest
import torch

import tfllm
from tfllm.checkpoints import CheckpointError
from testing import (
    TINY_GPT2,
    hf_logits,
    hf_position_ids,
    left_padded_batch,
    make_hf_gpt2,
    real_positions_diff,
)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """A random transformers GPT-2 written as safetensors, pytorch_model.bin and tf_model.h5."""
    root = tmp_path_factory.mktemp("gpt2")
    hf_model = make_hf_gpt2(root / "safetensors")
    hf_model.save_pretrained(root / "bin", safe_serialization=False)
    hf_model.save_pretrained(root / "sharded", max_shard_size="20KB")
    assert os.path.exists(root / "sharded" / "model.safetensors.index.json")
    import transformers  # TF classes only here: importing them switches tf.keras to Keras 2

    tf_model = transformers.TFGPT2LMHeadModel.from_pretrained(root / "bin", from_pt=True)
    tf_model.save_pretrained(root / "h5")
    assert os.path.exists(root / "h5" / "tf_model.h5")
    tf_model.save_pretrained(root / "tf_safetensors", safe_serialization=True)
    ids, mask = left_padded_batch()
    logits = hf_logits(hf_model, ids, mask)
    return dict(root=root, hf_model=hf_model, ids=ids, mask=mask, logits=logits)


@pytest.fixture(scope="module")
def model(reference):
    return tfllm.AutoModelForCausalLM.from_pretrained(reference["root"] / "safetensors")


def _real_positions_diff(ours, reference):
    return real_positions_diff(ours, reference["logits"], reference["mask"])


@pytest.mark.parametrize("fmt", ["safetensors", "bin", "sharded", "h5", "tf_safetensors"])
def test_logits_match_transformers_with_left_padding(reference, fmt):
    model = tfllm.AutoModelForCausalLM.from_pretrained(reference["root"] / fmt)
    logits = model({"input_ids": reference["ids"], "attention_mask": reference["mask"]})
    assert logits.shape == reference["logits"].shape
    assert _real_positions_diff(logits, reference) < 1e-4


def test_padded_rows_match_unpadded_single_prompts(model, reference):
    ids, mask = reference["ids"], reference["mask"]
    batched = model({"input_ids": ids, "attention_mask": mask}).numpy()
    for row in range(len(ids)):
        real = ids[row][mask[row] == 1][None]
        alone = model({"input_ids": real}).numpy()[0]
        np.testing.assert_allclose(batched[row][mask[row] == 1], alone, atol=1e-5)


def test_generate_with_xla_matches_eager_loop(model, reference):
    ids, mask = reference["ids"], reference["mask"]
    plain = model.generate(ids, attention_mask=mask, max_new_tokens=6).numpy()
    compiled = model.generate(ids, attention_mask=mask, max_new_tokens=6, jit_compile=True).numpy()
    np.testing.assert_array_equal(plain, compiled)


def test_seeded_sampling_repeats_and_seeds_differ(model, reference):
    ids, mask = reference["ids"], reference["mask"]
    kwargs = dict(attention_mask=mask, max_new_tokens=16, do_sample=True, top_k=20, top_p=0.9, temperature=1.5)
    first = model.generate(ids, seed=7, **kwargs).numpy()
    again = model.generate(ids, seed=7, **kwargs).numpy()
    other = model.generate(ids, seed=8, **kwargs).numpy()
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)


def test_right_padded_prompts_are_left_aligned(model, reference):
    ids, mask = reference["ids"], reference["mask"]
    right_ids = np.stack([np.concatenate([r[m == 1], r[m == 0]]) for r, m in zip(ids, mask)])
    right_mask = np.sort(mask, axis=1)[:, ::-1]
    left = model.generate(ids, attention_mask=mask, max_new_tokens=5).numpy()
    right = model.generate(right_ids, attention_mask=right_mask, max_new_tokens=5).numpy()
    np.testing.assert_array_equal(left, right)


def test_backbone_loads_from_lm_checkpoint_and_matches_hidden_states(reference):
    backbone = tfllm.AutoModel.from_pretrained(reference["root"] / "safetensors")
    assert isinstance(backbone, tfllm.models.GPT2Backbone)
    ids, mask = reference["ids"], reference["mask"]
    with torch.no_grad():
        hidden = reference["hf_model"].transformer(
            input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
            position_ids=torch.tensor(hf_position_ids(mask)),
        ).last_hidden_state.numpy()
    ours = backbone({"input_ids": ids, "attention_mask": mask})["last_hidden_state"].numpy()
    assert np.abs((ours - hidden) * mask[:, :, None]).max() < 1e-4


# --- Refusals -------------------------------------------------------------------------------------


def _copy(reference, tmp_path, fmt="safetensors"):
    target = tmp_path / fmt
    shutil.copytree(reference["root"] / fmt, target)
    return target


def test_truncated_checkpoint_is_refused_naming_the_file(reference, tmp_path):
    folder = _copy(reference, tmp_path)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1000])
    with pytest.raises(CheckpointError, match="model.safetensors"):
        tfllm.AutoModelForCausalLM.from_pretrained(folder)


def test_shape_mismatch_is_refused_naming_the_key(reference, tmp_path):
    folder = _copy(reference, tmp_path)
    config = json.loads((folder / "config.json").read_text())
    config["n_inner"] = 48  # the checkpoint's MLP is 64 wide
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"h\.0\.mlp\.c_fc\.weight"):
        tfllm.AutoModelForCausalLM.from_pretrained(folder)


def test_unknown_model_type_lists_supported(reference, tmp_path):
    folder = _copy(reference, tmp_path)
    config = json.loads((folder / "config.json").read_text())
    config["model_type"] = "mamba"
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="'mamba'.*supports: .*gpt2"):
        tfllm.AutoModelForCausalLM.from_pretrained(folder)


def test_unsupported_option_raises_not_implemented_naming_it(reference, tmp_path):
    folder = _copy(reference, tmp_path)
    config = json.loads((folder / "config.json").read_text())
    config["scale_attn_by_inverse_layer_idx"] = True
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(NotImplementedError, match="scale_attn_by_inverse_layer_idx"):
        tfllm.AutoModelForCausalLM.from_pretrained(folder)


@pytest.mark.parametrize(
    "kwargs, argument",
    [
        (dict(max_new_tokens=0), "max_new_tokens"),
        (dict(max_new_tokens=48), "max_new_tokens"),  # 7 prompt tokens + 48 > 48 positions
        (dict(top_p=0.0), "top_p"),
        (dict(top_p=1.5), "top_p"),
        (dict(temperature=0.0), "temperature"),
        (dict(top_k=-1), "top_k"),
    ],
)
def test_generate_rejects_bad_arguments_by_name(model, reference, kwargs, argument):
    with pytest.raises(ValueError, match=f"`{argument}`"):
        model.generate(reference["ids"], attention_mask=reference["mask"], **kwargs)


def test_prompt_longer_than_positions_is_refused(model):
    with pytest.raises(ValueError, match="`max_new_tokens`.*48 positions"):
        model.generate(np.ones((1, 48), "int32"), max_new_tokens=1)


def test_bad_input_ids_are_refused_by_name(model):
    with pytest.raises(ValueError, match="`input_ids`"):
        model.generate(np.ones((4,), "int32"), max_new_tokens=1)


def test_auto_config_reads_the_family_and_its_options(reference):
    config = tfllm.AutoConfig.from_pretrained(reference["root"] / "safetensors")
    assert config.model_type == "gpt2"
    assert config.n_embd == 32
    assert config.backbone_kwargs["hidden_dim"] == 32 and config.backbone_kwargs["intermediate_dim"] == 64
    assert config.task_kwargs["eos_token_id"] == TINY_GPT2["eos_token_id"]


def test_mixed_precision_forward_is_close_to_float32(reference):
    batch = {"input_ids": reference["ids"], "attention_mask": reference["mask"]}
    backbone = tfllm.models.GPT2Backbone.from_pretrained(reference["root"] / "safetensors")
    half = tfllm.models.GPT2Backbone(**{**backbone.get_config(), "dtype": "mixed_bfloat16"})
    half(batch)
    half.set_weights(backbone.get_weights())
    out = half(batch)["last_hidden_state"]
    assert out.dtype == "bfloat16"
    diff = np.abs((np.asarray(out, "float32") - backbone(batch)["last_hidden_state"].numpy()) * reference["mask"][:, :, None])
    assert diff.max() < 0.1
