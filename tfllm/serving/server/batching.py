"""Batching of concurrent requests, as TF Serving's batching session does, extended to generation.

Requests to the same model version and signature are queued together when they can share one run:
their batch inputs (first axis None) are concatenated on axis 0 and their other inputs (the
scalars `max_new_tokens`, `temperature`, ...) are equal. One batch runs the signature once and
each request gets its own rows back. Concurrent `serving_default` generate calls therefore share
one decoding loop (the in-graph tokenizer left-pads the prompts; greedy decoding of a left-padded
batch gives each row what it gives alone).

Queues follow TF Serving's scheduler: a batch holds at most `max_batch_size` rows, runs when it is
full, when a later batch has started, or `batch_timeout_micros` after it opened (0: as soon as a
batch thread is free), on `num_batch_threads` threads; at most `max_enqueued_batches` batches
wait per queue, and a request that needs one more is answered UNAVAILABLE.

Not merged (each runs alone, as without batching): signatures without batch inputs, requests whose
batch inputs disagree on their first axis, the `stream_*` signatures (their cache's batch is not
axis 0), sampling with a fixed `seed` (the noise depends on the row's place in the batch) and
token-id generation (`generate_ids`: rows that stop early would come back with the longer rows'
trailing padding). With `pad_variable_length_inputs`, inputs of rank 2 or more that differ on axis 1
(token ids, masks) are padded at the end with zeros, as TF Serving pads, and outputs whose axis 1
has the padded length are cut back to the request's length (right padding leaves a causal model's
real positions unchanged).
"""

import logging
import threading
import time

import numpy as np

from tfllm.export import signatures as sig
from tfllm.serving.server.errors import ServingError, invalid_argument

logger = logging.getLogger(__name__)


class _Task:
    def __init__(self, servable, signature, inputs, rows, widths, output_filter, deadline):
        self.servable, self.signature, self.inputs = servable, signature, inputs
        self.rows, self.widths, self.output_filter, self.deadline = rows, widths, output_filter, deadline
        self.done = threading.Event()
        self.result = self.error = None
        self.cancelled = False

    def finish(self, result=None, error=None):
        self.result, self.error = result, error
        self.done.set()


class _Batch:
    def __init__(self, key):
        self.key = key
        self.tasks = []
        self.size = 0
        self.opened = time.monotonic()


def plan(servable, signature, feed, pad_variable_length_inputs):
    """How a checked request joins a batch: `(queue key, rows, widths)`, or None when it runs alone.

    Args:
        servable: the `Servable` the request runs on.
        signature: the signature name.
        feed: `{input: numpy array}`, checked, defaults filled in.
        pad_variable_length_inputs: whether inputs may differ on axis 1.
    """
    batch_inputs = servable.batch_inputs(signature)
    if not batch_inputs or signature.startswith("stream_"):
        return None
    if sig.MAX_NEW_TOKENS in feed and any(feed[name].ndim >= 2 for name in batch_inputs):
        return None  # generate_ids
    if sig.DO_SAMPLE in feed and bool(feed[sig.DO_SAMPLE]) and sig.SEED in feed and int(feed[sig.SEED]) >= 0:
        return None
    rows = {feed[name].shape[0] if feed[name].ndim else None for name in batch_inputs}
    if len(rows) != 1 or None in rows or 0 in rows:
        return None
    key, widths = [servable.name, servable.version, id(servable), signature], {}
    for name in sorted(feed):
        value = feed[name]
        if name not in batch_inputs:
            key.append((name, value.dtype.str, value.shape, value.tobytes() if value.dtype != object else tuple(value.flat)))
        elif value.ndim >= 2 and pad_variable_length_inputs:
            key.append((name, value.dtype.str, value.shape[2:]))
            widths[name] = value.shape[1]
        else:
            key.append((name, value.dtype.str, value.shape[1:]))
    return tuple(key), rows.pop(), widths


