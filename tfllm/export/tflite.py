"""`tflite`: a LiteRT (TFLite) file with a KV cache (decoders) or a fixed-length forward (encoders)."""

import logging
import os
import tempfile
import time

import keras
import tensorflow as tf

from tfllm.errors import check_choice, check_float, check_int, invalid_argument
from tfllm.export import signatures as sig
from tfllm.export import steps
from tfllm.export.litert_generator import LiteRTGenerator
from tfllm.export.verify import ExportVerificationError
from tfllm.export.versions import atomic_file
from tfllm.progress import Progress

logger = logging.getLogger(__name__)

QUANTIZATIONS = (None, "float16", "dynamic_int8", "int8_weight_only")
# Quantizations whose greedy tokens must equal the Keras model's; the int8 ones are held to an agreement.
EXACT_QUANTIZATIONS = (None, "float16")
DEFAULT_MIN_AGREEMENT = 0.8  # a floor that catches broken files; a trained model reaches ~0.99
DEFAULT_MIN_COSINE = 0.99


def tflite(model, path, *, quantize=None, cache_length=None, prefill_length=None, sequence_length=None,
           batch_size=None, overwrite=False, verify=True, verify_prompts=None, min_agreement=DEFAULT_MIN_AGREEMENT,
           progress="none"):
    """Converts `model` to a LiteRT flatbuffer at `path` (TFLite builtin ops only, no Flex).

    A causal LM gets the two signatures LiteRT-LM and ai-edge-torch use (see `tfllm.export.steps`):
    `prefill` (`tokens` `(1, prefill_length)`, `input_pos` `(prefill_length,)`, every layer's
    `kv_cache_k_<i>` / `kv_cache_v_<i>` `(1, cache_length, num_key_value_heads, head_dim)`) and
    `decode` (`tokens` `(1, 1)`, `input_pos` `(1,)`, the caches); both return `logits` `(1, length,
    vocabulary_size)` and the updated caches under the same names. Drive it with `LiteRTGenerator`.
    A BERT model gets one signature `encode`: `input_ids`, `attention_mask` `(batch_size,
    sequence_length)` → `sequence_output` and `pooled_output` (backbone) or `logits` (task head).

    The file is written under a temporary name and checked before it appears at `path`: with
    `quantize` None or "float16" the greedy tokens must equal `model.generate`'s (and float32 logits
    be within 1e-4); "dynamic_int8" must agree with the Keras model's next token on at least
    `min_agreement` of the prompt positions. A failed check raises `ExportVerificationError` and
    leaves nothing at `path`.

    Args:
        model: a tfllm causal LM (`AutoModelForCausalLM`) or BERT model.
        path: the `.tflite` file to write.
        quantize: None (float32), "float16" (float16 weights), "dynamic_int8" (int8 weights,
            dynamic-range int8 kernels). "int8_weight_only" raises NotImplementedError (the
            TF 2.21 converter has no weight-only int8 mode).
        cache_length: positions of the KV cache (prompt + new tokens). Defaults to the model's
            positions, at most 256.
        prefill_length: tokens one `prefill` call takes. Defaults to `min(cache_length, 64)`.
        sequence_length: encoders: the fixed input length. Defaults to the model's positions, at most 128.
        batch_size: encoders: the fixed batch size. Defaults to 1.
        overwrite: replace an existing file; without it an existing `path` is refused before any work.
        verify: run the check against the Keras model before the file appears.
        verify_prompts: token-id lists for the check. Defaults to random ids, one prompt longer than
            a prefill window.
        min_agreement: the share of prompt positions where an int8 file's next token must equal the
            Keras model's (a floor against broken files; a trained model reaches ~0.99).
        progress: "auto", "bar", "line" or "none": report the steps (trace, convert, write, verify);
            see `tfllm.progress`.

    Returns:
        `path`, as a string.

    Example:
    >>> tfllm.export.tflite(model, "gpt2.tflite", quantize="dynamic_int8", cache_length=128)
    >>> tfllm.export.LiteRTGenerator("gpt2.tflite", tokenizer).generate("The", max_new_tokens=20)
    """
    start = time.time()
    kind = steps.export_kind(model)
    if kind is None:
        raise steps.unsupported(model, "TFLite")
    _check_quantize(quantize)
    min_agreement = check_float("min_agreement", min_agreement, low=0.0, high=1.0)
    steps.check_arguments_apply(kind, cache_length=cache_length, prefill_length=prefill_length,
                                sequence_length=sequence_length, batch_size=batch_size)
    if kind == steps.STEPS:
        shapes = steps.step_shapes(model, cache_length, prefill_length)
        endpoints = steps.step_functions(model, shapes)
    else:
        sequence_length = _encoder_length(model, sequence_length)
        batch_size = check_int("batch_size", 1 if batch_size is None else batch_size, minimum=1)
        endpoints = {sig.ENCODE: (steps.forward_function(model),
                                  steps.forward_input_signature(batch_size, sequence_length))}
    stages = Progress(f"export {path}", 4 if verify else 3, mode=progress)
    with atomic_file(path, overwrite) as temporary:
        flatbuffer = convert(model, endpoints, quantize, progress=stages)
        with stages.stage("write"):
            temporary.write_bytes(flatbuffer)
        if verify:
            with stages.stage("verify"):
                _verify(kind, temporary, model, quantize, verify_prompts, min_agreement)
    logger.info("Exported %s (%d bytes) in %.1f s", path, os.path.getsize(path), time.time() - start)
    return str(path)


