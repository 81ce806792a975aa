"""Checks of exported models: reload in a fresh process and compare with Keras; the graph's op set.

`python -m tfllm.export.verify SAVED_MODEL REQUEST.json RESULT.npz` is the fresh-process half: it
loads the SavedModel (after `import tensorflow_text`, as TF Serving links its ops), runs the request's
signatures and writes their outputs.
"""

import json
import logging
import os
import subprocess
import sys
import tempfile

import numpy as np

from tfllm.export import signatures as sig
from tfllm.layers.pooling import pool
from tfllm.models import tasks

logger = logging.getLogger(__name__)

# Ops no TF Serving build can run: Python callbacks, and XLA-only kernels (TF Serving runs no XLA).
FORBIDDEN_OPS = frozenset({"PyFunc", "PyFuncStateless", "EagerPyFunc"})


class ExportVerificationError(RuntimeError):
    """An export did not reproduce the Keras model; nothing was written."""


def keras_generate_text(model, tokenizer, prompts, max_new_tokens):
    """What the `serving_default` signature must return: greedy `generate` + decode, as the pipeline does."""
    batch = tokenizer(list(prompts), return_tensors="np", padding=True, padding_side="left")
    ids = model.generate(batch["input_ids"], attention_mask=batch["attention_mask"], max_new_tokens=max_new_tokens)
    completions = []
    for prompt_ids, row in zip(batch["input_ids"], np.asarray(ids)):
        prompt_text = tokenizer.decode(prompt_ids, skip_special_tokens=True)
        completions.append(tokenizer.decode(row, skip_special_tokens=True)[len(prompt_text):])
    return completions


def run_in_fresh_process(saved_model_dir, request):
    """Runs `request` ({signature: {input: list}}) against a SavedModel in a new Python process.

    Returns:
        {signature: {output: numpy array}}.
    """
    with tempfile.TemporaryDirectory() as scratch:
        request_path = os.path.join(scratch, "request.json")
        result_path = os.path.join(scratch, "result.npz")
        with open(request_path, "w") as f:
            json.dump(request, f)
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
        done = subprocess.run(
            [sys.executable, "-m", "tfllm.export.verify", str(saved_model_dir), request_path, result_path],
            capture_output=True, text=True, env=env,
        )
        if done.returncode != 0:
            raise ExportVerificationError(
                f"The exported SavedModel {saved_model_dir} failed to load or run in a fresh process:\n{done.stderr[-3000:]}"
            )
        with np.load(result_path, allow_pickle=False) as data:
            result = {}
            for key in data.files:
                signature, output = key.split("/", 1)
                result.setdefault(signature, {})[output] = data[key]
            return result


def _run_request(saved_model_dir, request_path, result_path):
    import tensorflow as tf
    import tensorflow_text  # noqa: F401  (registers the TF-Text ops the graph uses)

    loaded = tf.saved_model.load(saved_model_dir)  # keep a reference while its functions run
    defaults = signature_defaults(saved_model_dir)
    with open(request_path) as f:
        request = json.load(f)
    arrays = {}
    for signature, inputs in request.items():
        function = loaded.signatures[signature]
        specs = function.structured_input_signature[1]
        feed = {name: tf.constant(value) for name, value in defaults.get(signature, {}).items()}
        feed.update({name: tf.constant(value, specs[name].dtype) for name, value in inputs.items()})
        for output, value in function(**feed).items():
            value = value.numpy()
            if value.dtype == object:
                value = np.array([v.decode("utf-8", "replace") for v in value.reshape(-1)]).reshape(value.shape)
            arrays[f"{signature}/{output}"] = value
    np.savez(result_path, **arrays)


def read_saved_model(saved_model_dir):
    """The `SavedModel` proto of a SavedModel folder (its `saved_model.pb`), without loading the graph."""
    from tensorflow.core.protobuf import saved_model_pb2

    saved = saved_model_pb2.SavedModel()
    with open(os.path.join(saved_model_dir, "saved_model.pb"), "rb") as f:
        saved.ParseFromString(f.read())
    return saved


def signature_defaults(saved_model_dir):
    """The default input values each signature declares, as TF Serving fills them in for missing inputs.

    Returns:
        `{signature: {input: numpy value}}`.
    """
    return defaults_of(read_saved_model(saved_model_dir).meta_graphs[0])


def defaults_of(meta_graph):
    """`{signature: {input: numpy value}}` from a MetaGraphDef's SignatureDef defaults."""
    import tensorflow as tf

    return {
        name: {key: tf.make_ndarray(value) for key, value in definition.defaults.items()}
        for name, definition in meta_graph.signature_def.items()
    }


