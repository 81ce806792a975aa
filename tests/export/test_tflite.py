"""`tfllm.export.tflite` and `LiteRTGenerator`: greedy tokens equal to Keras, quantization, atomic writes."""

import dataclasses
import importlib
import os

import numpy as np
import pytest

import tfllm
import tfllm.export
from export_testing import CACHE_LENGTH, PREFILL_LENGTH, PROMPTS, greedy_prompts, keras_greedy
from tfllm.export import signatures as sig
from tfllm.export import ExportVerificationError, LiteRTGenerator

tflite_module = importlib.import_module("tfllm.export.tflite")  # `tfllm.export.tflite` is the function

NEW_TOKENS = 4


@pytest.fixture(scope="module")
def gpt2(gpt2_folder):
    return tfllm.AutoModelForCausalLM.from_pretrained(gpt2_folder), tfllm.AutoTokenizer.from_pretrained(gpt2_folder)


def _export(model, folder, quantize):
    path = folder / f"model_{quantize or 'float32'}.tflite"
    return tfllm.export.tflite(model, path, quantize=quantize, cache_length=CACHE_LENGTH, prefill_length=PREFILL_LENGTH)


@pytest.fixture(scope="module")
def gpt2_fp32(gpt2, tmp_path_factory):
    return _export(gpt2[0], tmp_path_factory.mktemp("tflite"), None)


@pytest.fixture(scope="module")
def gpt2_float16(gpt2, tmp_path_factory):
    return _export(gpt2[0], tmp_path_factory.mktemp("tflite"), "float16")


@pytest.fixture(scope="module")
def gpt2_int8(gpt2, tmp_path_factory):
    return _export(gpt2[0], tmp_path_factory.mktemp("tflite"), "dynamic_int8")


def test_signatures_have_the_litert_layout(gpt2_fp32):
    generator = LiteRTGenerator(gpt2_fp32)
    caches = sig.kv_cache_names(2)
    assert caches == ["kv_cache_k_0", "kv_cache_v_0", "kv_cache_k_1", "kv_cache_v_1"]
    signatures = generator.interpreter.get_signature_list()
    assert set(signatures) == {sig.PREFILL, sig.DECODE}
    for name, length in ((sig.PREFILL, PREFILL_LENGTH), (sig.DECODE, 1)):
        assert set(signatures[name]["inputs"]) == {sig.TOKENS, sig.INPUT_POS, *caches}
        assert set(signatures[name]["outputs"]) == {sig.LOGITS, *caches}
        runner = generator.interpreter.get_signature_runner(name)
        inputs, outputs = runner.get_input_details(), runner.get_output_details()
        assert tuple(inputs[sig.TOKENS]["shape"]) == (1, length) and inputs[sig.TOKENS]["dtype"] == np.int32
        assert tuple(inputs[sig.INPUT_POS]["shape"]) == (length,)
        assert tuple(outputs[sig.LOGITS]["shape"]) == (1, length, 300)
        for cache in caches:  # (1, cache_length, kv_heads, head_dim)
            assert tuple(inputs[cache]["shape"]) == tuple(outputs[cache]["shape"]) == (1, CACHE_LENGTH, 4, 8)


def test_only_builtin_ops_and_runs_without_flex(gpt2_fp32, gpt2_int8):
    for path in (gpt2_fp32, gpt2_int8):
        ops = tflite_module.op_names(path)
        assert "FULLY_CONNECTED" in ops
        assert not [op for op in ops if op.startswith("Flex") or op == "CUSTOM"], ops
        # ai_edge_litert has no Flex delegate: a Flex op would fail here.
        assert len(LiteRTGenerator(path).generate_ids([1, 2, 3], max_new_tokens=2, eos_token_id=-1)) == 5


@pytest.mark.parametrize("quantize", [None, "float16"])
def test_greedy_tokens_equal_keras(gpt2, gpt2_fp32, gpt2_float16, quantize):
    model = gpt2[0]
    generator = LiteRTGenerator(gpt2_fp32 if quantize is None else gpt2_float16)
    for prompt in greedy_prompts():  # includes prompts fed in several prefill windows
        assert generator.generate_ids(prompt, NEW_TOKENS, eos_token_id=-1) == keras_greedy(model, prompt, NEW_TOKENS)


def test_prefill_logits_match_keras(gpt2, gpt2_fp32):
    model = gpt2[0]
    prompt = greedy_prompts()[-1]
    logits, _ = LiteRTGenerator(gpt2_fp32).prefill(prompt)
    np.testing.assert_allclose(logits, np.asarray(model(np.array([prompt])))[0], atol=1e-4)


