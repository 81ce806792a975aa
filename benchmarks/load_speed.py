"""Checkpoint load time and peak memory: tfllm against transformers PyTorch, GPT-2-small shape.

Run by hand (not in CI):  .venv/bin/python benchmarks/load_speed.py [--runs 2] [--json out.json]

A random GPT-2-small checkpoint is written once with transformers `save_pretrained` (one
`model.safetensors`). Each system then loads it in its own fresh process (imports done before the
clock starts), alternating systems run by run. Peak memory is the process's peak resident set
(`VmHWM`) during the load minus its resident set just before it; the peak is reset first through
`/proc/self/clear_refs` where the kernel allows, so import-time peaks do not count. It is reported
as a multiple of the weights' size (the sum of the checkpoint's tensor bytes): the loaded model
itself holds 1x. Numbers move with machine load, so compare the ratios of one run.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

CONFIG = dict(n_layer=12, n_embd=768, n_head=12, vocab_size=50257, n_positions=1024)

_CHILD = r"""
import json, os, sys, time

def status(field):
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return 0

system, folder = sys.argv[1], sys.argv[2]
if system == "tfllm":
    import tfllm
    load = lambda: tfllm.AutoModelForCausalLM.from_pretrained(folder)
else:
    import torch, transformers
    load = lambda: transformers.GPT2LMHeadModel.from_pretrained(folder)
try:
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")  # resets VmHWM to the current RSS
    reset = True
except OSError:
    reset = False
before = status("VmRSS")
start = time.perf_counter()
model = load()
seconds = time.perf_counter() - start
peak = status("VmHWM")
print(json.dumps({"seconds": seconds, "peak_delta_bytes": peak - before, "hwm_reset": reset}))
"""


def make_checkpoint(folder):
    """Writes a random GPT-2-small checkpoint; returns the weights' size in bytes."""
    import safetensors
    import torch
    import transformers

    torch.manual_seed(0)
    transformers.GPT2LMHeadModel(transformers.GPT2Config(**CONFIG)).save_pretrained(folder)
    total = 0
    with safetensors.safe_open(os.path.join(folder, "model.safetensors"), framework="numpy") as handle:
        for name in handle.keys():
            total += _nbytes(handle.get_slice(name))
    return total


def _nbytes(tensor_slice):
    import math

    itemsize = {"F32": 4, "F16": 2, "BF16": 2, "F64": 8}[tensor_slice.get_dtype()]
    return math.prod(tensor_slice.get_shape()) * itemsize


def run_child(system, folder):
    result = subprocess.run(
        [sys.executable, "-c", _CHILD, system, folder], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"{system} load failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2, help="loads per system; the fastest is reported")
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        weights_bytes = make_checkpoint(folder)
        runs = {"tfllm": [], "transformers": []}
        for _ in range(args.runs):
            for system in runs:
                runs[system].append(run_child(system, folder))
    results = {"weights_bytes": weights_bytes, "load_avg_1min": os.getloadavg()[0], "systems": {}}
    for system, measured in runs.items():
        results["systems"][system] = {
            "seconds": min(r["seconds"] for r in measured),
            "seconds_all": [round(r["seconds"], 3) for r in measured],
            "peak_x_weights": max(r["peak_delta_bytes"] for r in measured) / weights_bytes,
            "hwm_reset": all(r["hwm_reset"] for r in measured),
        }
    tf, pt = results["systems"]["tfllm"], results["systems"]["transformers"]
    results["tfllm_speed_vs_transformers"] = pt["seconds"] / tf["seconds"]
    print(f"weights: {weights_bytes / 2**20:.1f} MiB   load average (1 min): {results['load_avg_1min']:.2f}")
    print(f"{'system':<14}{'load s (min)':>14}{'all runs':>22}{'peak / weights':>16}")
    for system, row in results["systems"].items():
        print(f"{system:<14}{row['seconds']:>14.2f}{str(row['seconds_all']):>22}{row['peak_x_weights']:>16.2f}")
    print(f"tfllm load speed vs transformers PyTorch: {results['tfllm_speed_vs_transformers']:.2f}x "
          f"(target >= 1.0); tfllm peak {tf['peak_x_weights']:.2f}x weights (target <= 1.3)")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(results, handle, indent=2)


if __name__ == "__main__":
    main()
