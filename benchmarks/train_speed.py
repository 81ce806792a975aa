"""Training speed of a GPT-2-small shaped model: tfllm `fit` against keras-hub `fit` and transformers PyTorch.

Run by hand (not in CI), on a quiet machine:

    .venv/bin/python benchmarks/train_speed.py --output train_speed.json

    # a quick check that every system runs (tiny shape, numbers meaningless):
    .venv/bin/python benchmarks/train_speed.py --layers 2 --hidden 128 --vocab 1000 --steps 2 --warmup 1

What is measured: training tokens/s (batch_size × sequence_length per optimizer step) of
- tfllm `GPT2CausalLM.fit` (keras `AdamW`, `SparseCategoricalCrossentropy(from_logits=True)`),
- keras-hub `GPT2CausalLM.fit` (`preprocessor=None`, the same optimizer, loss and no metrics),
- transformers `GPT2LMHeadModel` in PyTorch: forward, cross-entropy, `backward`, `torch.optim.AdamW`.
All three get the same shape (default: 12 layers, 768 wide, 12 heads, vocabulary 50257, sequence
128, batch 8), fp32, random weights and random token ids, the same dropout and learning rate.
Each system runs in its own process, one after the other. `--warmup` steps (tracing, first-call
allocation) are excluded; the time of the next `--steps` steps is measured, each step ending when
its loss is on the host. Numbers move with machine load: compare the ratios of one run, and run
on an otherwise idle machine — PyTorch's OpenMP threads in particular slow down many times over
when other processes compete for the cores (`--threads 1` makes a loaded machine usable for a
smoke check, not for the headline numbers).
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time

SYSTEMS = ("tfllm", "keras-hub", "transformers-pytorch")
LABELS = {
    "tfllm": "tfllm `GPT2CausalLM.fit`",
    "keras-hub": "keras-hub `GPT2CausalLM.fit`",
    "transformers-pytorch": "transformers PyTorch train step",
}


def random_tokens(args):
    """`(steps, batch_size, sequence_length + 1)` int32 token ids, the same for every system."""
    import numpy as np

    count = args.warmup + args.steps
    rng = np.random.default_rng(0)
    return rng.integers(0, args.vocab, size=(count, args.batch_size, args.seq_len + 1)).astype("int32")


def keras_fit_times(model, inputs, labels, args):
    """Compiles `model` and fits one epoch over the batches.

    Returns:
        `(times, extra)`: the start time then each step's end time, and facts for the JSON.
    """
    import keras
    import tensorflow as tf

    jit = {"auto": "auto", "true": True, "false": False}[args.jit_compile]
    model.compile(
        optimizer=keras.optimizers.AdamW(learning_rate=args.learning_rate, weight_decay=0.01),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=jit,
        **({"weighted_metrics": []} if args.system == "keras-hub" else {}),
    )
    dataset = tf.data.Dataset.from_tensor_slices((inputs, labels)).batch(args.batch_size)

    class StepTimes(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            float(logs["loss"])  # waits for the step to finish
            times.append(time.perf_counter())

    times = [time.perf_counter()]
    model.fit(dataset, epochs=1, shuffle=False, verbose=0, callbacks=[StepTimes()])
    return times, {"jit_compile": bool(model.jit_compile), "keras": keras.__version__, "tensorflow": tf.__version__}


def backbone_kwargs(args):
    """The GPT-2 shape, in the argument names tfllm's and keras-hub's `GPT2Backbone` share."""
    return dict(vocabulary_size=args.vocab, num_layers=args.layers, num_heads=args.heads, hidden_dim=args.hidden,
                intermediate_dim=4 * args.hidden, max_sequence_length=1024, dropout=args.dropout)


def run_tfllm(args):
    import numpy as np

    from tfllm.models.gpt2 import GPT2Backbone, GPT2CausalLM

    backbone = GPT2Backbone(**backbone_kwargs(args))
    ids = random_tokens(args).reshape(-1, args.seq_len + 1)
    inputs = {"input_ids": ids[:, :-1], "attention_mask": np.ones_like(ids[:, :-1])}
    return keras_fit_times(GPT2CausalLM(backbone), inputs, ids[:, 1:], args)


def run_keras_hub(args):
    import keras_hub
    import numpy as np

    backbone = keras_hub.models.GPT2Backbone(**backbone_kwargs(args))
    ids = random_tokens(args).reshape(-1, args.seq_len + 1)
    inputs = {"token_ids": ids[:, :-1], "padding_mask": np.ones_like(ids[:, :-1])}
    model = keras_hub.models.GPT2CausalLM(backbone=backbone, preprocessor=None)
    return keras_fit_times(model, inputs, ids[:, 1:], args)


def run_transformers(args):
    import torch
    import transformers

    torch.manual_seed(0)
    config = transformers.GPT2Config(
        vocab_size=args.vocab,
        n_layer=args.layers,
        n_head=args.heads,
        n_embd=args.hidden,
        n_positions=1024,
        resid_pdrop=args.dropout,
        embd_pdrop=args.dropout,
        attn_pdrop=args.dropout,
    )
    model = transformers.GPT2LMHeadModel(config).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.learning_rate, weight_decay=0.01)
    loss_fn = torch.nn.CrossEntropyLoss()
    times = [time.perf_counter()]
    for batch in torch.from_numpy(random_tokens(args)).long():
        logits = model(input_ids=batch[:, :-1]).logits  # (batch_size, sequence_length, vocab)
        loss = loss_fn(logits.reshape(-1, args.vocab), batch[:, 1:].reshape(-1))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss.item()
        times.append(time.perf_counter())
    return times, {
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }


RUNNERS = {"tfllm": run_tfllm, "keras-hub": run_keras_hub, "transformers-pytorch": run_transformers}


def set_threads(args):
    """Gives every framework the same `--threads` (default: each framework's own choice, all cores)."""
    if not args.threads:
        return
    if args.system == "transformers-pytorch":
        import torch

        torch.set_num_threads(args.threads)
    else:
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.threads)


