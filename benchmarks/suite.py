"""The benchmark suite: tfllm against transformers (PyTorch, TF XLA), keras-hub and a BLAS floor, in one run.

Run by hand (not in CI), on an otherwise idle machine:

    .venv/bin/python benchmarks/suite.py                 # GPT-2-small shape, see benchmarks/README.md
    .venv/bin/python benchmarks/suite.py --quick         # tiny shape, every system once (~3 minutes idle)
    .venv/bin/python benchmarks/suite.py --systems tfllm,hf-pytorch --measures decode

One checkpoint with random weights is written once by transformers (PyTorch, safetensors) into a
temporary folder. Then every (system, measure) pair runs in its own subprocess, one after the other,
with a timeout; a failing or timed-out pair is recorded with its error and the suite goes on.

Measures:
- `decode`: greedy decoding at batch 1 and 8, short (32 prompt + 64 new) and long (512 + 128)
  contexts. `ttft` (time to first token) is the time of a `generate` call that makes one token (the
  prompt pass); decode tokens/s is `batch × (new − 1) / (total − ttft)`; prompt tokens/s is
  `batch × prompt / ttft`. Warm-up calls (tracing, XLA compilation) are excluded; best of `--runs`.
- `train`: training tokens/s (sequence 128, batch 8, AdamW), from `benchmarks/train_speed.py`.
- `load`: wall time to load the checkpoint folder into a ready model.
  `tfllm-bf16` and `keras-hub-bf16` train under Keras' "mixed_bfloat16" policy (train only).
- `scripts`: `benchmarks/quantized_decode.py` (weight-only int8/fp16/bf16 decode against fp32, logits
  agreement), run as it is; its output is appended.
Every subprocess also reports its peak resident memory (VmHWM from /proc/self/status). The table
is followed by issue 7's targets, each marked holds / misses.
Numbers move with machine load (the load average is recorded): compare the ratios of one run.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SYSTEMS = {
    "tfllm": "tfllm (default generate)",
    "tfllm-xla": "tfllm (jit_compile=True)",
    "tfllm-int8": "tfllm int8 weight-only",
    "tfllm-bf16": "tfllm mixed_bfloat16",
    "hf-pytorch": "transformers PyTorch",
    "hf-tf-xla": "transformers TF (XLA)",
    "keras-hub": "keras-hub",
    "keras-hub-bf16": "keras-hub mixed_bfloat16",
    "floor": "BLAS floor (numpy)",
}
MEASURES = ("decode", "train", "load", "scripts")
SCRIPTS = ("quantized_decode.py",)
FULL = dict(layers=12, hidden=768, heads=12, vocab=50257, contexts=[[32, 64], [512, 128]], batches=[1, 8],
            runs=3, train_seq=128, train_batch=8, train_steps=10, train_warmup=3, timeout=1800)
QUICK = dict(layers=2, hidden=128, heads=2, vocab=50257, contexts=[[8, 8], [64, 16]], batches=[1, 8],
             runs=1, train_seq=32, train_batch=8, train_steps=2, train_warmup=1, timeout=300)
NOT_APPLICABLE = "n/a"
APPLIES = {"decode": ("tfllm", "tfllm-xla", "tfllm-int8", "hf-pytorch", "hf-tf-xla", "keras-hub", "floor"),
           "train": ("tfllm", "tfllm-xla", "tfllm-bf16", "hf-pytorch", "keras-hub", "keras-hub-bf16"),
           "load": ("tfllm", "hf-pytorch", "hf-tf-xla", "keras-hub", "floor")}  # tfllm-xla, -int8: tfllm's loader


def peak_memory_mb(field="VmHWM"):
    """This process' peak (`VmHWM`) or current (`VmRSS`) resident memory in MB, from /proc/self/status."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def make_checkpoint(folder, cfg):
    """Child job: writes a random GPT-2 of the configured shape with transformers (PyTorch, safetensors)."""
    import torch
    import transformers

    torch.manual_seed(0)
    config = transformers.GPT2Config(n_layer=cfg["layers"], n_embd=cfg["hidden"], n_head=cfg["heads"],
                                     vocab_size=cfg["vocab"], n_positions=1024)
    transformers.GPT2LMHeadModel(config).save_pretrained(folder)
    return {"weights_mb": os.path.getsize(os.path.join(folder, "model.safetensors")) / 2**20}


# === Generators: load(folder, cfg) -> generate(ids, new_tokens), blocking until the tokens exist ===


