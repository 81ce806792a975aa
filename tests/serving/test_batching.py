"""Batching: TF Serving's BatchingParameters file, queue rules (full queue → UNAVAILABLE, too-large task,
timeouts, failures rerun alone), merge/split with padding, and concurrent generate requests on a real
export merged into one run with each request's own result."""

import concurrent.futures
import threading
import time

import numpy as np
import pytest

from tfllm.export import signatures as sig
from tfllm.serving.server.batching import Batcher, plan
from tfllm.serving.server.config import BatchingParameters, read_batching_parameters
from tfllm.serving.server.errors import ServingError


class FakeServable:
    """A servable whose `run` doubles `x`, optionally waiting for `gate`, and records each run's rows."""

    name, version = "fake", 1

    def __init__(self, gate=None, fail_rows=None):
        self.gate, self.fail_rows = gate, fail_rows
        self.runs = []

    def batch_inputs(self, signature):
        return ["x"]

    def run(self, signature, inputs, output_filter=None):
        if self.gate is not None:
            assert self.gate.wait(10)
        x = inputs["x"]
        self.runs.append(len(x))
        if self.fail_rows is not None and self.fail_rows in x[:, 0].tolist():
            raise ServingError("INVALID_ARGUMENT", f"row {self.fail_rows} is bad")
        return {"y": x * 2 + inputs.get("k", 0), "rows": np.arange(len(x))}


def submit(batcher, servable, x, k=0, deadline=None):
    feed = {"x": np.asarray(x), "k": np.int32(k)}
    key, rows, widths = plan(servable, "f", feed, batcher.parameters.pad_variable_length_inputs)
    return batcher.run(servable, "f", feed, key, rows, widths, deadline=deadline)


def run_concurrently(functions, timeout=60):
    with concurrent.futures.ThreadPoolExecutor(len(functions)) as pool:
        futures = [pool.submit(f) for f in functions]
        return [f.result(timeout=timeout) for f in futures]


def test_batching_parameters_file_in_tf_servings_text_format(tmp_path):
    path = tmp_path / "batching.config"
    path.write_text("max_batch_size { value: 8 }\nbatch_timeout_micros { value: 5000 }\n"
                    "max_enqueued_batches { value: 3 }\nnum_batch_threads { value: 2 }\n"
                    "pad_variable_length_inputs: true\nallowed_batch_sizes: 4\nallowed_batch_sizes: 8\n")
    parameters = read_batching_parameters(str(path))
    assert (parameters.max_batch_size, parameters.batch_timeout_micros, parameters.max_enqueued_batches,
            parameters.num_batch_threads, parameters.allowed_batch_sizes) == (8, 5000, 3, 2, (4, 8))
    assert parameters.pad_variable_length_inputs
    assert read_batching_parameters(None).max_enqueued_batches == 10  # TF Serving's default
    path.write_text("max_batch_size { value: 4 }\nenable_large_batch_splitting { value: true }\n")
    assert read_batching_parameters(str(path)).max_batch_size == 4  # newer TF Serving fields are ignored
    path.write_text("max_batch_size: 4\n")
    with pytest.raises(ValueError, match="Invalid protobuf file"):
        read_batching_parameters(str(path))
    with pytest.raises(ValueError, match=r"Invalid value for argument `max_batch_size`.*max_batch_size=0"):
        BatchingParameters(max_batch_size=0)


def test_concurrent_requests_are_merged_and_split_back():
    gate = threading.Event()
    servable = FakeServable(gate)
    batcher = Batcher(BatchingParameters(max_batch_size=10, batch_timeout_micros=1_000_000, num_batch_threads=1)).start()
    try:
        jobs = [lambda i=i: submit(batcher, servable, [[i], [i + 10]]) for i in range(3)]
        opener = threading.Timer(0.5, gate.set)  # all three are queued before the batch may run
        opener.start()
        results = run_concurrently(jobs)
    finally:
        batcher.stop()
    assert servable.runs == [6] and batcher.batches_run == 1
    for i, result in enumerate(results):
        np.testing.assert_array_equal(result["y"], [[2 * i], [2 * i + 20]])
        np.testing.assert_array_equal(result["rows"], [2 * i, 2 * i + 1])


def test_requests_with_other_scalars_are_not_merged():
    servable = FakeServable()
    batcher = Batcher(BatchingParameters(batch_timeout_micros=300_000, num_batch_threads=2)).start()
    try:
        results = run_concurrently([lambda: submit(batcher, servable, [[1]], k=0), lambda: submit(batcher, servable, [[1]], k=5)])
    finally:
        batcher.stop()
    assert sorted(servable.runs) == [1, 1]
    assert sorted(int(r["y"][0, 0]) for r in results) == [2, 7]


def test_a_full_queue_answers_unavailable_and_a_too_large_task_invalid_argument():
    gate = threading.Event()
    servable = FakeServable(gate)
    batcher = Batcher(BatchingParameters(max_batch_size=2, max_enqueued_batches=1, num_batch_threads=1)).start()
    try:
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            running = pool.submit(submit, batcher, servable, [[1], [2]])  # taken by the only batch thread
            time.sleep(0.3)
            queued = pool.submit(submit, batcher, servable, [[3], [4]])  # fills the one queue slot
            time.sleep(0.3)
            with pytest.raises(ServingError, match="The batch scheduling queue to which this task was submitted is full") as full:
                submit(batcher, servable, [[5]])
            assert full.value.code == "UNAVAILABLE"
            with pytest.raises(ServingError, match="Task size 3 is larger than maximum batch size 2") as big:
                submit(batcher, servable, [[6], [7], [8]])
            assert big.value.code == "INVALID_ARGUMENT"
            gate.set()
            assert running.result(10)["y"].tolist() == [[2], [4]] and queued.result(10)["y"].tolist() == [[6], [8]]
    finally:
        gate.set()
        batcher.stop()


