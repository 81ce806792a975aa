"""Prometheus metrics under TF Serving's names, shared by the REST and gRPC front ends.

TF Serving names a metric `/tensorflow/serving/request_count` and its Prometheus exporter prints it
as `:tensorflow:serving:request_count` (every character outside `[a-zA-Z0-9_]` becomes `:`), with a
`# TYPE` line per family and no `# HELP`. We keep those names, label sets and units, so dashboards
built for TF Serving read `tfllm serve` unchanged:

| metric | type | labels | TF Serving's meaning |
|---|---|---|---|
| `:tensorflow:serving:request_count` | counter | model_name, status | requests by gRPC status name |
| `:tensorflow:serving:request_latency` | histogram (µs) | model_name, API, entrypoint | wall time per request |
| `:tensorflow:serving:batching:batch_size` | histogram | model_name, op_name | size of each batch run |

and one family of our own, for the per-version error counts TF Serving does not break out:

| `:tfllm:serving:request_count` | counter | model_name, version, API, entrypoint, status | |
"""

import logging
import math
import threading

from tfllm.serving.server.config import read_text_proto

logger = logging.getLogger(__name__)

# TF Serving's request latency buckets: Exponential(scale=10 µs, growth=1.8, count=33), ~20 minutes.
LATENCY_BUCKETS_MICROS = tuple(10.0 * 1.8**i for i in range(33))
# TF's batch size buckets: Exponential(1, 1.5, 20).
BATCH_SIZE_BUCKETS = tuple(1.5**i for i in range(20))

PROMETHEUS_PATH = "/monitoring/prometheus/metrics"  # TF Serving's default
REQUEST_COUNT = ":tensorflow:serving:request_count"
REQUEST_LATENCY = ":tensorflow:serving:request_latency"
BATCH_SIZE = ":tensorflow:serving:batching:batch_size"
VERSION_REQUEST_COUNT = ":tfllm:serving:request_count"

# A label set per model name a client typed is a memory leak waiting for a scan; cap the series.
MAX_SERIES_PER_METRIC = 10_000


class _Histogram:
    def __init__(self, limits):
        self.limits = limits
        self.counts = [0] * (len(limits) + 1)  # the last bucket is +Inf
        self.sum = 0.0

    def add(self, value):
        index = next((i for i, limit in enumerate(self.limits) if value <= limit), len(self.limits))
        self.counts[index] += 1
        self.sum += value


