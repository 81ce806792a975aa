"""Load test of `tfllm serve`: concurrent gRPC Predict clients, with and without batching, and a hot swap.

Run by hand (loopback only; a tiny random GPT-2 is exported to a temporary folder):

    .venv/bin/python benchmarks/serving_load.py --clients 8 --seconds 30 --json serving_load.json

For each mode (`--enable_batching` off, then on with `serving/batching.config`) it starts
`tfllm serve` as a subprocess on 127.0.0.1, lets `--clients` threads call
`PredictionService.Predict` (serving_default: one short prompt, `--max-new-tokens`) back to back
for `--seconds`, and reports requests/s, new tokens/s, p50/p99 latency and errors. The exported
model has no end-of-sequence token, so every request decodes exactly `--max-new-tokens` tokens.

During the batching run, `--swap-at` of the way in, the version folder is copied into the base
path as the next version (copied under a hidden name, then renamed, as TF Serving advises); the
clients keep going until the server answers from the new version (past `--seconds` if loading
takes longer), and failed requests are counted (the goal: none). The batching run also reads the
mean batch size from the server's Prometheus metrics (`serving/monitoring.config`).
`tests/serving/test_load.py` runs a short version of this and asserts both.
"""

import argparse
import collections
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BATCHING_CONFIG = os.path.join(REPO, "serving", "batching.config")
MONITORING_CONFIG = os.path.join(REPO, "serving", "monitoring.config")
METRICS_PATH = "/monitoring/prometheus/metrics"  # as serving/monitoring.config sets it
BATCH_SIZE_METRIC = ":tensorflow:serving:batching:batch_size"
MODEL_NAME = "tiny"
PROMPTS = ("The for statement", "A class", "If the exception", "Lists are", "def main():", "Import the module")
EOT = "<|endoftext|>"


def export_tiny_model(base, max_new_tokens, num_layers=2, hidden_dim=32):
    """Writes a random GPT-2 (byte-level BPE on Python's docs) as `base/1`; returns that path."""
    import keras
    import numpy as np

    from tfllm.export import saved_model
    from tfllm.models.gpt2 import GPT2Backbone, GPT2CausalLM
    from tfllm.training.data import pydoc_texts as load_corpus
    from tfllm.tokenizers import Tokenizer, train_byte_level_bpe

    keras.utils.set_random_seed(0)
    trained = train_byte_level_bpe(load_corpus(8), vocab_size=300, special_tokens=(EOT,))
    tokenizer = Tokenizer(trained.backend_tokenizer, bos_token=EOT, eos_token=EOT, unk_token=EOT, pad_token=EOT)
    backbone = GPT2Backbone(vocabulary_size=tokenizer.vocab_size, num_layers=num_layers, num_heads=2,
                            hidden_dim=hidden_dim, intermediate_dim=2 * hidden_dim, max_sequence_length=64, dropout=0.0)
    model = GPT2CausalLM(backbone, pad_token_id=tokenizer.pad_token_id)  # no eos: every row decodes max_new_tokens
    model({"input_ids": np.zeros((1, 4), "int32"), "attention_mask": np.ones((1, 4), "int32")})  # builds the weights
    # The export's own check reloads the model in a fresh process; the load test needs only the files.
    return saved_model(model, tokenizer, base, version=1, max_new_tokens=max_new_tokens, verify=False)