def op_report(saved_model_dir):
    """The op types a SavedModel's graph and functions use, and those a TF Serving build cannot run.

    Returns:
        `{"ops": sorted op types, "forbidden": sorted op types that are Python callbacks, XLA-only,
        or registered by neither TensorFlow core nor TF-Text}`.
    """
    from tensorflow.python.framework import op_def_registry

    import tensorflow_text  # noqa: F401  (its ops are linked into TF Serving)

    saved = read_saved_model(saved_model_dir)
    ops = set()
    for meta_graph in saved.meta_graphs:
        ops.update(node.op for node in meta_graph.graph_def.node)
        for function in meta_graph.graph_def.library.function:
            ops.update(node.op for node in function.node_def)
    functions = {f.signature.name for mg in saved.meta_graphs for f in mg.graph_def.library.function}
    ops -= functions  # calls of the graph's own functions
    forbidden = {
        op for op in ops
        if op in FORBIDDEN_OPS or op.startswith("Xla") or op_def_registry.get(op) is None
    }
    return {"ops": sorted(ops), "forbidden": sorted(forbidden)}


def check_saved_model(saved_model_dir, model, tokenizer, kind, prompts, max_new_tokens, logits_atol=1e-5,
                      pooling=None, embeddings_atol=1e-4, scores_atol=1e-5):
    """Reloads the export in a fresh process and compares it with the Keras model; raises on a mismatch.

    Per kind: causal LM and seq2seq: greedy `serving_default` text equal, `logits` within
    `logits_atol` times the largest logit (at least 1); encoder: `embed` within `embeddings_atol` (and cosine >= 0.99999); classifier:
    `classify` scores within `scores_atol` with the same labels, and `embed` as for an encoder.

    Args:
        pooling: the resolved pooling config of the `embed` signature (`serving_module.pooling_config`).

    Returns:
        A dict of the measured differences.
    """
    report = op_report(saved_model_dir)
    if report["forbidden"]:
        raise ExportVerificationError(f"The export uses ops TF Serving cannot run: {report['forbidden']}")
    checks = {tasks.CAUSAL_LM: _check_causal_lm, tasks.SEQ2SEQ_LM: _check_seq2seq}
    if kind in checks:
        return checks[kind](saved_model_dir, model, tokenizer, list(prompts), max_new_tokens, logits_atol)
    if kind not in sig.KINDS:
        raise ValueError(f"Invalid value for argument `kind`. Expected one of {', '.join(sig.KINDS)}. "
                         f"Received: kind={kind!r}")
    classifier = kind == tasks.SEQUENCE_CLASSIFICATION
    request = {sig.EMBED: {sig.TEXT: list(prompts)}}
    if classifier:
        request[sig.CLASSIFY] = {sig.TEXT: list(prompts)}
    result = run_in_fresh_process(saved_model_dir, request)
    backbone = model.backbone if classifier else model
    measured = _compare_embeddings(result[sig.EMBED][sig.EMBEDDINGS],
                                   keras_embeddings(backbone, tokenizer, prompts, pooling), embeddings_atol)
    if classifier:
        measured.update(_compare_scores(result[sig.CLASSIFY], keras_scores(model, tokenizer, prompts), scores_atol))
    logger.info("Verified %s in a fresh process: %s", saved_model_dir, measured)
    return measured


