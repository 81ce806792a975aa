"""`tfllm.export.onnx` and `OnnxGenerator`: onnxruntime against Keras, file names, atomic writes."""

import importlib
import os

import numpy as np
import pytest

import tfllm
import tfllm.export
from export_testing import CACHE_LENGTH, PREFILL_LENGTH, PROMPTS, greedy_prompts, keras_greedy
from testing import left_padded_batch, real_positions_diff
from tfllm.export import signatures as sig
from tfllm.export import ExportVerificationError, OnnxGenerator

onnx_module = importlib.import_module("tfllm.export.onnx")  # `tfllm.export.onnx` is the function

NEW_TOKENS = 4


def _session(path):
    import onnxruntime

    return onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def gpt2(gpt2_folder, tmp_path_factory):
    model = tfllm.AutoModelForCausalLM.from_pretrained(gpt2_folder)
    tokenizer = tfllm.AutoTokenizer.from_pretrained(gpt2_folder)
    path = tfllm.export.onnx(model, tmp_path_factory.mktemp("onnx") / "gpt2", cache_length=CACHE_LENGTH,
                             prefill_length=PREFILL_LENGTH)
    return model, tokenizer, path


def test_files_inputs_and_outputs(gpt2):
    _, _, path = gpt2
    assert sorted(os.listdir(path)) == ["decode.onnx", "logits.onnx", "prefill.onnx"]
    logits = _session(f"{path}/logits.onnx")
    assert [i.name for i in logits.get_inputs()] == [sig.INPUT_IDS, sig.ATTENTION_MASK]
    assert [o.name for o in logits.get_outputs()] == [sig.LOGITS]
    caches = sig.kv_cache_names(2)
    for name, length in ((sig.PREFILL, PREFILL_LENGTH), (sig.DECODE, 1)):
        session = _session(f"{path}/{sig.onnx_file(name)}")
        inputs = {i.name: i.shape for i in session.get_inputs()}
        assert inputs == {sig.TOKENS: [1, length], sig.INPUT_POS: [length], **{c: [1, CACHE_LENGTH, 4, 8] for c in caches}}
        outputs = {o.name for o in session.get_outputs()}
        assert outputs == {sig.LOGITS} | {sig.kv_cache_output_name(kind, layer) for layer in range(2) for kind in "kv"}


def test_logits_graph_matches_keras_on_a_padded_batch(gpt2):
    model, _, path = gpt2
    ids, mask = left_padded_batch(vocab_size=300, lengths=(9, 4, 1))
    ids, mask = ids.astype(np.int32), mask.astype(np.int32)
    logits = _session(f"{path}/logits.onnx").run(None, {sig.INPUT_IDS: ids, sig.ATTENTION_MASK: mask})[0]
    expected = np.asarray(model({"input_ids": ids, "attention_mask": mask}))
    assert real_positions_diff(logits, expected, mask) <= 1e-4


def test_greedy_tokens_equal_keras(gpt2):
    model, _, path = gpt2
    generator = OnnxGenerator(path)
    for prompt in greedy_prompts():
        assert generator.generate_ids(prompt, NEW_TOKENS, eos_token_id=-1) == keras_greedy(model, prompt, NEW_TOKENS)


def test_generate_text_equals_keras_text(gpt2):
    model, tokenizer, path = gpt2
    texts = OnnxGenerator(path, tokenizer).generate(list(PROMPTS), max_new_tokens=6)
    expected = [
        tokenizer.decode(np.asarray(model.generate(np.array([tokenizer.encode(p)]), max_new_tokens=6))[0],
                         skip_special_tokens=True)
        for p in PROMPTS
    ]
    assert texts == expected