def _verify(kind, path, model, quantize, prompts, min_agreement):
    if kind == steps.STEPS:
        report = verify_tflite(path, model, prompts)
        _check_decoder_report(report, quantize, min_agreement)
    else:
        report = verify_tflite_encoder(path, model)
        _check_encoder_report(report, quantize)
    logger.info("Verified %s (%s): %s", path, quantize or "float32",
                {k: v for k, v in report.items() if not isinstance(v, list)})


def _check_quantize(quantize):
    check_choice("quantize", quantize, QUANTIZATIONS)
    if quantize == "int8_weight_only":
        raise NotImplementedError(
            "quantize='int8_weight_only' is not available: the TFLite converter of TensorFlow 2.21 has no "
            "weight-only int8 mode. Use quantize='dynamic_int8' (int8 weights, int8 dynamic-range kernels; "
            "about the same size) or 'float16'."
        )


def _encoder_length(model, sequence_length):
    limit = getattr(model, "backbone", model).max_sequence_length
    if sequence_length is None:
        return min(limit, steps.MAX_DEFAULT_SEQUENCE_LENGTH)
    sequence_length = check_int("sequence_length", sequence_length, minimum=1)
    if sequence_length > limit:
        raise invalid_argument("sequence_length", f"at most the model's {limit} positions", sequence_length)
    return sequence_length