def measure(args):
    """Child process: runs one system; returns its timings as a dict."""
    set_threads(args)
    if args.precision != "float32":
        if args.system == "transformers-pytorch":
            raise ValueError(f"`--precision {args.precision}` is measured for the Keras systems only")
        import keras

        keras.config.set_dtype_policy(args.precision)  # both Keras systems: variables float32, compute bfloat16
    times, extra = RUNNERS[args.system](args)
    if len(times) != args.warmup + args.steps + 1:
        raise RuntimeError(f"expected {args.warmup + args.steps} step times, got {len(times) - 1}")
    measured = times[-1] - times[args.warmup]
    tokens = args.steps * args.batch_size * args.seq_len
    return {
        "tokens_per_s": tokens / measured,
        "step_s": measured / args.steps,
        "warmup_s": times[args.warmup] - times[0],
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        **extra,
    }


def run_child(system, argv, args):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "KERAS_BACKEND": "tensorflow"}
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
    out = subprocess.run(
        [sys.executable, __file__, *argv, "--system", system], capture_output=True, text=True, env=env
    )
    lines = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
    if out.returncode or not lines:
        return {"error": (out.stderr or out.stdout)[-2000:]}
    return json.loads(lines[-1][len("RESULT "):])


def table(results, args):
    base = results.get("tfllm", {}).get("tokens_per_s")
    rows = [
        f"GPT-2 shape: {args.layers} layers, {args.hidden} wide, {args.heads} heads, vocabulary {args.vocab}; "
        f"sequence {args.seq_len}, batch {args.batch_size}, AdamW, fp32, dropout {args.dropout}; "
        f"{args.steps} measured steps after {args.warmup} warm-up steps",
        "",
        "| system | training tokens/s | step ms | tfllm ÷ system | warm-up s | peak RSS MB |",
        "|---|---|---|---|---|---|",
    ]
    for system, result in results.items():
        if "error" in result:
            rows.append(f"| {LABELS[system]} | failed | | | | |")
            continue
        ratio = f"{base / result['tokens_per_s']:.2f}×" if base else "n/a"
        rows.append(
            f"| {LABELS[system]} | {result['tokens_per_s']:.1f} | {1000 * result['step_s']:.0f} | {ratio} "
            f"| {result['warmup_s']:.1f} | {result['peak_rss_mb']:.0f} |"
        )
    return "\n".join(rows)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=10, help="measured optimizer steps (default 10)")
    parser.add_argument("--warmup", type=int, default=3, help="steps run first and not measured (default 3)")
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--hidden", type=int, default=768)
    parser.add_argument("--heads", type=int, default=None, help="default: hidden // 64")
    parser.add_argument("--vocab", type=int, default=50257)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--dropout", type=float, default=0.1, help="GPT-2's own rate, for every system")
    parser.add_argument("--learning-rate", type=float, default=1e-4)
    parser.add_argument("--jit-compile", choices=("auto", "true", "false"), default="auto",
                        help="`jit_compile` for both Keras systems (Keras' 'auto' is off on CPU)")
    parser.add_argument("--precision", choices=("float32", "mixed_bfloat16"), default="float32",
                        help="Keras dtype policy for both Keras systems (default float32)")
    parser.add_argument("--threads", type=int, default=0,
                        help="CPU threads for every system (default 0: each framework's default)")
    parser.add_argument("--systems", default=",".join(SYSTEMS), help=f"comma-separated subset of {SYSTEMS}")
    parser.add_argument("--output", help="write the results as JSON to this path")
    parser.add_argument("--system", help=argparse.SUPPRESS)  # set in the child processes
    args = parser.parse_args(argv)
    args.heads = args.heads or max(1, args.hidden // 64)
    unknown = sorted(set(args.systems.split(",")) - set(SYSTEMS))
    if unknown:
        parser.error(f"unknown systems {unknown}; expected a subset of {list(SYSTEMS)}")
    return args


def main():
    args = parse_args()
    if args.system:
        print("RESULT " + json.dumps(measure(args)))
        return
    argv = sys.argv[1:]
    results = {}
    for system in args.systems.split(","):
        print(f"measuring {system} ...", file=sys.stderr, flush=True)
        results[system] = run_child(system, argv, args)
    print(table(results, args))
    for system, result in results.items():
        if "error" in result:
            print(f"\n{system} failed:\n{result['error']}", file=sys.stderr)
    if args.output:
        shape = {k: getattr(args, k) for k in ("layers", "hidden", "heads", "vocab", "seq_len", "batch_size",
                                                "dropout", "learning_rate", "steps", "warmup", "jit_compile", "precision",
                                                "threads")}
        with open(args.output, "w") as f:
            json.dump({"config": shape, "results": results}, f, indent=2)
    if any("error" in result for result in results.values()):
        sys.exit(1)


if __name__ == "__main__":
    main()
