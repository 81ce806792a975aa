"""Exported formats next to the Keras model: file size, load time, greedy generation tokens/s.

Run by hand (not in CI), on a trained causal LM folder (default: the quickstart's):

    .venv/bin/python benchmarks/export_speed.py [saved_models/quickstart_hf] [--new-tokens 32]

Every format generates the same prompts greedily, one prompt at a time (batch 1), with the same
number of new tokens; tokens/s counts new tokens only and is the best of `--repeats` runs. Load time
is the time to open the exported file(s) and run one first call.
"""

import argparse
import json
import os
import shutil
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

PROMPTS = ("The for statement", "A class definition", "If the exception")


def _size(path):
    if os.path.isfile(path):
        return os.path.getsize(path)
    return sum(os.path.getsize(os.path.join(root, f)) for root, _, files in os.walk(path) for f in files)


def _best_rate(run, new_tokens, repeats):
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for prompt in PROMPTS:
            run(prompt)
        best = min(best, time.perf_counter() - start)
    return len(PROMPTS) * new_tokens / best


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", nargs="?", default="saved_models/quickstart_hf")
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", default=None, help="also write the rows as JSON")
    args = parser.parse_args()

    import numpy as np
    import tensorflow as tf
    import tensorflow_text  # noqa: F401

    import tfllm
    from tfllm.export import LiteRTGenerator, OnnxGenerator, onnx, saved_model, tflite
    from tfllm.export import signatures as sig

    new = args.new_tokens
    rows = []
    start = time.perf_counter()
    tokenizer = tfllm.AutoTokenizer.from_pretrained(args.folder)
    model = tfllm.AutoModelForCausalLM.from_pretrained(args.folder)

    def keras_run(prompt):
        ids = np.array([tokenizer.encode(prompt)])
        return model.generate(ids, max_new_tokens=new, eos_token_id=-1)

    keras_run(PROMPTS[0])
    rows.append(dict(format="Keras model (tf.function loop)", size=_size(os.path.join(args.folder, "model.safetensors")),
                     load_s=time.perf_counter() - start, tokens_per_s=_best_rate(keras_run, new, args.repeats)))

    scratch = tempfile.mkdtemp(prefix="tfllm-export-bench-")
    try:
        path = saved_model(model, tokenizer, os.path.join(scratch, "sm"), max_new_tokens=new)
        start = time.perf_counter()
        loaded = tf.saved_model.load(path)
        generate = loaded.signatures[sig.SERVING_DEFAULT]
        defaults = {k: tf.constant(v) for k, v in tfllm.export.verify.signature_defaults(path)[sig.SERVING_DEFAULT].items()}

        def saved_run(prompt):
            # eos disabled is not an input: the SavedModel stops at eos like TF Serving would; the
            # quickstart model rarely emits it within 32 tokens.
            return generate(**{**defaults, sig.TEXT: tf.constant([prompt])})

        saved_run(PROMPTS[0])
        rows.append(dict(format="SavedModel serving_default (text in/out)", size=_size(path),
                         load_s=time.perf_counter() - start, tokens_per_s=_best_rate(saved_run, new, args.repeats)))

        for quantize in (None, "float16", "dynamic_int8"):
            file = os.path.join(scratch, f"model-{quantize or 'fp32'}.tflite")
            tflite(model, file, quantize=quantize, cache_length=128)
            start = time.perf_counter()
            lite = LiteRTGenerator(file, tokenizer)
            lite.generate(PROMPTS[0], max_new_tokens=1)
            load = time.perf_counter() - start
            rows.append(dict(format=f"TFLite {quantize or 'fp32'} (ai_edge_litert)", size=_size(file), load_s=load,
                             tokens_per_s=_best_rate(lambda p: lite.generate(p, max_new_tokens=new, eos_token_id=-1),
                                                     new, args.repeats)))

        folder = os.path.join(scratch, "onnx")
        onnx(model, folder, cache_length=128)
        start = time.perf_counter()
        runner = OnnxGenerator(folder, tokenizer, num_threads=1)
        runner.generate(PROMPTS[0], max_new_tokens=1)
        rows.append(dict(format="ONNX (onnxruntime, 1 thread)", size=_size(folder), load_s=time.perf_counter() - start,
                         tokens_per_s=_best_rate(lambda p: runner.generate(p, max_new_tokens=new, eos_token_id=-1),
                                                 new, args.repeats)))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    base = rows[0]["tokens_per_s"]
    print(f"\n{args.folder}: {len(PROMPTS)} prompts, batch 1, {new} new tokens, greedy, best of {args.repeats}\n")
    print("| format | size (MB) | load + first call (s) | tokens/s | vs Keras |")
    print("|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['format']} | {row['size'] / 1e6:.2f} | {row['load_s']:.2f} | {row['tokens_per_s']:.0f} | "
              f"{row['tokens_per_s'] / base:.2f}x |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
