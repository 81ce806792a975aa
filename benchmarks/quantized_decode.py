"""Weight-only quantized decoding (`tfllm.quantize`) against tfllm's own float32, GPT-2-small shape.

Run by hand (not in CI):
    .venv/bin/python benchmarks/quantized_decode.py [--modes float32@default int8@false ...]
    .venv/bin/python benchmarks/quantized_decode.py --micro   # the matrix-vector candidates alone

Random weights (seeded, identical in every process), batch 1, a 32-token prompt, 64 new tokens,
greedy. Each mode runs in its own process, one after the other; decode tokens/s is
`(new_tokens - 1) / (time(64 new tokens) - time(1 new token))`, best of `--runs`. Agreement with
float32 is measured on the full-pass logits over the prompt (max abs difference, argmax agreement
per position) and on the generated tokens. Random weights give nearly flat logits, so argmax
agreement here is a lower bound; tests/test_quantize.py checks it on a trained model. Numbers move
with machine load: compare the ratios of one run.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

CONFIG = dict(vocabulary_size=50257, num_layers=12, num_heads=12, hidden_dim=768, intermediate_dim=3072,
              max_sequence_length=1024)
MODES = ("float32", "int8", "float16", "bfloat16")
JIT = {"default": None, "true": True, "false": False}
# `mode@jit`: generate(jit_compile=...) per row; float32 at its fastest (the default, an XLA decode
# step) and without XLA; the quantized modes without an XLA loop (their products are XLA already,
# see tfllm/quantize.py) and int8 with the default too.
RUNS = ("float32@default", "float32@false", "int8@false", "float16@false", "bfloat16@false", "int8@default")


def _best_time(fn, runs, clock=time.perf_counter):
    fn()  # warm-up: tracing and XLA compilation
    times = []
    for _ in range(runs):
        start = clock()
        fn()
        times.append(clock() - start)
    return min(times)


def run_mode(mode, folder, prompt, new_tokens, runs, jit_compile):
    """One process: build the seeded model, quantize, time generate, save logits and tokens."""
    import keras
    import numpy as np

    from tfllm.models.gpt2 import GPT2Backbone, GPT2CausalLM
    from tfllm.models.pretrained import build_model
    from tfllm.quantize import quantize

    keras.utils.set_random_seed(0)
    model = build_model(GPT2CausalLM(GPT2Backbone(**CONFIG)))
    if mode != "float32":
        quantize(model, mode)
    ids = np.random.default_rng(0).integers(0, 50000, (1, prompt)).astype("int32")
    options = {} if jit_compile is None else {"jit_compile": jit_compile}
    generate = lambda n: model.generate(ids, max_new_tokens=n, eos_token_id=-1, **options)  # noqa: E731
    prefill = _best_time(lambda: generate(1), runs)
    total = _best_time(lambda: generate(new_tokens), runs)
    # CPU seconds of this process: on a loaded machine, wall time favours whichever kernel runs more
    # threads (the scheduler shares the cores per thread); the work done per token does not move.
    cpu = _best_time(lambda: generate(new_tokens), runs, time.process_time) - _best_time(
        lambda: generate(1), runs, time.process_time)
    np.save(os.path.join(folder, f"{mode}_logits.npy"), keras.ops.convert_to_numpy(model(ids)))
    np.save(os.path.join(folder, f"{mode}_tokens.npy"), keras.ops.convert_to_numpy(generate(new_tokens)))
    weights_mb = sum(int(np.prod(v.shape)) * np.dtype(keras.backend.standardize_dtype(v.dtype).replace(
        "bfloat16", "float16")).itemsize for v in model.weights) / 1e6
    return {"prefill_s": prefill, "total_s": total, "decode_cpu_ms_per_token": 1000 * cpu / (new_tokens - 1),
            "weights_mb": weights_mb}


def agreement(folder, mode, prompt):
    import numpy as np

    ref, out = (np.load(os.path.join(folder, f"{m}_logits.npy")) for m in ("float32", mode))
    ref_tokens, tokens = (np.load(os.path.join(folder, f"{m}_tokens.npy"))[:, prompt:] for m in ("float32", mode))
    first_diff = np.flatnonzero(ref_tokens[0] != tokens[0])
    return {"logits_max_abs_diff": float(np.abs(out - ref).max()), "logits_max_abs": float(np.abs(ref).max()),
            "next_token_agreement": float((out.argmax(-1) == ref.argmax(-1)).mean()),
            "generated_equal_prefix": int(first_diff[0]) if first_diff.size else int(tokens.shape[1])}


def micro(repeats=50):
    """Times one batch-1 matrix-vector product per candidate for two GPT-2-small shapes."""
    import numpy as np
    import tensorflow as tf

    from tfllm.quantize import _matvec, quantize_rows

    rng = np.random.default_rng(0)
    for input_dim, units in ((768, 3072), (768, 50257)):
        w = (0.02 * rng.standard_normal((input_dim, units))).astype("float32")
        x = tf.constant(rng.standard_normal((1, input_dim)).astype("float32"))
        q, scale = quantize_rows(w.T, "int8")
        kernel, q_kn, q_nk, s = tf.Variable(w), tf.Variable(q.T), tf.Variable(q), tf.constant(scale)
        bf16_nk, f16_nk = tf.Variable(tf.cast(w.T, tf.bfloat16)), tf.Variable(tf.cast(w.T, tf.float16))
        bf16_kn = tf.Variable(tf.cast(w, tf.bfloat16))
        ones = tf.ones([units])
        candidates = {
            "float32 matmul": (lambda: tf.matmul(x, kernel), False),
            "float32 matmul, XLA": (lambda: tf.matmul(x, kernel), True),
            "int8 cast + matmul (K, N)": (lambda: tf.matmul(x, tf.cast(q_kn, tf.float32)) * s, False),
            "int8 cast + matmul (K, N), XLA": (lambda: tf.matmul(x, tf.cast(q_kn, tf.float32)) * s, True),
            "int8 cast + matmul (N, K)": (lambda: tf.matmul(x, tf.cast(q_nk, tf.float32), transpose_b=True) * s, False),
            "int8 tfllm _matvec (N, K, XLA)": (lambda: _matvec(x, tf.convert_to_tensor(q_nk), s), False),
            "bfloat16 matmul, bf16 operands": (
                lambda: tf.cast(tf.matmul(tf.cast(x, tf.bfloat16), bf16_kn), tf.float32), False),
            "bfloat16 tfllm _matvec (N, K, XLA)": (lambda: _matvec(x, tf.convert_to_tensor(bf16_nk), ones), False),
            "float16 tfllm _matvec (N, K, XLA)": (lambda: _matvec(x, tf.convert_to_tensor(f16_nk), ones), False),
        }
        reference = x.numpy() @ w
        print(f"== x (1, {input_dim}) @ W ({input_dim}, {units})")
        for name, (fn, jit) in candidates.items():
            f = tf.function(fn, jit_compile=jit)
            error = float(np.abs(f().numpy() - reference).max())
            best = min(_best_time(lambda: [f() for _ in range(repeats)], 2) for _ in range(3)) / repeats
            print(f"{name:38s} {1e6 * best:9.0f} us   max abs error {error:.1e}", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--modes", nargs="+", default=list(RUNS),
                        help="mode@jit_compile items, mode in %s, jit_compile in default|true|false" % (MODES,))
    parser.add_argument("--prompt", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--micro", action="store_true", help="time the matrix-vector candidates and exit")
    parser.add_argument("--mode", help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if args.micro:
        micro()
        return
    if args.mode:  # child process: one mode, prints JSON
        mode, jit = args.mode.split("@")
        result = run_mode(mode, args.folder, args.prompt, args.new_tokens, args.runs, JIT[jit])
        print("RESULT " + json.dumps(result))
        return
    modes = [m if "@" in m else m + "@default" for m in args.modes]
    if not all(m.split("@")[0] in MODES and m.split("@")[1] in JIT for m in modes):
        parser.error(f"--modes: expected mode@jit_compile items; received {args.modes}")
    modes.sort(key=lambda m: not m.startswith("float32"))  # float32 first: the others compare to it
    results = {"load_average_start": os.getloadavg()[0]}
    with tempfile.TemporaryDirectory() as folder:
        for mode in modes:
            command = [sys.executable, __file__, "--mode", mode, "--folder", folder, "--prompt", str(args.prompt),
                       "--new-tokens", str(args.new_tokens), "--runs", str(args.runs)]
            out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
            result = json.loads(next(line for line in out.splitlines() if line.startswith("RESULT "))[7:])
            result["decode_tokens_per_s"] = (args.new_tokens - 1) / (result["total_s"] - result["prefill_s"])
            if not mode.startswith("float32"):
                result.update(agreement(folder, mode.split("@")[0], args.prompt))
            results[mode] = result
    results["load_average_end"] = os.getloadavg()[0]
    float32_runs = [m for m in modes if m.startswith("float32")]
    reference = max(float32_runs, key=lambda m: results[m]["decode_tokens_per_s"])
    base = results[reference]["decode_tokens_per_s"]
    print(f"GPT-2-small shape, random weights, batch 1, prompt {args.prompt}, {args.new_tokens} new tokens, "
          f"greedy; ratios vs "
          f"{reference} (the fastest float32); load average {results['load_average_start']:.1f} -> "
          f"{results['load_average_end']:.1f}")
    base_cpu = results[reference]["decode_cpu_ms_per_token"]
    print(f"{'mode@jit_compile':16s} {'decode tok/s':>12s} {'vs fp32':>8s} {'CPU ms/tok':>10s} {'vs fp32':>8s} "
          f"{'prefill ms':>10s} {'weights MB':>10s} "
          f"{'max|dlogit|':>11s} {'argmax agree':>12s} {'same tokens':>11s}")
    for mode in modes:
        r = results[mode]
        extra = (f"{r['logits_max_abs_diff']:11.4f} {r['next_token_agreement']:12.3f} "
                 f"{r['generated_equal_prefix']:>5d}/{args.new_tokens:<5d}") if not mode.startswith("float32") else ""
        print(f"{mode:16s} {r['decode_tokens_per_s']:12.1f} {r['decode_tokens_per_s'] / base:7.2f}x "
              f"{r['decode_cpu_ms_per_token']:10.1f} {base_cpu / r['decode_cpu_ms_per_token']:7.2f}x "
              f"{1000 * r['prefill_s']:10.0f} {r['weights_mb']:10.0f} {extra}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