def tfllm_generator(jit_compile, quantize_mode=None):
    def load(folder, cfg):
        import tfllm

        model = tfllm.AutoModelForCausalLM.from_pretrained(folder)
        if quantize_mode:
            from tfllm.quantize import quantize

            quantize(model, quantize_mode)

        def generate(ids, new):
            out = model.generate(ids, max_new_tokens=new, eos_token_id=-1, jit_compile=jit_compile)  # None: default
            assert out.shape[1] == ids.shape[1] + new, out.shape
            return out.numpy()

        return generate

    return load


def hf_pytorch_load(folder, cfg):
    import torch
    import transformers

    model = transformers.GPT2LMHeadModel.from_pretrained(folder).eval()

    def generate(ids, new):
        with torch.no_grad():
            ids = torch.from_numpy(ids).long()
            out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new, min_new_tokens=new,
                                 do_sample=False, pad_token_id=0)
        assert out.shape[1] == ids.shape[1] + new, out.shape
        return out

    return generate


def hf_tf_model(folder):
    """transformers' TFGPT2LMHeadModel with the PyTorch safetensors weights (see ../shared/ENVIRONMENT.md trap 2)."""
    os.environ["TF_USE_LEGACY_KERAS"] = "1"
    import safetensors.numpy
    import transformers
    from transformers.modeling_tf_pytorch_utils import load_pytorch_state_dict_in_tf2_model

    model = transformers.TFGPT2LMHeadModel(transformers.GPT2Config.from_pretrained(folder))
    model(model.dummy_inputs)  # builds the variables
    state = safetensors.numpy.load_file(os.path.join(folder, "model.safetensors"))
    load_pytorch_state_dict_in_tf2_model(model, state, tf_inputs=False, allow_missing_keys=True)
    return model


def hf_tf_xla_load(folder, cfg):
    import tensorflow as tf

    model = hf_tf_model(folder)
    functions = {}  # one tf.function per shape: a retraced one relaxes the shape, which XLA generate rejects

    @tf.function(jit_compile=True)
    def first_token(ids):  # its XLA generate fails for max_new_tokens=1 (a zero-width Fill), so the prompt pass
        return tf.argmax(model(ids, attention_mask=tf.ones_like(ids)).logits[:, -1], axis=-1)

    def generate(ids, new):
        ids = tf.constant(ids)
        if new == 1:
            return first_token(ids).numpy()
        key = (tuple(ids.shape), new)
        if key not in functions:
            functions[key] = tf.function(model.generate, jit_compile=True)
        out = functions[key](ids, attention_mask=tf.ones_like(ids), max_new_tokens=new, min_new_tokens=new,
                             do_sample=False, pad_token_id=0)
        assert out.shape[1] == ids.shape[1] + new, out.shape
        return out.numpy()

    return generate


def keras_hub_load(folder, cfg):
    """keras-hub's GPT2CausalLM (random weights: speed does not depend on them); generate includes the prompt pass."""
    import keras_hub
    import numpy as np

    backbone = keras_hub.models.GPT2Backbone(vocabulary_size=cfg["vocab"], num_layers=cfg["layers"],
                                             num_heads=cfg["heads"], hidden_dim=cfg["hidden"],
                                             intermediate_dim=4 * cfg["hidden"], max_sequence_length=1024)
    model = keras_hub.models.GPT2CausalLM(backbone=backbone, preprocessor=None)

    def generate(ids, new):
        batch, prompt = ids.shape
        token_ids = np.concatenate([ids, np.zeros((batch, new), ids.dtype)], axis=1)
        mask = np.arange(prompt + new)[None, :].repeat(batch, 0) < prompt
        out = model.generate({"token_ids": token_ids, "padding_mask": mask}, stop_token_ids=None)
        assert out["padding_mask"].all(), "keras-hub stopped early"
        return out

    return generate


def floor_load(folder, cfg):
    """Per token one BLAS product over every weight matrix (attention QKV and output, MLP in and out, LM head)."""
    import numpy as np

    h, rng = cfg["hidden"], np.random.default_rng(0)
    shapes = [(h, 3 * h), (h, h), (h, 4 * h), (4 * h, h)] * cfg["layers"] + [(h, cfg["vocab"])]
    weights = [rng.standard_normal(s, dtype=np.float32) * 0.02 for s in shapes]

    cache = {}

    def products(rows):  # random inputs made once per shape, outside the timed calls
        if rows not in cache:
            cache[rows] = {n: rng.standard_normal((rows, n), dtype=np.float32) for n in (h, 4 * h)}
        inputs = cache[rows]
        if rows == 1:  # batch 1: matrix-vector products (gemv)
            inputs = {n: x[0] for n, x in inputs.items()}
        return lambda: [inputs[w.shape[0]] @ w for w in weights]

    def generate(ids, new):
        batch, prompt = ids.shape
        products(batch * prompt)()  # the prompt pass: matrix-matrix over every prompt token
        step = products(batch)
        for _ in range(new - 1):
            step()

    return generate


