"""`onnx`: ONNX files through tf2onnx, one per signature, in a folder; and `OnnxGenerator`."""

import logging
import time
from pathlib import Path

import numpy as np
import tensorflow as tf

from tfllm.errors import check_int
from tfllm.export import signatures as sig
from tfllm.export import steps
from tfllm.export.verify import ExportVerificationError
from tfllm.files import atomic_folder
from tfllm.progress import Progress

logger = logging.getLogger(__name__)

DEFAULT_OPSET = 17
LOGITS_ATOL = 1e-4


def onnx(model, path, *, opset=DEFAULT_OPSET, cache_length=None, prefill_length=None, overwrite=False, verify=True,
         verify_prompts=None, progress="none"):
    """Converts `model` to ONNX: a folder with one `<signature>.onnx` file per signature.

    A causal LM gets `logits.onnx` (`input_ids`, `attention_mask` `(batch_size, sequence_length)`
    int32, any size → `logits` `(batch_size, sequence_length, vocabulary_size)`), and
    `prefill.onnx` / `decode.onnx`, the same steps as the TFLite export (`tfllm.export.steps`) with
    the updated caches named `kv_cache_k_<i>_out` / `kv_cache_v_<i>_out` (ONNX cannot give an
    output its input's name); drive them with `OnnxGenerator`. A BERT model gets `encode.onnx`
    (`input_ids`, `attention_mask`, any size → `sequence_output`, `pooled_output` or `logits`).

    The folder is built under a temporary name next to `path` and checked in onnxruntime (logits
    within 1e-4 of the Keras model's, greedy tokens equal to `model.generate`'s) before it is
    renamed into place; a failure raises and leaves nothing at `path`.

    Args:
        model: a tfllm causal LM (`AutoModelForCausalLM`) or BERT model.
        path: the folder to write.
        opset: the ONNX opset.
        cache_length: positions of the prefill/decode KV cache. Defaults to the model's
            positions, at most 256.
        prefill_length: tokens one `prefill` call takes. Defaults to `min(cache_length, 64)`.
        overwrite: replace an existing folder; without it an existing `path` is refused before any work.
        verify: run the onnxruntime check before the folder appears.
        verify_prompts: token-id lists for the greedy check; defaults to random ids.
        progress: "auto", "bar", "line" or "none": report the steps (trace and convert each graph,
            verify); see `tfllm.progress`.

    Returns:
        `path`, as a string.

    Example:
    >>> tfllm.export.onnx(model, "exports/gpt2_onnx")   # logits.onnx, prefill.onnx, decode.onnx
    >>> tfllm.export.OnnxGenerator("exports/gpt2_onnx", tokenizer).generate("The", max_new_tokens=20)
    """
    tf2onnx_convert = steps.require("tf2onnx.convert", "onnx")
    start = time.time()
    kind = steps.export_kind(model)
    if kind is None:
        raise steps.unsupported(model, "ONNX")
    opset = check_int("opset", opset, minimum=13)
    steps.check_arguments_apply(kind, cache_length=cache_length, prefill_length=prefill_length)
    graphs = {}
    if kind == steps.STEPS:
        shapes = steps.step_shapes(model, cache_length, prefill_length)
        graphs[sig.LOGITS] = (steps.forward_function(model), steps.forward_input_signature())
        graphs.update(steps.step_functions(model, shapes, output_name=sig.kv_cache_output_name))
    else:
        graphs[sig.ENCODE] = (steps.forward_function(model), steps.forward_input_signature())
    stages = Progress(f"export {path}", len(graphs) + bool(verify), mode=progress)
    with atomic_folder(path, overwrite) as folder:
        for name, (function, input_signature) in graphs.items():
            positional, specs = _positional(function, input_signature)
            with stages.stage(f"trace, convert and write {sig.onnx_file(name)}"):
                proto, _ = tf2onnx_convert.from_function(
                    positional, input_signature=specs, opset=opset, output_path=str(folder / sig.onnx_file(name))
                )
            _check_inputs(proto, name, input_signature)
        if verify:
            with stages.stage("verify in onnxruntime"):
                report = verify_onnx(folder, model, verify_prompts)
            logger.info("Verified %s in onnxruntime: %s", path, {k: v for k, v in report.items() if not isinstance(v, list)})
    logger.info("Exported %s in %.1f s", path, time.time() - start)
    return str(path)


def _positional(function, input_signature):
    """`function` of one dict as a tf.function of positional tensors, so the ONNX inputs keep the
    signature's order (`tokens, input_pos, kv_cache_k_0, kv_cache_v_0, ...`) instead of sorted names."""
    names = list(input_signature[0])

    def positional(*tensors):
        return function(dict(zip(names, tensors)))

    return tf.function(positional), [input_signature[0][name] for name in names]


def _check_inputs(proto, name, input_signature):
    # A tensor captured from eager code becomes an extra graph input (ENVIRONMENT.md, trap 6).
    expected = sorted(input_signature[0])
    got = sorted(i.name for i in proto.graph.input)
    if got != expected:
        raise ExportVerificationError(f"The ONNX graph {sig.onnx_file(name)} has inputs {got}, expected {expected}")