def test_llama_with_grouped_query_attention(llama_folder, tmp_path):
    model = tfllm.AutoModelForCausalLM.from_pretrained(llama_folder)
    path = tfllm.export.onnx(model, tmp_path / "llama", cache_length=CACHE_LENGTH, prefill_length=PREFILL_LENGTH)
    generator = OnnxGenerator(path)
    assert generator.cache_shapes["kv_cache_k_0"] == (1, CACHE_LENGTH, 2, 8)
    for prompt in greedy_prompts(vocabulary_size=99):
        assert generator.generate_ids(prompt, NEW_TOKENS, eos_token_id=-1) == keras_greedy(model, prompt, NEW_TOKENS)
    ids, mask = left_padded_batch(vocab_size=99)
    ids, mask = ids.astype(np.int32), mask.astype(np.int32)
    logits = _session(f"{path}/logits.onnx").run(None, {sig.INPUT_IDS: ids, sig.ATTENTION_MASK: mask})[0]
    assert real_positions_diff(logits, np.asarray(model({"input_ids": ids, "attention_mask": mask})), mask) <= 1e-4


def test_bert_encoder_with_exact_gelu_matches_keras(bert_folders, tmp_path):
    from tfllm.export.steps import keras_forward

    model = tfllm.AutoModel.from_pretrained(bert_folders["backbone"])
    assert model.activation == "gelu"  # exact GELU, written with erf (ENVIRONMENT.md trap 5)
    path = tfllm.export.onnx(model, tmp_path / "bert")
    session = _session(f"{path}/{sig.onnx_file(sig.ENCODE)}")
    for shape in ((1, 5), (3, 11)):  # any batch and length
        ids = np.random.default_rng(0).integers(1, 99, shape).astype(np.int32)
        mask = np.ones_like(ids)
        mask[-1, 3:] = 0
        outputs = dict(zip([o.name for o in session.get_outputs()],
                           session.run(None, {sig.INPUT_IDS: ids, sig.ATTENTION_MASK: mask})))
        expected = keras_forward(model, ids, mask)
        assert set(outputs) == {sig.SEQUENCE_OUTPUT, sig.POOLED_OUTPUT}
        for name, value in expected.items():
            np.testing.assert_allclose(outputs[name], value, atol=1e-4)


def test_existing_folder_is_refused_without_overwrite(gpt2, tmp_path):
    (tmp_path / "out").mkdir()
    with pytest.raises(FileExistsError, match=r"overwrite=True"):
        tfllm.export.onnx(gpt2[0], tmp_path / "out")  # the default: single-file exports never overwrite


def test_failed_conversion_leaves_nothing_and_keeps_the_old_export(gpt2, tmp_path, monkeypatch):
    import tf2onnx

    old = tmp_path / "out"
    old.mkdir()
    (old / "logits.onnx").write_bytes(b"old")

    def broken(*args, **kwargs):
        raise RuntimeError("tf2onnx exploded")

    monkeypatch.setattr(tf2onnx.convert, "from_function", broken)
    with pytest.raises(RuntimeError, match="tf2onnx exploded"):
        tfllm.export.onnx(gpt2[0], old, cache_length=CACHE_LENGTH, prefill_length=PREFILL_LENGTH, overwrite=True)
    with pytest.raises(RuntimeError, match="tf2onnx exploded"):
        tfllm.export.onnx(gpt2[0], tmp_path / "new", cache_length=CACHE_LENGTH, prefill_length=PREFILL_LENGTH)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert (old / "logits.onnx").read_bytes() == b"old"


def test_captured_tensors_as_extra_inputs_are_refused():
    import types

    proto = types.SimpleNamespace(graph=types.SimpleNamespace(
        input=[types.SimpleNamespace(name=n) for n in (sig.INPUT_IDS, sig.ATTENTION_MASK, "const_captured")]))
    signature = [{sig.INPUT_IDS: None, sig.ATTENTION_MASK: None}]
    with pytest.raises(ExportVerificationError, match="const_captured"):
        onnx_module._check_inputs(proto, sig.LOGITS, signature)


def test_bad_arguments_are_refused(gpt2, gpt2_folder, tmp_path):
    with pytest.raises(ValueError, match=r"`opset`"):
        tfllm.export.onnx(gpt2[0], tmp_path / "x", opset=9)
    with pytest.raises(NotImplementedError, match=r"GPT2Backbone.*supports: none yet"):
        tfllm.export.onnx(tfllm.AutoModel.from_pretrained(gpt2_folder), tmp_path / "x")
    with pytest.raises(ValueError, match=r"prefill.onnx"):
        OnnxGenerator(tmp_path)
    assert list(tmp_path.iterdir()) == []