DECODERS = {"tfllm": tfllm_generator(None), "tfllm-xla": tfllm_generator(True),
            "tfllm-int8": tfllm_generator(None, "int8"), "hf-pytorch": hf_pytorch_load,
            "hf-tf-xla": hf_tf_xla_load, "keras-hub": keras_hub_load, "floor": floor_load}


def best_time(fn, runs):
    start = time.perf_counter()
    fn()  # warm-up: tracing, XLA compilation, first allocation
    warmup = time.perf_counter() - start
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times), warmup


def measure_decode(system, folder, cfg):
    import numpy as np

    start = time.perf_counter()
    generate = DECODERS[system](folder, cfg)
    result = {"setup_s": time.perf_counter() - start}
    rng = np.random.default_rng(0)
    for prompt, new in cfg["contexts"]:
        for batch in cfg["batches"]:
            ids = rng.integers(0, min(cfg["vocab"], 50000), (batch, prompt)).astype("int32")
            ttft, warm1 = best_time(lambda: generate(ids, 1), cfg["runs"])
            total, warm2 = best_time(lambda: generate(ids, new), cfg["runs"])
            result[f"b{batch}_p{prompt}_n{new}"] = {
                "ttft_s": ttft, "total_s": total, "warmup_s": warm1 + warm2,
                # None when noise made the N-token call no slower than the 1-token call
                "decode_tokens_per_s": batch * (new - 1) / (total - ttft) if total > ttft else None,
                "prompt_tokens_per_s": batch * prompt / ttft,
            }
    return result


def measure_train(system, folder, cfg):
    import train_speed

    names = {"tfllm": ("tfllm", "false", "float32"), "tfllm-xla": ("tfllm", "true", "float32"),
             "tfllm-bf16": ("tfllm", "false", "mixed_bfloat16"),
             "hf-pytorch": ("transformers-pytorch", "auto", "float32"),
             "keras-hub": ("keras-hub", "auto", "float32"), "keras-hub-bf16": ("keras-hub", "auto", "mixed_bfloat16")}
    if system not in names:
        return NOT_APPLICABLE
    name, jit, precision = names[system]
    args = train_speed.parse_args([
        "--layers", str(cfg["layers"]), "--hidden", str(cfg["hidden"]), "--heads", str(cfg["heads"]),
        "--vocab", str(cfg["vocab"]), "--seq-len", str(cfg["train_seq"]), "--batch-size", str(cfg["train_batch"]),
        "--steps", str(cfg["train_steps"]), "--warmup", str(cfg["train_warmup"]), "--jit-compile", jit,
        "--precision", precision, "--system", name])
    return train_speed.measure(args)


def measure_load(system, folder, cfg):
    """Imports first, then times only the load; `rss_before_mb` is the resident memory before it."""
    if system in ("tfllm-xla", "tfllm-int8"):
        return NOT_APPLICABLE  # the same loader as tfllm
    if system == "tfllm":
        import tfllm

        load = lambda: tfllm.AutoModelForCausalLM.from_pretrained(folder)  # noqa: E731
    elif system == "hf-pytorch":
        import transformers

        load = lambda: transformers.GPT2LMHeadModel.from_pretrained(folder)  # noqa: E731
    elif system == "hf-tf-xla":
        os.environ["TF_USE_LEGACY_KERAS"] = "1"
        import transformers  # noqa: F401  (the import is not part of the load)

        load = lambda: hf_tf_model(folder)  # noqa: E731
    elif system == "keras-hub":
        import keras_hub

        load = lambda: keras_hub.models.GPT2Backbone.from_preset(folder)  # noqa: E731
    else:
        import safetensors.numpy

        load = lambda: safetensors.numpy.load_file(os.path.join(folder, "model.safetensors"))  # noqa: E731
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current RSS, so import-time peaks do not count
        reset = True
    except OSError:
        reset = False
    before = peak_memory_mb("VmRSS")
    start = time.perf_counter()
    model = load()
    seconds = time.perf_counter() - start
    peak_delta = peak_memory_mb() - before
    del model
    weights = os.path.getsize(os.path.join(folder, "model.safetensors")) / 2**20
    return {"load_s": seconds, "rss_before_mb": before, "load_peak_delta_mb": peak_delta, "hwm_reset": reset,
            "load_peak_per_weights": peak_delta / weights}