def _session(path):
    onnxruntime = steps.require("onnxruntime", "onnx")
    return onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def verify_onnx(folder, model, prompts=None, max_new_tokens=8):
    """Checks an ONNX folder in onnxruntime against the Keras model; raises `ExportVerificationError`.

    Returns:
        For a causal LM, `steps.compare_with_keras`'s report plus `full_logits_max_abs_diff` (the
        `logits.onnx` graph on a left-padded batch); for an encoder, `steps.compare_outputs`'s.
    """
    folder = Path(folder)
    if (folder / sig.onnx_file(sig.ENCODE)).exists():
        report = _verify_forward(_session(folder / sig.onnx_file(sig.ENCODE)), model, right_padded=True)
        return {"max_abs_diff": report["max_abs_diff"], "cosine": report["cosine"]}
    forward = _verify_forward(_session(folder / sig.onnx_file(sig.LOGITS)), model, right_padded=False)
    generator = OnnxGenerator(folder)
    shapes = steps.step_shapes(model, generator.cache_length, generator.prefill_length)
    prompts = prompts or steps.default_prompts(model, shapes, max_new_tokens)
    report = steps.compare_with_keras(generator, model, prompts, max_new_tokens)
    report["full_logits_max_abs_diff"] = forward["max_abs_diff"]
    if not report["greedy_equal"]:
        raise ExportVerificationError(
            "The ONNX prefill/decode greedy tokens differ from the Keras model's: "
            f"{report['greedy']} != {report['keras_greedy']}"
        )
    tolerance = LOGITS_ATOL * max(1.0, report["logits_scale"])
    if not report["finite"] or report["logits_max_abs_diff"] > tolerance:
        raise ExportVerificationError(
            f"The ONNX prefill logits differ from the Keras model's by {report['logits_max_abs_diff']:.3g} > {tolerance:.3g}"
        )
    return report


def _verify_forward(session, model, right_padded):
    """Runs the forward graph on a padded batch of two rows and compares it with Keras over real positions."""
    rng = np.random.default_rng(0)
    vocabulary = getattr(model, "backbone", model).vocabulary_size
    ids = rng.integers(0, vocabulary, (2, 7)).astype(np.int32)
    mask = np.ones_like(ids)
    if right_padded:
        mask[1, 4:] = 0
    else:
        mask[1, :3] = 0
    ids = ids * mask
    names = [o.name for o in session.get_outputs()]
    outputs = dict(zip(names, session.run(None, {sig.INPUT_IDS: ids, sig.ATTENTION_MASK: mask})))
    reference = steps.keras_forward(model, ids, mask)
    if sig.LOGITS in reference and reference[sig.LOGITS].ndim == 3:  # per-token outputs: padded slots are free
        keep = mask[:, :, None].astype(bool)
        outputs = {sig.LOGITS: np.where(keep, outputs[sig.LOGITS], 0.0)}
        reference = {sig.LOGITS: np.where(keep, reference[sig.LOGITS], 0.0)}
    report = steps.compare_outputs(outputs, reference)
    tolerance = LOGITS_ATOL * max(1.0, report["scale"])
    if not report["finite"] or report["max_abs_diff"] > tolerance:
        raise ExportVerificationError(
            f"The ONNX graph's outputs differ from the Keras model's by {report['max_abs_diff']:.3g} > {tolerance:.3g}"
        )
    return report


class OnnxGenerator(steps.StepGenerator):
    """Drives the `prefill.onnx` / `decode.onnx` pair of an ONNX export with onnxruntime and numpy.

    Prompts run one at a time; a prompt longer than the export's `prefill_length` is fed in
    windows, and prompt + new tokens must fit its `cache_length`.

    Args:
        path: a folder written by `tfllm.export.onnx` for a causal LM.
        tokenizer: the model's tokenizer, for `generate` (text in, text out); None for ids only.
        num_threads: onnxruntime intra-op threads (None: its default, one per core). The steps are
            many small ops: 1 thread is often fastest for small models.
        providers: onnxruntime execution providers.

    Example:
    >>> generator = tfllm.export.OnnxGenerator("exports/gpt2_onnx", tokenizer)
    >>> generator.generate(["The for statement", "A class"], max_new_tokens=20)
    """

    def __init__(self, path, tokenizer=None, num_threads=None, providers=("CPUExecutionProvider",)):
        onnxruntime = steps.require("onnxruntime", "onnx")
        self.path = str(path)
        options = onnxruntime.SessionOptions()
        if num_threads is not None:
            options.intra_op_num_threads = check_int("num_threads", num_threads, minimum=1)
        self._sessions = {}
        for name in (sig.PREFILL, sig.DECODE):
            file = Path(path) / sig.onnx_file(name)
            if not file.exists():
                raise ValueError(
                    f"Invalid value for argument `path`. Expected a folder written by tfllm.export.onnx for a causal "
                    f"LM (with {sig.onnx_file(sig.PREFILL)} and {sig.onnx_file(sig.DECODE)}). Received: "
                    f"path={self.path!r}, which lacks {file.name}"
                )
            self._sessions[name] = onnxruntime.InferenceSession(str(file), options, providers=list(providers))
        inputs = {i.name: i for i in self._sessions[sig.PREFILL].get_inputs()}
        num_layers = sum(name.startswith("kv_cache_") for name in inputs) // 2
        shapes = {name: inputs[name].shape for name in sig.kv_cache_names(num_layers)}
        # Updated caches come back as kv_cache_k_0_out ...; the driver feeds them in as kv_cache_k_0 ...
        renamed = {sig.LOGITS: sig.LOGITS}
        for layer in range(num_layers):
            for kind in ("k", "v"):
                renamed[sig.kv_cache_output_name(kind, layer)] = sig.kv_cache_name(kind, layer)
        self._output_names = {
            name: [renamed[o.name] for o in session.get_outputs()] for name, session in self._sessions.items()
        }
        super().__init__(tokenizer, inputs[sig.TOKENS].shape[1], shapes, np.float32)

    def _run(self, signature, inputs):
        outputs = self._sessions[signature].run(None, inputs)
        return dict(zip(self._output_names[signature], outputs))

