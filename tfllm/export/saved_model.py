"""`saved_model`: a SavedModel that stock TensorFlow Serving serves as it is (text in, text out)."""

import json
import logging
import os
import time

import tensorflow as tf

from tfllm.export import signatures as sig
from tfllm.export import verify as verify_lib
from tfllm.export.serving_module import CausalLMServing, ClassifierServing, EncoderServing, Seq2SeqServing
from tfllm.export.versions import atomic_version
from tfllm.models import tasks
from tfllm.progress import Progress

logger = logging.getLogger(__name__)

DEFAULT_PROMPTS = ("The", "def main():", "Hello, world")
SUPPORTED = (
    "models that declare it in their `export_formats`: causal LMs (AutoModelForCausalLM), seq2seq LMs "
    "(AutoModelForSeq2SeqLM), sequence classifiers (AutoModelForSequenceClassification) and encoders "
    "(AutoModel on a folder of an encoder family)"
)
# The serving module of each task a SavedModel export takes (`sig.KINDS`); a backbone's is an encoder's.
SERVING_MODULES = {module.kind: module for module in (CausalLMServing, Seq2SeqServing, EncoderServing,
                                                      ClassifierServing)}


def _serving_module(model, tokenizer, max_new_tokens, pooling=None):
    task = getattr(model, "task", None)
    if tasks.SAVED_MODEL not in getattr(model, "export_formats", ()) or task not in SERVING_MODULES:
        raise NotImplementedError(f"SavedModel export supports {SUPPORTED}; {tasks.describe(model)} is not supported.")
    if task in tasks.GENERATIVE:
        return SERVING_MODULES[task](model, tokenizer, max_new_tokens)
    return SERVING_MODULES[task](model, tokenizer, pooling)


def write_warmup(folder, model_name, prompts, max_new_tokens=None, signature_name=sig.SERVING_DEFAULT):
    """Writes `assets.extra/tf_serving_warmup_requests`: PredictionLog records TF Serving replays on load.

    Args:
        folder: the version folder.
        model_name: the model's name in TF Serving (the export base's folder name).
        prompts: texts of the requests: one request with the first, one with all of them.
        max_new_tokens: sent as `max_new_tokens` when not None (generation signatures); leave it
            None for models served with `--enable_batching`, whose batching refuses scalar inputs.
        signature_name: the signature the requests call.
    """
    from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

    path = os.path.join(folder, sig.WARMUP_FILE)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with tf.io.TFRecordWriter(path) as writer:
        for batch in ([prompts[0]], list(prompts)):  # one and several rows: both shapes get traced
            request = predict_pb2.PredictRequest(
                model_spec=model_pb2.ModelSpec(name=model_name, signature_name=signature_name)
            )
            request.inputs[sig.TEXT].CopyFrom(tf.make_tensor_proto(batch, dtype=tf.string))
            if max_new_tokens is not None:
                request.inputs[sig.MAX_NEW_TOKENS].CopyFrom(tf.make_tensor_proto(max_new_tokens, dtype=tf.int32))
            log = prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request))
            writer.write(log.SerializeToString())
    return path


def saved_model(model, tokenizer, export_base, *, version=None, overwrite=False, max_new_tokens=32,
                verify=True, verify_prompts=DEFAULT_PROMPTS, pooling=None, progress="none"):
    """Exports `model` with its tokenizer as `export_base/<version>/`, the layout TF Serving polls.

    Signatures (see `tfllm/export/signatures.py` and the README), by model kind:
    - causal LM: `serving_default` (text → text, with optional `max_new_tokens`, `do_sample`,
      `temperature`, `top_k`, `top_p`, `seed`), `generate_ids` and `logits`;
    - seq2seq LM (T5): the same three; `generated_text` and `completion` both hold the generated
      target, and `logits` also takes `decoder_input_ids` / `decoder_attention_mask`;
    - encoder (a BERT backbone): `embed` (text → `embeddings`, pooled as `pooling` says);
    - sequence classifier: `classify` (text → softmax `scores` and top `labels` from `id2label`)
      and `embed` (the backbone's hidden states pooled as `pooling` says).
    The tokenizer and detokenizer run inside the graph (TF core + TF-Text ops). Warmup requests for
    the kind's first signature are written to `assets.extra/`.

    The version is built in a hidden temporary folder, checked (op set; reloaded in a fresh process,
    its greedy text, logits, embeddings or scores compared with this model's), then renamed into
    place, so TF Serving never sees a partial version and a failed export leaves nothing behind.
    Without `version`, the number is claimed at that rename: two exports to one base path at once
    get two versions. Staging left by a killed export is removed by the next export to the base.

    Args:
        model: a tfllm task model.
        tokenizer: its `tfllm.tokenizers.Tokenizer`.
        export_base: the model's folder, e.g. "saved_models/NAME".
        version: version number to write; defaults to one past the highest existing.
        overwrite: replace an existing version instead of refusing.
        max_new_tokens: default of the `max_new_tokens` input.
        verify: run the fresh-process check before the version appears.
        verify_prompts: prompts for the check and the warmup records.
        pooling: how `embed` pools (encoders and classifiers; other kinds ignore it): None for mean
            pooling without normalization; a mode of `tfllm.layers.pooling.POOLING_MODES` or a list
            of them; or the dict `tfllm.checkpoints.sentence_config.sentence_transformers_config(folder)`
            returns (modes, `normalize`, `max_seq_length`, `do_lower_case`), which makes `embed`
            equal to `tfllm.pipeline("sentence-embeddings")` on that folder.
        progress: "auto", "bar", "line" or "none": report the steps (trace, write, verify); see
            `tfllm.progress`.

    Returns:
        The path of the written version folder.
    """
    start = time.time()
    module = _serving_module(model, tokenizer, max_new_tokens, pooling)
    check_tokens = max(1, min(max_new_tokens, 8))
    stages = Progress(f"export {export_base}", 3 if verify else 2, mode=progress)
    with atomic_version(export_base, version, overwrite) as staged:
        folder = str(staged.folder)
        with stages.stage("trace"):
            for function in module.functions.values():  # traced once here; `save` reuses the traces
                function.get_concrete_function()
        with stages.stage("write"):
            tf.saved_model.save(module, folder, signatures=module.functions)
            tokenizer.save_pretrained(os.path.join(folder, sig.TOKENIZER_ASSETS))
            if getattr(module, "max_positions", None):
                with open(os.path.join(folder, sig.LIMITS_FILE), "w", encoding="utf-8") as file:
                    json.dump({"max_positions": int(module.max_positions)}, file)
            # Text only: TF Serving's batching session refuses scalar inputs, and warmup goes through it.
            write_warmup(folder, os.path.basename(os.path.abspath(export_base)), list(verify_prompts),
                         signature_name=module.signature_defs[0].name)
        if verify:
            with stages.stage("verify in a fresh process"):
                verify_lib.check_saved_model(folder, model, tokenizer, module.kind, verify_prompts, check_tokens,
                                             pooling=getattr(module, "pooling", None))
    path = os.path.join(export_base, str(staged.version))
    logger.info("Exported %s in %.1f s", path, time.time() - start)
    return path