MEASURERS = {"decode": measure_decode, "train": measure_train, "load": measure_load}


# === Parent: runs the jobs, prints and writes the results ===


def run_job(job, folder, cfg, timeout):
    """Runs one `--job` in a subprocess; returns its result dict, `"n/a"` or `{"error": ...}`."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "KERAS_BACKEND": "tensorflow"}
    command = [sys.executable, os.path.abspath(__file__), "--job", job, "--folder", folder, "--config", json.dumps(cfg)]
    start = time.perf_counter()
    try:
        out = subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout} s"}
    lines = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
    if out.returncode or not lines:
        return {"error": (out.stderr or out.stdout)[-1500:].strip() or f"exit status {out.returncode}"}
    result = json.loads(lines[-1][len("RESULT "):])
    if isinstance(result, dict):
        result["process_s"] = time.perf_counter() - start
    return result


def run_script(name, quick, timeout, output):
    """The `scripts` measure: runs another worker's benchmark script as it is, when it exists."""
    path = os.path.join(HERE, name)
    if not os.path.exists(path):
        return {"skipped": f"{name} is not present"}
    command = [sys.executable, path]
    if quick:
        with open(path) as f:
            if "--quick" not in f.read():
                return {"skipped": f"{name} has no --quick; run the suite without --quick to include it"}
        command.append("--quick")
    json_path = os.path.abspath(os.path.join(output, name.replace(".py", ".json")))
    with open(path) as f:
        command += ["--json", json_path] if "--json" in f.read() else []
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    try:
        out = subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout,
                             cwd=os.path.dirname(HERE))
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout} s", "command": command}
    if out.returncode:
        return {"error": (out.stderr or out.stdout)[-1500:].strip(), "command": command}
    result = {"stdout": out.stdout[-6000:], "command": command}
    if os.path.exists(json_path):
        with open(json_path) as f:
            result["json"] = json.load(f)
    return result


# (label, measure, keys into the measure's result)
def metric_rows(cfg):
    rows = []
    for prompt, new in cfg["contexts"]:
        for batch in cfg["batches"]:
            key = f"b{batch}_p{prompt}_n{new}"
            rows.append((f"decode tok/s, batch {batch}, {prompt}+{new}", "decode", (key, "decode_tokens_per_s")))
    for prompt, new in cfg["contexts"]:
        key = f"b1_p{prompt}_n{new}"
        rows.append((f"prompt tok/s, batch 1, {prompt} tokens", "decode", (key, "prompt_tokens_per_s")))
        rows.append((f"time to first token ms, batch 1, {prompt}", "decode", (key, "ttft_s")))
    rows.append((f"train tok/s, seq {cfg['train_seq']}, batch {cfg['train_batch']}", "train", ("tokens_per_s",)))
    rows.append(("checkpoint load s", "load", ("load_s",)))
    rows.append(("load peak memory ÷ weights size", "load", ("load_peak_per_weights",)))
    rows.append(("peak memory MB, load", "load", ("peak_mb",)))
    rows.append(("peak memory MB, decode", "decode", ("peak_mb",)))
    rows.append(("peak memory MB, train", "train", ("peak_mb",)))
    return rows


def lookup(results, system, measure, path):
    value = results.get(system, {}).get(measure)
    for key in path:
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return value


def fmt(value, label):
    if "ms" in label:
        value *= 1000
    return f"{value:.0f}" if value >= 100 else f"{value:.2f}" if value < 10 else f"{value:.1f}"