class Batcher:
    """Queues, batch threads and the merge/split of requests (see the module docstring).

    Args:
        parameters: a `tfllm.serving.server.config.BatchingParameters`.
        on_batch: called as `on_batch(servable, signature, rows, requests)` after each merged run.
    """

    def __init__(self, parameters, on_batch=None):
        self.parameters = parameters
        self.on_batch = on_batch
        self._queues = {}  # key -> [_Batch], oldest first
        self._cond = threading.Condition()
        self._threads = []
        self._stopping = False
        self.batches_run = 0  # merged runs of two or more requests
        self.runs = 0  # every run, merged or alone

    def start(self):
        for index in range(self.parameters.num_batch_threads):
            thread = threading.Thread(target=self._work, name=f"{self.parameters.thread_pool_name}-{index}", daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self, timeout=10.0):
        """Runs what is queued, then ends the batch threads."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        end = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, end - time.monotonic()))
        self._threads = []

    def run(self, servable, signature, feed, key, rows, widths, output_filter=None, deadline=None):
        """Queues one request and waits for its rows; returns `{output: numpy array}`.

        Raises:
            ServingError: UNAVAILABLE when the queue is full or the batcher stopped,
                INVALID_ARGUMENT when the request alone exceeds `max_batch_size`,
                DEADLINE_EXCEEDED when `deadline` (a `time.monotonic()` value) passes first,
                or the error of the run.
        """
        task = _Task(servable, signature, feed, rows, widths, output_filter, deadline)
        self._enqueue(key, task)
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        if not task.done.wait(timeout):
            with self._cond:
                task.cancelled = True
            if not task.done.wait(0):
                raise ServingError("DEADLINE_EXCEEDED", "Deadline Exceeded")
        if task.error is not None:
            raise task.error
        return task.result

    # === Queues ===

    def _enqueue(self, key, task):
        limit = self.parameters.max_batch_size
        if task.rows > limit:
            raise invalid_argument(f"Task size {task.rows} is larger than maximum batch size {limit}")
        with self._cond:
            if self._stopping:
                raise ServingError("UNAVAILABLE", "Server is shutting down")
            queue = self._queues.setdefault(key, [])
            if not queue or queue[-1].size + task.rows > limit:
                if len(queue) >= self.parameters.max_enqueued_batches:
                    raise ServingError("UNAVAILABLE", "The batch scheduling queue to which this task was submitted is full")
                queue.append(_Batch(key))
            queue[-1].tasks.append(task)
            queue[-1].size += task.rows
            self._cond.notify()

    def _next_batch(self):
        """The oldest batch that may run now (or None), and how long to wait for one otherwise."""
        now, timeout = time.monotonic(), self.parameters.batch_timeout_micros / 1e6
        best, wait = None, None
        for queue in self._queues.values():
            head = queue[0]
            ready = (self._stopping or len(queue) > 1 or head.size >= self.parameters.max_batch_size
                     or now - head.opened >= timeout)
            if ready and (best is None or head.opened < best.opened):
                best = head
            elif not ready:
                left = head.opened + timeout - now
                wait = left if wait is None else min(wait, left)
        return best, wait

    def _work(self):
        while True:
            with self._cond:
                while True:
                    batch, wait = self._next_batch()
                    if batch is not None:
                        queue = self._queues[batch.key]
                        queue.pop(0)
                        if not queue:
                            del self._queues[batch.key]
                        break
                    if self._stopping:
                        return
                    self._cond.wait(wait)
                tasks = [task for task in batch.tasks if not task.cancelled]
            if tasks:
                self._process(tasks)

    # === Merge, run, split ===

    def _process(self, tasks):
        first = tasks[0]
        self.runs += 1
        if len(tasks) == 1:
            self._run_alone(first)
            return
        try:
            merged = _merge(tasks)
            outputs = first.servable.run(first.signature, merged, first.output_filter)
            results = _split(tasks, outputs)
        except ServingError as error:
            logger.info("A batch of %d requests failed (%s); running them one by one", len(tasks), error.message)
            results = None
        if results is None:
            for task in tasks:
                self._run_alone(task)
            return
        self.batches_run += 1
        for task, result in zip(tasks, results):
            task.finish(result)
        if self.on_batch is not None:
            try:
                self.on_batch(first.servable, first.signature, sum(task.rows for task in tasks), len(tasks))
            except Exception:  # noqa: BLE001  (a metrics failure must not fail requests)
                logger.exception("on_batch callback failed")

    @staticmethod
    def _run_alone(task):
        try:
            task.finish(task.servable.run(task.signature, task.inputs, task.output_filter))
        except ServingError as error:
            task.finish(error=error)
        except Exception as error:  # noqa: BLE001  (the request fails, the batch thread lives)
            logger.exception("Batched request failed")
            task.finish(error=ServingError("INTERNAL", f"{type(error).__name__}: {error}"))


def _merge(tasks):
    merged = {}
    for name, value in tasks[0].inputs.items():
        if name not in tasks[0].widths and not _is_batch_input(tasks, name):
            merged[name] = value
            continue
        parts = [task.inputs[name] for task in tasks]
        if name in tasks[0].widths:
            width = max(part.shape[1] for part in parts)
            parts = [_pad_axis1(part, width) for part in parts]
        merged[name] = np.concatenate(parts, axis=0)
    return merged


def _is_batch_input(tasks, name):
    return name in tasks[0].servable.batch_inputs(tasks[0].signature)


def _pad_axis1(value, width):
    if value.shape[1] == width:
        return value
    padding = [(0, 0)] * value.ndim
    padding[1] = (0, width - value.shape[1])
    fill = b"" if value.dtype == object else 0
    return np.pad(value, padding, constant_values=fill)


def _split(tasks, outputs):
    """Each task's rows of the outputs, cut back from padding; None when outputs are not row-aligned."""
    total = sum(task.rows for task in tasks)
    if any(value.ndim == 0 or value.shape[0] != total for value in outputs.values()):
        return None
    padded = {name: max(task.widths[name] for task in tasks) for name in tasks[0].widths}
    results, start = [], 0
    for task in tasks:
        result = {}
        for name, value in outputs.items():
            rows = value[start:start + task.rows]
            if value.ndim >= 2 and padded:
                cuts = {task.widths[n] for n, width in padded.items() if width == value.shape[1]}
                if len(cuts) > 1:
                    return None  # two padded inputs of this length: which one the output follows is unknown
                if cuts:
                    rows = rows[:, :cuts.pop()]
            result[name] = rows
        results.append(result)
        start += task.rows
    return results