def test_generate_text_equals_keras_text(gpt2, gpt2_fp32):
    model, tokenizer = gpt2
    texts = LiteRTGenerator(gpt2_fp32, tokenizer).generate(list(PROMPTS), max_new_tokens=6)
    single = LiteRTGenerator(gpt2_fp32, tokenizer).generate(PROMPTS[0], max_new_tokens=6)
    expected = []
    for prompt in PROMPTS:
        ids = model.generate(np.array([tokenizer.encode(prompt)]), max_new_tokens=6)
        expected.append(tokenizer.decode(np.asarray(ids)[0], skip_special_tokens=True))
    assert texts == expected and single == expected[0]


def test_dynamic_int8_is_smaller_and_agrees(gpt2, gpt2_fp32, gpt2_float16, gpt2_int8):
    sizes = {name: os.path.getsize(p) for name, p in (("fp32", gpt2_fp32), ("float16", gpt2_float16), ("int8", gpt2_int8))}
    report = tflite_module.verify_tflite(gpt2_int8, gpt2[0])
    print(f"tiny GPT-2 TFLite sizes {sizes}; int8/fp32 {sizes['int8'] / sizes['fp32']:.2f}, float16/fp32 "
          f"{sizes['float16'] / sizes['fp32']:.2f}; int8 next-token agreement {report['next_token_agreement']:.3f}")
    assert sizes["int8"] < 0.85 * sizes["fp32"] and sizes["float16"] < 0.85 * sizes["fp32"]
    assert report["finite"] and report["next_token_agreement"] >= 0.7


def test_llama_with_grouped_query_attention(llama_folder, tmp_path):
    model = tfllm.AutoModelForCausalLM.from_pretrained(llama_folder)
    path = tfllm.export.tflite(model, tmp_path / "llama.tflite", cache_length=CACHE_LENGTH, prefill_length=PREFILL_LENGTH)
    generator = LiteRTGenerator(path)
    assert generator.cache_shapes["kv_cache_v_1"] == (1, CACHE_LENGTH, 2, 8)  # 2 key/value heads
    for prompt in greedy_prompts(vocabulary_size=99):
        assert generator.generate_ids(prompt, NEW_TOKENS, eos_token_id=-1) == keras_greedy(model, prompt, NEW_TOKENS)


@pytest.mark.parametrize("task", ["backbone", "classifier"])
def test_bert_encoder_matches_keras(bert_folders, tmp_path, task):
    from ai_edge_litert.interpreter import Interpreter

    from tfllm.export.steps import keras_forward

    auto = tfllm.AutoModel if task == "backbone" else tfllm.AutoModelForSequenceClassification
    model = auto.from_pretrained(bert_folders[task])
    path = tfllm.export.tflite(model, tmp_path / "bert.tflite", sequence_length=12, batch_size=2)
    runner = Interpreter(model_path=path).get_signature_runner(sig.ENCODE)
    ids = np.array([[2, 5, 9, 14, 7, 3] + [0] * 6, [2, 8, 8, 3] + [0] * 8], np.int32)
    mask = (ids > 0).astype(np.int32)
    outputs = runner(input_ids=ids, attention_mask=mask)
    expected = keras_forward(model, ids, mask)
    names = {sig.SEQUENCE_OUTPUT, sig.POOLED_OUTPUT} if task == "backbone" else {sig.LOGITS}
    assert set(outputs) == set(expected) == names
    for name in names:
        np.testing.assert_allclose(outputs[name], expected[name], atol=1e-4)


def test_prompt_longer_than_the_cache_is_refused(gpt2_fp32):
    with pytest.raises(ValueError, match=r"`max_new_tokens`.*cache of 30 positions"):
        LiteRTGenerator(gpt2_fp32).generate_ids(list(range(28)), max_new_tokens=3)
    with pytest.raises(ValueError, match=r"`prompt_ids`.*between 1 and 30 tokens"):
        LiteRTGenerator(gpt2_fp32).prefill(list(range(31)))


def test_existing_file_is_refused_without_overwrite(gpt2, tmp_path):
    # The one overwrite rule: a single-file export refuses an existing file unless overwrite=True.
    path = tmp_path / "model.tflite"
    path.write_bytes(b"old")
    with pytest.raises(FileExistsError, match=r"model\.tflite.*exists|overwrite=True"):
        tfllm.export.tflite(gpt2[0], path, cache_length=CACHE_LENGTH, prefill_length=PREFILL_LENGTH)
    assert path.read_bytes() == b"old"