def table(results, cfg, systems, baseline):
    head = "| metric | " + " | ".join(SYSTEMS[s] for s in systems) + " |"
    lines = [head, "|---" * (len(systems) + 1) + "|"]
    for label, measure, path in metric_rows(cfg):
        cells = []
        base = lookup(results, baseline, measure, path)
        for system in systems:
            value = lookup(results, system, measure, path)
            entry = results.get(system, {}).get(measure)
            if value is None:
                cells.append("failed" if isinstance(entry, dict) and "error" in entry else "–")
                continue
            cell = fmt(value, label)
            if base is not None and system != baseline and value:
                cell += f" ({base / value:.2f}×)"
            cells.append(cell)
        if any(cell not in ("–",) for cell in cells):
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def targets(results, cfg):
    """Issue 7's targets as `(text, holds)`; `holds` is None when a number is missing.

    Decode and training use the faster of `tfllm` and `tfllm-xla`.
    """
    prompt, new = cfg["contexts"][0]

    def get(system, measure, *path):
        return lookup(results, system, measure, path)

    def decode(system, batch):
        return get(system, "decode", f"b{batch}_p{prompt}_n{new}", "decode_tokens_per_s")

    def ratio(a, b):
        return a / b if a and b else None

    ours = {batch: max(filter(None, [decode("tfllm", batch), decode("tfllm-xla", batch)]), default=None)
            for batch in cfg["batches"]}
    train = max(filter(None, [get("tfllm", "train", "tokens_per_s"), get("tfllm-xla", "train", "tokens_per_s")]),
                default=None)
    checks = [  # (text, measured ratio, the least that holds)
        ("batch-1 decode ≥ 1.25× transformers TF XLA", ratio(ours[1], decode("hf-tf-xla", 1)), 1.25),
        ("batch-1 decode ≥ 1.4× transformers PyTorch", ratio(ours[1], decode("hf-pytorch", 1)), 1.4),
        ("batch-1 decode ≥ 0.8 of the BLAS floor", ratio(ours[1], decode("floor", 1)), 0.8),
        ("batch-8 decode ≥ 1.5× transformers PyTorch", ratio(ours[8], decode("hf-pytorch", 8)), 1.5),
        ("int8 batch-1 decode ≥ 1.6× tfllm fp32", ratio(decode("tfllm-int8", 1), decode("tfllm", 1)), 1.6),
        ("training ≥ 1.2× keras-hub fit (both fp32)", ratio(train, get("keras-hub", "train", "tokens_per_s")), 1.2),
        ("training ≥ 1.2× keras-hub fit (both mixed_bfloat16)", ratio(get("tfllm-bf16", "train", "tokens_per_s"),
                                                                     get("keras-hub-bf16", "train", "tokens_per_s")),
         1.2),
        ("load ≥ 1× transformers PyTorch's speed", ratio(get("hf-pytorch", "load", "load_s"),
                                                          get("tfllm", "load", "load_s")), 1.0),
    ]
    rows = [(f"{text}: {value:.2f}×" if value else f"{text}: not measured", value >= least if value else None)
            for text, value, least in checks]
    peak = get("tfllm", "load", "load_peak_per_weights")
    rows.append((f"load peak memory ≤ 1.3× the weights: {peak:.2f}×" if peak else "load peak memory: not measured",
                 peak <= 1.3 if peak else None))
    return rows