class Metrics:
    """Request counts, latencies and batch sizes, rendered in Prometheus' text format.

    Thread-safe: the REST handler threads, the gRPC servicer and the batcher call it concurrently.

    Example:
    ```python
    metrics = Metrics()
    metrics.record_request("gpt2", 1, "predict", "OK", 0.012, entrypoint="GRPC")
    metrics.record_batch("gpt2", 4, signature="serving_default")
    text = metrics.render()   # what GET /monitoring/prometheus/metrics returns
    ```
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._counters = {REQUEST_COUNT: {}, VERSION_REQUEST_COUNT: {}}
        self._histograms = {REQUEST_LATENCY: {}, BATCH_SIZE: {}}
        self._limits = {REQUEST_LATENCY: LATENCY_BUCKETS_MICROS, BATCH_SIZE: BATCH_SIZE_BUCKETS}
        self._dropped = set()

    def record_request(self, model, version, api, status_code, latency_seconds, entrypoint="REST"):
        """Counts one finished request and its latency.

        Args:
            model: the model name the request asked for.
            version: the version that served it (int), or None when none was resolved.
            api: TF Serving's API label: "predict", "GetModelMetadata", "GetModelStatus", or
                ours: "generate", "generate_stream".
            status_code: the gRPC status name the request ended with ("OK", "NOT_FOUND", ...).
            latency_seconds: wall time from receiving the request to the last byte of the answer.
            entrypoint: "REST" or "GRPC", as TF Serving labels them.
        """
        model, api, status_code = str(model), str(api), str(status_code)
        version = "" if version is None else str(version)
        with self._lock:
            self._increment(REQUEST_COUNT, (("model_name", model), ("status", status_code)))
            self._increment(VERSION_REQUEST_COUNT, (
                ("model_name", model), ("version", version), ("API", api), ("entrypoint", entrypoint),
                ("status", status_code)))
            self._observe(REQUEST_LATENCY, (("model_name", model), ("API", api), ("entrypoint", entrypoint)),
                          max(0.0, latency_seconds) * 1e6)

    def record_batch(self, model, size, signature=""):
        """Counts one batch run of `size` requests' rows (TF labels the signature as `op_name`)."""
        with self._lock:
            self._observe(BATCH_SIZE, (("model_name", str(model)), ("op_name", str(signature))), float(size))

    def counter(self, name, **labels):
        """The current value of one counter series (0 when never incremented); for tests and logs."""
        key = tuple(sorted(labels.items()))
        with self._lock:
            return sum(value for series, value in self._counters[name].items() if tuple(sorted(series)) == key)

    def render(self):
        """The whole page in Prometheus' text exposition format (version 0.0.4)."""
        lines = []
        with self._lock:
            for name in (REQUEST_COUNT, VERSION_REQUEST_COUNT):
                if self._counters[name]:
                    lines.append(f"# TYPE {name} counter")
                    lines.extend(f"{name}{{{_labels(series)}}} {value}" for series, value in self._counters[name].items())
            for name in (REQUEST_LATENCY, BATCH_SIZE):
                if self._histograms[name]:
                    lines.append(f"# TYPE {name} histogram")
                    for series, histogram in self._histograms[name].items():
                        lines.extend(_histogram_lines(name, series, histogram))
        return "\n".join(lines) + "\n"

    def _increment(self, name, series):
        table = self._counters[name]
        if series in table or self._has_room(name, table):
            table[series] = table.get(series, 0) + 1

    def _observe(self, name, series, value):
        table = self._histograms[name]
        if series not in table:
            if not self._has_room(name, table):
                return
            table[series] = _Histogram(self._limits[name])
        table[series].add(value)

    def _has_room(self, name, table):
        if len(table) < MAX_SERIES_PER_METRIC:
            return True
        if name not in self._dropped:
            self._dropped.add(name)
            logger.warning("Metric %s reached %d label sets; new ones are not recorded", name, MAX_SERIES_PER_METRIC)
        return False


def _escape(value):
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(series):
    return ",".join(f'{key}="{_escape(value)}"' for key, value in series)


def _limit(value):
    # absl::StrCat(double), as TF Serving prints a bucket's upper bound: six significant digits.
    return "+Inf" if math.isinf(value) else f"{value:.6g}"


def _histogram_lines(name, series, histogram):
    labels = _labels(series)
    prefix = f"{name}_bucket{{{labels}{',' if labels else ''}"
    cumulative = 0
    for limit, count in zip((*histogram.limits, math.inf), histogram.counts):
        cumulative += count
        yield f'{prefix}le="{_limit(limit)}"}} {cumulative}'
    yield f"{name}_sum{{{labels}}} {histogram.sum!r}"
    yield f"{name}_count{{{labels}}} {cumulative}"


def prometheus_path(monitoring_config_file):
    """The metrics path: TF Serving's, or what a text-format MonitoringConfig says (None: disabled)."""
    if not monitoring_config_file:
        return PROMETHEUS_PATH  # TF Serving serves none without the file; tfllm serves them by default
    prometheus = read_text_proto(monitoring_config_file, _monitoring_config_message()).prometheus_config
    return (prometheus.path or PROMETHEUS_PATH) if prometheus.enable else None


def _monitoring_config_message():
    """An empty `tensorflow.serving.MonitoringConfig` (monitoring_config.proto; tensorflow-serving-api lacks it)."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    field = descriptor_pb2.FieldDescriptorProto
    file = descriptor_pb2.FileDescriptorProto(name="tfllm/monitoring_config.proto", package="tensorflow.serving",
                                              syntax="proto3")
    prometheus = file.message_type.add(name="PrometheusConfig")
    prometheus.field.add(name="enable", number=1, type=field.TYPE_BOOL, label=field.LABEL_OPTIONAL)
    prometheus.field.add(name="path", number=2, type=field.TYPE_STRING, label=field.LABEL_OPTIONAL)
    config = file.message_type.add(name="MonitoringConfig")
    config.field.add(name="prometheus_config", number=1, type=field.TYPE_MESSAGE, label=field.LABEL_OPTIONAL,
                     type_name=".tensorflow.serving.PrometheusConfig")
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("tensorflow.serving.MonitoringConfig"))()