def _check_causal_lm(saved_model_dir, model, tokenizer, prompts, max_new_tokens, logits_atol):
    batch = tokenizer(prompts, return_tensors="np", padding=True, padding_side="left")
    request = {
        sig.SERVING_DEFAULT: {sig.TEXT: prompts, sig.MAX_NEW_TOKENS: max_new_tokens},
        sig.LOGITS: {sig.INPUT_IDS: batch["input_ids"].tolist(), sig.ATTENTION_MASK: batch["attention_mask"].tolist()},
    }
    result = run_in_fresh_process(saved_model_dir, request)
    expected = keras_generate_text(model, tokenizer, prompts, max_new_tokens)
    got = _same_text(result[sig.SERVING_DEFAULT][sig.COMPLETION], expected)
    keras_logits = np.asarray(model({"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}))
    diff = _logits_diff(result[sig.LOGITS][sig.LOGITS], keras_logits, batch["attention_mask"], logits_atol)
    logger.info("Verified %s in a fresh process: greedy text equal, logits within %.2g", saved_model_dir, diff)
    return {"logits_max_abs_diff": diff, "completions": got}


def _check_seq2seq(saved_model_dir, model, tokenizer, prompts, max_new_tokens, logits_atol):
    batch = tokenizer(prompts, return_tensors="np", padding=True)
    ids = np.asarray(model.generate(batch["input_ids"], attention_mask=batch["attention_mask"],
                                    max_new_tokens=max_new_tokens))
    decoder = {sig.DECODER_INPUT_IDS: ids, sig.DECODER_ATTENTION_MASK: np.ones_like(ids)}
    request = {
        sig.SERVING_DEFAULT: {sig.TEXT: prompts, sig.MAX_NEW_TOKENS: max_new_tokens},
        sig.LOGITS: {sig.INPUT_IDS: batch["input_ids"].tolist(), sig.ATTENTION_MASK: batch["attention_mask"].tolist(),
                     **{name: value.tolist() for name, value in decoder.items()}},
    }
    result = run_in_fresh_process(saved_model_dir, request)
    got = _same_text(result[sig.SERVING_DEFAULT][sig.GENERATED_TEXT], tokenizer.batch_decode(ids, skip_special_tokens=True))
    keras_logits = np.asarray(model({"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"], **decoder}))
    diff = _logits_diff(result[sig.LOGITS][sig.LOGITS], keras_logits, decoder[sig.DECODER_ATTENTION_MASK], logits_atol)
    logger.info("Verified %s in a fresh process: greedy text equal, logits within %.2g", saved_model_dir, diff)
    return {"logits_max_abs_diff": diff, "generated_text": got}


def _same_text(got, expected):
    got = [str(x) for x in got]
    if got != list(expected):
        raise ExportVerificationError(f"The SavedModel's greedy text differs from the Keras model's: {got} != {expected}")
    return got


def _logits_diff(got, expected, mask, atol):
    """The largest difference over real positions; it must be within `atol` times the largest logit (at least 1)."""
    mask = np.asarray(mask)[:, :, None]
    diff = float(np.abs((got - expected) * mask).max())
    limit = atol * max(1.0, float(np.abs(expected * mask).max()))  # float32 rounding grows with the logits
    if diff > limit:
        raise ExportVerificationError(f"The SavedModel's logits differ from the Keras model's by {diff:.3g} > {limit:.3g}")
    return diff


def keras_embeddings(backbone, tokenizer, texts, pooling):
    """What the `embed` signature must return, computed as `tfllm.pipeline("sentence-embeddings")` does.

    Args:
        backbone: a backbone (its `"last_hidden_state"` is pooled).
        pooling: `{"pooling", "normalize", "max_seq_length", "do_lower_case"}`.
    """
    texts = [(text.lower() if pooling["do_lower_case"] else text).strip() for text in texts]
    max_length = pooling["max_seq_length"] or tokenizer.model_max_length
    batch = tokenizer(texts, return_tensors="np", padding=True, truncation=max_length is not None, max_length=max_length)
    embeddings = np.asarray(pool(backbone(batch)["last_hidden_state"], batch["attention_mask"], pooling["pooling"]))
    if pooling["normalize"]:
        embeddings = embeddings / np.maximum(np.linalg.norm(embeddings, axis=-1, keepdims=True), 1e-12)
    return embeddings


def keras_scores(model, tokenizer, texts):
    """What the `classify` signature must return: `(scores, labels)` as the text-classification pipeline's top-1."""
    logits = np.asarray(model(tokenizer(list(texts), return_tensors="np", padding=True)), np.float64)
    if logits.shape[-1] == 1:
        scores = 1.0 / (1.0 + np.exp(-logits))
    else:
        scores = np.exp(logits - logits.max(axis=-1, keepdims=True))
        scores /= scores.sum(axis=-1, keepdims=True)
    id2label = getattr(model, "id2label", None) or {}
    return scores, [str(id2label.get(i, f"LABEL_{i}")) for i in scores.argmax(axis=-1)]


def _compare_embeddings(got, expected, atol):
    diff = float(np.abs(got - expected).max())
    cosine = float(np.min(np.sum(got * expected, -1) / (np.linalg.norm(got, axis=-1) * np.linalg.norm(expected, axis=-1))))
    if diff > atol or cosine < 0.99999:
        raise ExportVerificationError(
            f"The SavedModel's embeddings differ from the Keras model's: max abs {diff:.3g} (limit {atol}), "
            f"lowest cosine {cosine:.6f} (limit 0.99999)"
        )
    return {"embeddings_max_abs_diff": diff, "embeddings_min_cosine": cosine}


def _compare_scores(result, expected, atol):
    scores, labels = expected
    diff = float(np.abs(result[sig.SCORES] - scores).max())
    got = [str(x) for x in result[sig.LABELS]]
    if diff > atol or got != labels:
        raise ExportVerificationError(
            f"The SavedModel's classify output differs from the Keras model's: scores by {diff:.3g} (limit {atol}), "
            f"labels {got} vs {labels}"
        )
    return {"scores_max_abs_diff": diff, "labels": got}


if __name__ == "__main__":
    _run_request(*sys.argv[1:4])