def test_a_failed_batch_reruns_each_request_alone_so_only_the_bad_one_fails():
    gate = threading.Event()
    servable = FakeServable(gate, fail_rows=99)
    batcher = Batcher(BatchingParameters(batch_timeout_micros=1_000_000, num_batch_threads=1)).start()

    def bad():
        with pytest.raises(ServingError, match="row 99 is bad"):
            submit(batcher, servable, [[99]])
        return "failed as expected"

    try:
        threading.Timer(0.5, gate.set).start()
        good, failed = run_concurrently([lambda: submit(batcher, servable, [[1]]), bad])
    finally:
        batcher.stop()
    assert good["y"].tolist() == [[2]] and failed == "failed as expected"
    assert servable.runs == [1, 1] or servable.runs[1:] == [1, 1]  # the merged try may have failed first


def test_deadline_while_queued():
    gate = threading.Event()
    servable = FakeServable(gate)
    batcher = Batcher(BatchingParameters(num_batch_threads=1, batch_timeout_micros=5_000_000)).start()
    try:
        with pytest.raises(ServingError, match="Deadline Exceeded") as error:
            submit(batcher, servable, [[1]], deadline=time.monotonic() + 0.2)
        assert error.value.code == "DEADLINE_EXCEEDED"
    finally:
        gate.set()
        batcher.stop()


def test_variable_length_inputs_are_padded_at_the_end_and_outputs_cut_back():
    class Logits(FakeServable):
        def batch_inputs(self, signature):
            return ["ids", "mask"]

        def run(self, signature, inputs, output_filter=None):
            self.runs.append(inputs["ids"].shape)
            return {"logits": (inputs["ids"] * inputs["mask"])[:, :, None] * np.ones(3)}

    servable = Logits()
    batcher = Batcher(BatchingParameters(batch_timeout_micros=500_000, num_batch_threads=1,
                                         pad_variable_length_inputs=True)).start()

    def call(ids):
        feed = {"ids": np.array(ids), "mask": np.ones_like(ids)}
        return batcher.run(servable, "logits", feed, *plan(servable, "logits", feed, True))["logits"]

    try:
        short, long = run_concurrently([lambda: call([[1, 2]]), lambda: call([[3, 4, 5, 6], [7, 8, 9, 1]])])
    finally:
        batcher.stop()
    assert servable.runs == [(3, 4)]
    assert short.shape == (1, 2, 3) and short[0, :, 0].tolist() == [1, 2]
    assert long.shape == (2, 4, 3) and long[1, :, 0].tolist() == [7, 8, 9, 1]


# === On a real export ===


@pytest.fixture(scope="module")
def batching_app(exported_base, serving, tmp_path_factory):
    folder = tmp_path_factory.mktemp("batching")
    config = folder / "batching.config"
    config.write_text("max_batch_size { value: 16 }\nbatch_timeout_micros { value: 300000 }\n"
                      "num_batch_threads { value: 1 }\nmax_enqueued_batches { value: 4 }\n"
                      "pad_variable_length_inputs: true\n")
    base = serving.copy_base(exported_base, folder / serving.MODEL_NAME)
    app = serving.launch(base, enable_batching=True, batching_parameters_file=str(config), rest_api_port=0)
    yield app
    app.stop(grace_seconds=5)


def test_concurrent_generate_requests_share_one_run_and_each_gets_its_own_result(batching_app, tiny_lm, serving):
    core = batching_app.core
    prompts = [["The river"], ["A long, long prompt with several words: x = 1", "héllo 🙂"], ["def main():"]]
    before = core.batcher.batches_run

    def generate(texts):
        inputs = {sig.TEXT: np.array([t.encode() for t in texts], object), sig.MAX_NEW_TOKENS: np.int32(5)}
        return core.predict(serving.MODEL_NAME, inputs)[1][sig.COMPLETION]

    results = run_concurrently([lambda texts=texts: generate(texts) for texts in prompts])
    assert core.batcher.batches_run > before  # merged into fewer runs than requests
    model, tokenizer = tiny_lm
    for texts, result in zip(prompts, results):
        assert [r.decode() for r in result] == serving.local_completions(model, tokenizer, texts, max_new_tokens=5)
    assert batching_app.metrics is None or "batch_size" in batching_app.metrics.render()


def test_logits_of_padded_batches_equal_unbatched_logits(batching_app, serving):
    core, name = batching_app.core, serving.MODEL_NAME
    rows = [np.array([[5, 6, 7]], np.int32), np.array([[8, 9, 10, 11, 12], [13, 14, 15, 16, 17]], np.int32)]
    alone = [core.servable(name).run(sig.LOGITS, {sig.INPUT_IDS: r, sig.ATTENTION_MASK: np.ones_like(r)})[sig.LOGITS]
             for r in rows]
    before = core.batcher.batches_run
    batched = run_concurrently([
        lambda r=r: core.predict(name, {sig.INPUT_IDS: r, sig.ATTENTION_MASK: np.ones_like(r)},
                                 signature_name=sig.LOGITS)[1][sig.LOGITS] for r in rows])
    assert core.batcher.batches_run == before + 1
    for expected, got in zip(alone, batched):
        assert got.shape == expected.shape
        np.testing.assert_allclose(got, expected, atol=1e-4)