def free_port():
    """A port the OS picked on 127.0.0.1, released for the server to bind."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """`tfllm serve` in a subprocess on loopback; `stop()` ends it (SIGTERM, then SIGKILL)."""

    def __init__(self, base, batching, log_path, poll_seconds=1):
        self.grpc_port, self.rest_port = free_port(), free_port()
        command = [sys.executable, "-m", "tfllm.cli", "serve", "--model_name", MODEL_NAME, "--model_base_path", base,
                   "--port", str(self.grpc_port), "--grpc_bind_host", "127.0.0.1",
                   "--rest_api_port", str(self.rest_port), "--rest_api_host", "127.0.0.1",
                   "--monitoring_config_file", MONITORING_CONFIG, "--file_system_poll_wait_seconds", str(poll_seconds)]
        if batching:
            command += ["--enable_batching", "--batching_parameters_file", BATCHING_CONFIG]
        self.log_path = log_path
        self._log = open(log_path, "w")
        self.process = subprocess.Popen(command, stdout=self._log, stderr=subprocess.STDOUT, cwd=REPO,
                                        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})

    @property
    def target(self):
        return f"127.0.0.1:{self.grpc_port}"

    def wait_until_available(self, timeout):
        from tfllm.serving import Client, ServingClientError

        deadline = time.monotonic() + timeout
        with Client(self.target, timeout=5, retries=0) as client:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise RuntimeError(f"tfllm serve exited with {self.process.returncode}:\n{self.log_tail()}")
                try:
                    states = client.status(MODEL_NAME)["model_version_status"]
                    if any(s["state"] == "AVAILABLE" for s in states):
                        return
                except ServingClientError:
                    pass
                time.sleep(0.5)
        raise TimeoutError(f"tfllm serve was not serving {MODEL_NAME} after {timeout} s:\n{self.log_tail()}")

    def log_tail(self, lines=30):
        with open(self.log_path) as f:
            return "".join(f.readlines()[-lines:])

    def stop(self, timeout=30):
        self.process.terminate()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._log.close()


def _requests(max_new_tokens):
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    requests = []
    for prompt in PROMPTS:
        request = predict_pb2.PredictRequest()
        request.model_spec.name, request.model_spec.signature_name = MODEL_NAME, "serving_default"
        request.inputs["text"].CopyFrom(tf.make_tensor_proto([prompt]))
        request.inputs["max_new_tokens"].CopyFrom(tf.make_tensor_proto(max_new_tokens, dtype=tf.int32))
        requests.append(request)
    return requests


def _client(target, requests, start_index, stop, record):
    """One client: its own channel, Predict calls back to back until `stop` is set."""
    import grpc
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    with grpc.insecure_channel(target) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        index = start_index
        while not stop.is_set():
            request = requests[index % len(requests)]
            index += 1
            started = time.monotonic()
            try:
                response = stub.Predict(request, timeout=60)
            except grpc.RpcError as error:
                record(started, None, None, f"{error.code().name}: {error.details()}")
            else:
                record(started, time.monotonic() - started, response.model_spec.version.value, None)


class _HotSwap(threading.Thread):
    """At `at` seconds, copies version 1 to version 2 (hidden name, then rename); notes when it is AVAILABLE."""

    def __init__(self, base, target, at, started):
        super().__init__(daemon=True)
        self.base, self.target, self.at, self.started = base, target, at, started
        self.copied_at = self.available_at = None
        self.served = threading.Event()  # set by the first answer from version 2
        self.settle = 2.0  # seconds the clients keep going after it, when that is after the run's end

    def run(self):
        from tfllm.serving import Client, ServingClientError

        time.sleep(max(0.0, self.started + self.at - time.monotonic()))
        hidden = os.path.join(self.base, ".incoming_2")
        shutil.copytree(os.path.join(self.base, "1"), hidden)
        os.rename(hidden, os.path.join(self.base, "2"))
        self.copied_at = time.monotonic()
        with Client(self.target, timeout=5, retries=0) as client:
            while self.available_at is None and time.monotonic() - self.copied_at < 300:
                try:
                    states = client.status(MODEL_NAME, version=2)["model_version_status"]
                    if any(s["state"] == "AVAILABLE" for s in states):
                        self.available_at = time.monotonic()
                except ServingClientError:
                    pass
                time.sleep(0.2)


def _mean_batch_size(server):
    """Rows per batch run, from the server's Prometheus metrics (None without batches)."""
    import urllib.request

    url = f"http://127.0.0.1:{server.rest_port}{METRICS_PATH}"
    with urllib.request.urlopen(url, timeout=10) as response:
        lines = response.read().decode().splitlines()
    totals = {}
    for suffix in ("_sum", "_count"):
        values = [float(line.rsplit(" ", 1)[1]) for line in lines
                  if line.startswith(BATCH_SIZE_METRIC + suffix + "{") and f'model_name="{MODEL_NAME}"' in line]
        totals[suffix] = sum(values)
    return round(totals["_sum"] / totals["_count"], 2) if totals["_count"] else None


def run_mode(version_folder, work_dir, batching, clients, seconds, max_new_tokens, swap_at=None, start_timeout=180,
             swap_timeout=180):
    """One server, `clients` threads for `seconds`; returns the mode's figures (and the swap's, if any).

    With a swap, the clients keep going past `seconds` until version 2 has answered (at most
    `swap_timeout` more seconds), so a slow load still shows whether requests fail during it.
    """
    from tfllm.serving import Client

    name = "batching" if batching else "no_batching"
    base = os.path.join(work_dir, name, MODEL_NAME)
    shutil.copytree(version_folder, os.path.join(base, "1"))
    server = Server(base, batching, os.path.join(work_dir, f"{name}.log"))
    try:
        server.wait_until_available(start_timeout)
        requests = _requests(max_new_tokens)
        with Client(server.target, timeout=60) as client:  # a first call outside the timed window
            client.generate(MODEL_NAME, PROMPTS[0], max_new_tokens=max_new_tokens)
        results, lock, stop = [], threading.Lock(), threading.Event()
        started = time.monotonic()
        swap = _HotSwap(base, server.target, swap_at * seconds, started) if swap_at is not None else None

        def record(*row):
            with lock:
                results.append(row)
            if swap and row[2] == 2:
                swap.served.set()

        threads = [threading.Thread(target=_client, args=(server.target, requests, i, stop, record))
                   for i in range(clients)]
        for thread in threads + ([swap] if swap else []):
            thread.start()
        time.sleep(seconds)
        if swap and swap.served.wait(max(0.0, started + seconds + swap_timeout - time.monotonic())):
            time.sleep(max(0.0, swap.settle - (time.monotonic() - started - seconds)))  # a little of v2 after the run
        stop.set()
        for thread in threads:
            thread.join()
        elapsed = time.monotonic() - started
        if swap:
            swap.join(timeout=30)
        summary = _summary(name, results, elapsed, clients, max_new_tokens, swap, started)
        summary["mean_batch_size"] = _mean_batch_size(server) if batching else None
        return summary
    finally:
        server.stop()