def test_failed_conversion_leaves_nothing(gpt2, tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("converter exploded")

    monkeypatch.setattr(tflite_module, "convert", broken)
    with pytest.raises(RuntimeError, match="converter exploded"):
        tfllm.export.tflite(gpt2[0], tmp_path / "model.tflite", cache_length=CACHE_LENGTH, prefill_length=PREFILL_LENGTH)
    assert list(tmp_path.iterdir()) == []


def test_file_that_does_not_reproduce_the_model_is_not_published(gpt2, gpt2_float16, tmp_path, monkeypatch):
    # A float16 file presented as float32: its logits are off by ~1e-3, which the float32 check refuses.
    path = tmp_path / "model.tflite"
    path.write_bytes(b"old")
    with open(gpt2_float16, "rb") as f:
        float16_bytes = f.read()
    monkeypatch.setattr(tflite_module, "convert", lambda *args, **kwargs: float16_bytes)
    with pytest.raises(ExportVerificationError, match="logits differ"):
        tfllm.export.tflite(gpt2[0], path, cache_length=CACHE_LENGTH, prefill_length=PREFILL_LENGTH, overwrite=True)
    assert path.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["model.tflite"]


def test_bad_arguments_are_refused_by_name(gpt2, llama_folder, tmp_path):
    model = gpt2[0]
    with pytest.raises(ValueError, match=r"`quantize`.*Received: quantize='int4'"):
        tfllm.export.tflite(model, tmp_path / "m.tflite", quantize="int4")
    with pytest.raises(NotImplementedError, match="int8_weight_only.*dynamic_int8"):
        tfllm.export.tflite(model, tmp_path / "m.tflite", quantize="int8_weight_only")
    with pytest.raises(ValueError, match=r"`cache_length`.*64 positions"):
        tfllm.export.tflite(model, tmp_path / "m.tflite", cache_length=65)
    with pytest.raises(ValueError, match=r"`prefill_length`.*cache_length \(16\)"):
        tfllm.export.tflite(model, tmp_path / "m.tflite", cache_length=16, prefill_length=17)
    with pytest.raises(ValueError, match=r"`sequence_length`.*applies to encoders"):
        tfllm.export.tflite(model, tmp_path / "m.tflite", sequence_length=16)
    assert list(tmp_path.iterdir()) == []


def test_unsupported_model_names_its_formats(gpt2_folder, tmp_path):
    backbone = tfllm.AutoModel.from_pretrained(gpt2_folder)  # a decoder backbone: no LM head to export
    with pytest.raises(NotImplementedError, match=r"GPT2Backbone.*supports: none yet"):
        tfllm.export.tflite(backbone, tmp_path / "m.tflite")


def test_litert_generator_refuses_an_encoder_file(bert_folders, tmp_path):
    path = tfllm.export.tflite(tfllm.AutoModel.from_pretrained(bert_folders["backbone"]), tmp_path / "b.tflite",
                               sequence_length=8, verify=False)
    with pytest.raises(ValueError, match=r"`prefill` and `decode`.*\['encode'\]"):
        LiteRTGenerator(path)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The quickstart's small GPT-2, trained 4 epochs on Python's docs (loss ~6.2 → ~5.1)."""
    from tfllm import quickstart

    folder = tmp_path_factory.mktemp("trained") / "model"
    config = dataclasses.replace(quickstart.QuickstartConfig.small(), epochs=4)
    quickstart.run(folder, config, progress="none")
    return tfllm.AutoModelForCausalLM.from_pretrained(folder), tfllm.AutoTokenizer.from_pretrained(folder)


@pytest.mark.slow
def test_dynamic_int8_of_a_trained_model_agrees_with_float32(trained, tmp_path):
    from tfllm.training.data import pydoc_texts as load_corpus

    model, tokenizer = trained
    prompts = [tokenizer.encode(text)[:48] for text in load_corpus(40)[20:40]]  # topics it did not train on
    fp32 = tfllm.export.tflite(model, tmp_path / "fp32.tflite", cache_length=64)
    int8 = tfllm.export.tflite(model, tmp_path / "int8.tflite", quantize="dynamic_int8", cache_length=64)
    report = tflite_module.verify_tflite(int8, model, prompts=prompts)
    ratio = os.path.getsize(int8) / os.path.getsize(fp32)
    print(f"trained quickstart-small GPT-2: dynamic_int8 next-token agreement with float32 "
          f"{report['next_token_agreement']:.3f} over {sum(map(len, prompts))} positions; size ratio {ratio:.2f}")
    assert report["next_token_agreement"] >= 0.9
    assert ratio < 0.5


def test_file_gets_the_usual_permissions(gpt2_fp32):
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(gpt2_fp32).st_mode & 0o777 == 0o666 & ~umask  # not the temporary file's private 0600
