"""Decode speed of a GPT-2-small shaped model (random weights): tfllm against transformers PyTorch
and a BLAS floor (numpy: per token, one matrix-vector product over every weight matrix, LM head included).

Run by hand (not in CI):  .venv/bin/python benchmarks/decode_speed.py [--new-tokens 64] [--prompt 32]

Each system runs in its own process, one after the other, on the same random checkpoint; the
table reports decode tokens/s at batch 1 with greedy decoding. Numbers move with machine load,
so compare the ratios of one run.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

CONFIG = dict(n_layer=12, n_embd=768, n_head=12, vocab_size=50257, n_positions=1024)


def make_checkpoint(folder):
    import torch
    import transformers

    torch.manual_seed(0)
    transformers.GPT2LMHeadModel(transformers.GPT2Config(**CONFIG)).save_pretrained(folder)


def _time_runs(fn, runs):
    fn()  # warm-up: tracing / first call
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def run_tfllm(folder, prompt, new_tokens, runs, jit_compile):
    import numpy as np

    import tfllm

    model = tfllm.AutoModelForCausalLM.from_pretrained(folder)
    ids = np.random.default_rng(0).integers(0, 50000, (1, prompt)).astype("int32")
    prefill = _time_runs(lambda: model.generate(ids, max_new_tokens=1, eos_token_id=-1, jit_compile=jit_compile), runs)
    total = _time_runs(lambda: model.generate(ids, max_new_tokens=new_tokens, eos_token_id=-1, jit_compile=jit_compile), runs)
    return {"prefill_s": prefill, "total_s": total}


def run_blas_floor(folder, prompt, new_tokens, runs):
    """Per token one `x @ W` over every weight matrix of the model (the LM head included), in numpy."""
    import numpy as np
    from safetensors.numpy import load_file

    weights = load_file(os.path.join(folder, "model.safetensors"))
    # Conv1D kernels are (in, out); the tied LM head is the (vocab, hidden) token table, used transposed.
    matrices = [w for name, w in weights.items() if w.ndim == 2 and not name.endswith("wpe.weight")]
    inputs = {n: np.ones((1, n), np.float32) for w in matrices for n in w.shape}

    def decode(n):
        for _ in range(n):
            for w in matrices:
                if w.shape[0] == CONFIG["vocab_size"]:
                    inputs[w.shape[1]] @ w.T
                else:
                    inputs[w.shape[0]] @ w

    total = _time_runs(lambda: decode(new_tokens - 1), runs)
    return {"prefill_s": 0.0, "total_s": total}


def run_transformers(folder, prompt, new_tokens, runs):
    import torch
    import transformers

    model = transformers.GPT2LMHeadModel.from_pretrained(folder).eval()
    ids = torch.randint(0, 50000, (1, prompt), generator=torch.Generator().manual_seed(0))
    kwargs = dict(do_sample=False, pad_token_id=0, eos_token_id=None)

    def generate(n):
        with torch.no_grad():
            model.generate(ids, max_new_tokens=n, min_new_tokens=n, **kwargs)

    prefill = _time_runs(lambda: generate(1), runs)
    total = _time_runs(lambda: generate(new_tokens), runs)
    return {"prefill_s": prefill, "total_s": total}


SYSTEMS = {
    "tfllm (default: XLA step)": lambda a: run_tfllm(a.folder, a.prompt, a.new_tokens, a.runs, None),
    "tfllm (jit_compile=False)": lambda a: run_tfllm(a.folder, a.prompt, a.new_tokens, a.runs, False),
    "tfllm (jit_compile=True)": lambda a: run_tfllm(a.folder, a.prompt, a.new_tokens, a.runs, True),
    "transformers PyTorch": lambda a: run_transformers(a.folder, a.prompt, a.new_tokens, a.runs),
    "BLAS floor (numpy)": lambda a: run_blas_floor(a.folder, a.prompt, a.new_tokens, a.runs),
}


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--prompt", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--only", action="append", help="measure only these systems (repeatable)")
    parser.add_argument("--system", help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if args.system:  # child process: measure one system, print JSON
        print("RESULT " + json.dumps(SYSTEMS[args.system](args)))
        return
    with tempfile.TemporaryDirectory() as folder:
        make_checkpoint(folder)
        results = {}
        for name in args.only or SYSTEMS:
            out = subprocess.run(
                [sys.executable, __file__, "--system", name, "--folder", folder, "--prompt", str(args.prompt),
                 "--new-tokens", str(args.new_tokens), "--runs", str(args.runs)],
                capture_output=True, text=True, check=True,
            ).stdout
            result = json.loads(next(line for line in out.splitlines() if line.startswith("RESULT "))[7:])
            result["decode_tokens_per_s"] = (args.new_tokens - 1) / (result["total_s"] - result["prefill_s"])
            results[name] = result

    def ratio(result, base):
        if base not in results:
            return f"{'-':>10s}"
        return f"{result['decode_tokens_per_s'] / results[base]['decode_tokens_per_s']:9.2f}x"

    print(f"GPT-2-small shape, random weights, batch 1, prompt {args.prompt}, {args.new_tokens} new tokens, greedy")
    print(f"{'system':28s} {'decode tok/s':>12s} {'vs PyTorch':>10s} {'vs floor':>10s} {'prefill ms':>10s}")
    for name, result in results.items():
        print(f"{name:28s} {result['decode_tokens_per_s']:12.1f} {ratio(result, 'transformers PyTorch')} "
              f"{ratio(result, 'BLAS floor (numpy)')} {1000 * result['prefill_s']:10.0f}")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