def _summary(name, results, elapsed, clients, max_new_tokens, swap, started):
    import numpy as np

    latencies = np.array([latency for _, latency, _, error in results if error is None])
    errors = [error for _, _, _, error in results if error is not None]
    summary = {
        "mode": name, "clients": clients, "seconds": round(elapsed, 2), "requests": len(latencies),
        "errors": len(errors), "error_examples": sorted(set(errors))[:5],
        "requests_per_s": round(len(latencies) / elapsed, 2),
        "tokens_per_s": round(len(latencies) * max_new_tokens / elapsed, 1),
        "p50_ms": round(float(np.percentile(latencies, 50)) * 1e3, 1) if len(latencies) else None,
        "p99_ms": round(float(np.percentile(latencies, 99)) * 1e3, 1) if len(latencies) else None,
        "versions_served": dict(collections.Counter(str(v) for _, _, v, e in results if e is None)),
    }
    if swap:
        after = [(t, v, e) for t, _, v, e in results if swap.copied_at and t >= swap.copied_at]
        served_new = [t for t, v, e in after if e is None and v == 2]
        summary["hot_swap"] = {
            "copied_at_s": round(swap.copied_at - started, 2) if swap.copied_at else None,
            "available_after_s": round(swap.available_at - swap.copied_at, 2) if swap.available_at else None,
            "first_served_after_s": round(min(served_new) - swap.copied_at, 2) if served_new else None,
            "requests_after_copy": len(after),
            "failed_after_copy": sum(1 for _, _, e in after if e is not None),
            "new_version_served": bool(served_new),
        }
    return summary


def run(clients=8, seconds=30.0, max_new_tokens=8, swap_at=0.3, modes=("no_batching", "batching"), work_dir=None,
        num_layers=2, hidden_dim=32):
    """Exports the model and runs each mode; returns `{"config": ..., "runs": [...]}`."""
    own = work_dir is None
    work_dir = work_dir or tempfile.mkdtemp(prefix="tfllm_serving_load_")
    try:
        version_folder = export_tiny_model(os.path.join(work_dir, "export", MODEL_NAME), max_new_tokens, num_layers,
                                           hidden_dim)
        runs = [run_mode(version_folder, work_dir, mode == "batching", clients, seconds, max_new_tokens,
                         swap_at if mode == "batching" else None) for mode in modes]
        config = {"clients": clients, "seconds": seconds, "max_new_tokens": max_new_tokens, "prompts": len(PROMPTS),
                  "model": f"GPT-2, {num_layers} layers, hidden {hidden_dim}, random weights",
                  "batching_config": os.path.relpath(BATCHING_CONFIG, REPO), "cpus": os.cpu_count()}
        return {"config": config, "runs": runs}
    finally:
        if own:
            shutil.rmtree(work_dir, ignore_errors=True)


def table(result):
    """The runs as a Markdown table."""
    rows = ["| mode | clients | s | requests | errors | req/s | new tokens/s | p50 ms | p99 ms | rows/batch | "
            "versions served |",
            "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["runs"]:
        versions = ", ".join(f"v{k}: {n}" for k, n in sorted(r["versions_served"].items()))
        rows.append(f"| {r['mode']} | {r['clients']} | {r['seconds']} | {r['requests']} | {r['errors']} | "
                    f"{r['requests_per_s']} | {r['tokens_per_s']} | {r['p50_ms']} | {r['p99_ms']} | "
                    f"{r['mean_batch_size'] or '-'} | {versions} |")
    for r in result["runs"]:
        if "hot_swap" in r:
            s = r["hot_swap"]
            rows.append(f"\nhot swap ({r['mode']}): version 2 copied at {s['copied_at_s']} s, AVAILABLE after "
                        f"{s['available_after_s']} s, first answer from it after {s['first_served_after_s']} s; "
                        f"{s['failed_after_copy']} of {s['requests_after_copy']} requests after the copy failed")
    return "\n".join(rows)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients (default 8)")
    parser.add_argument("--seconds", type=float, default=30.0, help="length of each run (default 30)")
    parser.add_argument("--max-new-tokens", type=int, default=8, help="tokens each request generates (default 8)")
    parser.add_argument("--swap-at", type=float, default=0.3, help="when version 2 is dropped in (fraction of the run)")
    parser.add_argument("--modes", default="no_batching,batching", help="comma-separated: no_batching, batching")
    parser.add_argument("--num-layers", type=int, default=2, help="GPT-2 layers (default 2)")
    parser.add_argument("--hidden-dim", type=int, default=32, help="GPT-2 width (default 32)")
    parser.add_argument("--json", default=None, help="also write the result as JSON to this file")
    args = parser.parse_args(argv)
    result = run(args.clients, args.seconds, args.max_new_tokens, args.swap_at, tuple(args.modes.split(",")),
                 num_layers=args.num_layers, hidden_dim=args.hidden_dim)
    print(table(result))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