def convert(model, endpoints, quantize=None, progress=None):
    """Converts `{signature: (fn, input_signature)}` of `model` to a TFLite flatbuffer (bytes).

    `progress` (a `tfllm.progress.Progress`) is told of the "trace" and "convert" stages.

    The functions go through `keras.export.ExportArchive` and a SavedModel: converting concrete
    functions with the model as their trackable drops the weights (ENVIRONMENT.md, trap 7).
    Only TFLite builtin ops are allowed, so the file runs without the Flex delegate (trap 8).
    """
    progress = progress or Progress("convert", mode="none")
    with tempfile.TemporaryDirectory(prefix="tfllm-tflite-") as scratch:
        with progress.stage("trace"):
            archive = keras.export.ExportArchive()
            archive.track(model)
            for name, (function, input_signature) in endpoints.items():
                archive.add_endpoint(name, function, input_signature=input_signature)
            archive.write_out(scratch, verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(scratch, signature_keys=list(endpoints))
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        if quantize in ("float16", "dynamic_int8"):
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if quantize == "float16":
            converter.target_spec.supported_types = [tf.float16]
        with progress.stage("convert"):
            return converter.convert()


def op_names(path):
    """The op types a TFLite file uses (a Flex op shows as "FlexXxx", a custom op by its name)."""
    from tensorflow.lite.python import schema_py_generated as schema

    with open(path, "rb") as f:
        flatbuffer = schema.Model.GetRootAsModel(f.read(), 0)
    builtins = {value: name for name, value in vars(schema.BuiltinOperator).items() if not name.startswith("_")}
    names = set()
    for i in range(flatbuffer.OperatorCodesLength()):
        code = flatbuffer.OperatorCodes(i)
        builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
        custom = code.CustomCode()
        names.add(custom.decode() if custom else builtins.get(builtin, str(builtin)))
    return sorted(names)


def verify_tflite(path, model, prompts=None, max_new_tokens=8):
    """Compares a decoder's TFLite file with the Keras model; see `steps.compare_with_keras` for the report."""
    generator = LiteRTGenerator(path)
    shapes = steps.step_shapes(model, generator.cache_length, generator.prefill_length)
    prompts = prompts or steps.default_prompts(model, shapes, max_new_tokens)
    report = steps.compare_with_keras(generator, model, prompts, max_new_tokens)
    report["ops"] = op_names(path)
    return report


def verify_tflite_encoder(path, model):
    """Compares an encoder's TFLite file with the Keras model: `{"max_abs_diff", "scale", "cosine", "finite"}`."""
    interpreter = steps.require("ai_edge_litert.interpreter", "tflite").Interpreter(model_path=str(path))
    runner = interpreter.get_signature_runner(sig.ENCODE)
    batch_size, sequence_length = runner.get_input_details()[sig.INPUT_IDS]["shape"]
    reports = []
    for ids, mask in steps.encoder_check_batches(model, int(batch_size), int(sequence_length)):
        outputs = runner(**{sig.INPUT_IDS: ids, sig.ATTENTION_MASK: mask})
        reports.append(steps.compare_outputs(outputs, steps.keras_forward(model, ids, mask)))
    return {
        "max_abs_diff": max(r["max_abs_diff"] for r in reports),
        "scale": max(r["scale"] for r in reports),
        "cosine": min(r["cosine"] for r in reports),
        "finite": all(r["finite"] for r in reports),
        "ops": op_names(path),
    }


def _check_ops(report):
    flex = [op for op in report["ops"] if op.startswith("Flex") or not op.isupper()]
    if flex:
        raise ExportVerificationError(f"The TFLite file uses ops outside the TFLite builtins: {flex}")
    if not report["finite"]:
        raise ExportVerificationError(
            "The TFLite file outputs NaN or infinite values (weights dropped in conversion? ENVIRONMENT.md trap 7)"
        )


def _check_decoder_report(report, quantize, min_agreement):
    _check_ops(report)
    if quantize in EXACT_QUANTIZATIONS and not report["greedy_equal"]:
        raise ExportVerificationError(
            f"The TFLite file's greedy tokens differ from the Keras model's: {report['greedy']} != {report['keras_greedy']}"
        )
    tolerance = 1e-4 * max(1.0, report["logits_scale"])
    if quantize is None and report["logits_max_abs_diff"] > tolerance:
        raise ExportVerificationError(
            "The TFLite file's logits differ from the Keras model's by "
            f"{report['logits_max_abs_diff']:.3g} > {tolerance:.3g}"
        )
    if report["next_token_agreement"] < min_agreement:
        raise ExportVerificationError(
            f"The {quantize or 'float32'} TFLite file agrees with the Keras model's next token on "
            f"{report['next_token_agreement']:.3f} of positions, below min_agreement={min_agreement}"
        )


def _check_encoder_report(report, quantize):
    _check_ops(report)
    tolerance = 1e-4 * max(1.0, report["scale"])
    if quantize is None and report["max_abs_diff"] > tolerance:
        raise ExportVerificationError(
            f"The TFLite encoder's outputs differ from the Keras model's by {report['max_abs_diff']:.3g} > {tolerance:.3g}"
        )
    if report["cosine"] < DEFAULT_MIN_COSINE:
        raise ExportVerificationError(
            f"The {quantize} TFLite encoder's outputs have cosine {report['cosine']:.4f} < {DEFAULT_MIN_COSINE} "
            "with the Keras model's"
        )