def chart(results, cfg, systems, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in metric_rows(cfg) if any(lookup(results, s, r[1], r[2]) is not None for s in systems)]
    if not rows:
        return
    cols = 3
    height = (len(rows) + cols - 1) // cols
    fig, axes = plt.subplots(height, cols, figsize=(5 * cols, 3.2 * height), squeeze=False)
    for ax, (label, measure, key) in zip(axes.flat, rows):
        names, values = [], []
        for system in systems:
            value = lookup(results, system, measure, key)
            if value is not None:
                names.append(system)
                values.append(value * (1000 if "ms" in label else 1))
        bars = ax.bar(names, values, color=["C0" if n.startswith("tfllm") else "C7" for n in names])
        ax.bar_label(bars, fmt="%.3g", fontsize=7)
        ax.set_title(label, fontsize=9)
        ax.tick_params(axis="x", labelrotation=30, labelsize=7)
    for ax in list(axes.flat)[len(rows):]:
        ax.axis("off")
    fig.suptitle(f"GPT-2 shape {cfg['layers']} layers × {cfg['hidden']} wide, fp32, CPU ({os.cpu_count()} cores)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="2 layers, 128 wide, few tokens: a smoke run")
    parser.add_argument("--output", default=os.path.join(HERE, "results"), help="folder for suite.json and suite.png")
    parser.add_argument("--systems", default=",".join(SYSTEMS), help=f"comma-separated subset of {list(SYSTEMS)}")
    parser.add_argument("--measures", default=",".join(MEASURES), help=f"comma-separated subset of {list(MEASURES)}")
    parser.add_argument("--contexts", choices=("all", "short", "long"), default="all",
                        help="decode contexts: all (default), only the short or only the long one")
    parser.add_argument("--runs", type=int, help="timed repeats per decode call, best taken (default 3, quick 1)")
    parser.add_argument("--timeout", type=int, help="seconds per subprocess (default 1800, quick 300)")
    parser.add_argument("--baseline", default="tfllm", help="the numerator of the ratios (default tfllm)")
    parser.add_argument("--job", help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    parser.add_argument("--config", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    for name, allowed in (("systems", SYSTEMS), ("measures", MEASURES)):
        unknown = sorted(set(getattr(args, name).split(",")) - set(allowed))
        if unknown:
            parser.error(f"Invalid value for argument `--{name}`. Expected a subset of {list(allowed)}. "
                         f"Received: {unknown}")
    return args


def child(args):
    cfg = json.loads(args.config)
    if args.job == "checkpoint":
        result = make_checkpoint(args.folder, cfg)
    else:
        system, measure = args.job.split(":")
        result = MEASURERS[measure](system, args.folder, cfg)
    if isinstance(result, dict):
        result["peak_mb"] = peak_memory_mb()
    print("RESULT " + json.dumps(result), flush=True)


def main():
    args = parse_args()
    if args.job:
        return child(args)
    cfg = dict(QUICK if args.quick else FULL)
    cfg["runs"] = args.runs or cfg["runs"]
    if args.contexts != "all":
        cfg["contexts"] = cfg["contexts"][:1] if args.contexts == "short" else cfg["contexts"][1:]
    timeout = args.timeout or cfg["timeout"]
    del cfg["timeout"]
    systems, measures = args.systems.split(","), args.measures.split(",")
    os.makedirs(args.output, exist_ok=True)
    info = {"cpu_count": os.cpu_count(), "loadavg_start": os.getloadavg(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S"), "python": sys.version.split()[0]}
    results, start = {}, time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        print("writing the checkpoint ...", file=sys.stderr, flush=True)
        info["checkpoint"] = run_job("checkpoint", folder, cfg, timeout)
        if "error" in info["checkpoint"]:
            sys.exit(f"could not write the checkpoint:\n{info['checkpoint']['error']}")
        for measure in [m for m in measures if m in MEASURERS]:
            for system in [s for s in systems if s in APPLIES.get(measure, SYSTEMS)]:
                print(f"{system} {measure} ...", file=sys.stderr, flush=True)
                results.setdefault(system, {})[measure] = run_job(f"{system}:{measure}", folder, cfg, timeout)
    if "scripts" in measures:
        for script in SCRIPTS:
            print(f"{script} ...", file=sys.stderr, flush=True)
            info[script] = run_script(script, args.quick, timeout, args.output)
    info.update(loadavg_end=os.getloadavg(), total_s=time.perf_counter() - start)
    weights = info["checkpoint"].get("weights_mb", 0)
    text = (f"GPT-2 shape: {cfg['layers']} layers, {cfg['hidden']} wide, {cfg['heads']} heads, vocabulary "
            f"{cfg['vocab']}, random weights ({weights:.0f} MB safetensors), fp32, greedy; best of {cfg['runs']}; "
            f"{info['cpu_count']} cores, load average {info['loadavg_start'][0]:.2f} → {info['loadavg_end'][0]:.2f}; "
            f"{info['total_s']:.0f} s in all.\nCells: value (tfllm ÷ system; above 1 tfllm is faster for tok/s, "
            "below 1 it is faster or smaller for ms, s and MB). Peak memory is the process' VmHWM, framework "
            "included.\n\n" + table(results, cfg, systems, args.baseline))
    marks = {True: "holds", False: "misses", None: "n/a"}
    text += "\n\nTargets (issue 7):\n" + "\n".join(f"- {marks[holds]}: {line}" for line, holds in targets(results, cfg))
    print(text)
    for system, per_measure in results.items():
        for measure, result in per_measure.items():
            if isinstance(result, dict) and "error" in result:
                print(f"\n{system} {measure} failed: {result['error'][-600:]}", file=sys.stderr)
    for script in SCRIPTS:
        if script in info:
            print(f"\n## {script}\n" + next(iter(info[script].values())).rstrip())
    with open(os.path.join(args.output, "suite.json"), "w") as f:
        json.dump({"config": cfg, "machine": info, "results": results, "table": text}, f, indent=2)
    chart(results, cfg, systems, os.path.join(args.output, "suite.png"))
    print(f"\nwrote {os.path.join(args.output, 'suite.json')} and suite.png", file=sys.stderr)


if __name__ == "__main__":
    main()
