"""`Metrics`: TF Serving's metric names and labels in Prometheus' text format, histograms, escaping,
thread safety, the series cap, and the metrics path a MonitoringConfig file sets."""

import re
import threading

import pytest

from tfllm.serving.server import metrics as metrics_lib
from tfllm.serving.server.metrics import Metrics, prometheus_path

LINE = re.compile(r'[a-zA-Z_:][a-zA-Z0-9_:]*(\{([a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\.)*",?)*\})? \S+')


def _lines(text):
    assert text.endswith("\n")
    for line in text.splitlines():
        assert line.startswith("# TYPE ") or LINE.fullmatch(line), line
    return text.splitlines()


def test_requests_render_under_tf_servings_names():
    metrics = Metrics()
    metrics.record_request("gpt2", 1, "predict", "OK", 0.0025)
    metrics.record_request("gpt2", 1, "predict", "OK", 0.5, entrypoint="GRPC")
    metrics.record_request("gpt2", None, "predict", "NOT_FOUND", 0.0001)
    lines = _lines(metrics.render())
    assert "# TYPE :tensorflow:serving:request_count counter" in lines
    assert ':tensorflow:serving:request_count{model_name="gpt2",status="OK"} 2' in lines
    assert ':tensorflow:serving:request_count{model_name="gpt2",status="NOT_FOUND"} 1' in lines
    assert ':tfllm:serving:request_count{model_name="gpt2",version="1",API="predict",entrypoint="GRPC",status="OK"} 1' in lines
    assert ':tfllm:serving:request_count{model_name="gpt2",version="",API="predict",entrypoint="REST",status="NOT_FOUND"} 1' in lines
    assert metrics.counter(metrics_lib.REQUEST_COUNT, model_name="gpt2", status="OK") == 2


def test_latency_histogram_is_cumulative_in_microseconds():
    metrics = Metrics()
    for seconds in (0.000005, 0.000015, 0.002, 5000.0):
        metrics.record_request("m", 1, "predict", "OK", seconds)
    lines = _lines(metrics.render())
    name = ":tensorflow:serving:request_latency"
    buckets = [line for line in lines if line.startswith(f'{name}_bucket{{model_name="m",API="predict",entrypoint="REST",')]
    assert len(buckets) == 34  # TF Serving's 33 exponential limits (10 µs × 1.8^i), then +Inf
    assert buckets[0] == f'{name}_bucket{{model_name="m",API="predict",entrypoint="REST",le="10"}} 1'
    assert buckets[1].endswith('le="18"} 2')
    counts = [int(line.rsplit(" ", 1)[1]) for line in buckets]
    assert counts == sorted(counts) and counts[-2] == 3 and counts[-1] == 4  # 5000 s is past ~20 minutes
    assert buckets[-1].endswith('le="+Inf"} 4')
    assert f'{name}_count{{model_name="m",API="predict",entrypoint="REST"}} 4' in lines
    total = float(next(line for line in lines if line.startswith(f"{name}_sum")).rsplit(" ", 1)[1])
    assert total == pytest.approx(5000.002020e6)


def test_batch_sizes_and_label_escaping():
    metrics = Metrics()
    for size in (1, 3, 3, 8):
        metrics.record_batch('we"ird\\name', size, signature="serving_default")
    lines = _lines(metrics.render())
    prefix = ':tensorflow:serving:batching:batch_size_bucket{model_name="we\\"ird\\\\name",op_name="serving_default",'
    assert f'{prefix}le="1"}} 1' in lines and f'{prefix}le="3.375"}} 3' in lines and f'{prefix}le="+Inf"}} 4' in lines
    assert any(line.endswith("_sum{" + prefix.split("{", 1)[1].rstrip(",") + "} 15.0") for line in lines)


def test_concurrent_recording_loses_nothing():
    metrics = Metrics()

    def work():
        for _ in range(500):
            metrics.record_request("m", 2, "predict", "OK", 0.001)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert metrics.counter(metrics_lib.REQUEST_COUNT, model_name="m", status="OK") == 4000
    assert ':tensorflow:serving:request_latency_count{model_name="m",API="predict",entrypoint="REST"} 4000' in metrics.render()


def test_label_sets_are_capped(monkeypatch, caplog):
    monkeypatch.setattr(metrics_lib, "MAX_SERIES_PER_METRIC", 3)
    metrics = Metrics()
    for index in range(5):
        metrics.record_request(f"model{index}", 1, "predict", "NOT_FOUND", 0.001)
    metrics.record_request("model0", 1, "predict", "NOT_FOUND", 0.001)  # known series still count
    text = metrics.render()
    assert 'model_name="model2"' in text and 'model_name="model3"' not in text
    assert metrics.counter(metrics_lib.REQUEST_COUNT, model_name="model0", status="NOT_FOUND") == 2
    assert "reached 3 label sets" in caplog.text


def test_an_empty_page_is_valid():
    assert Metrics().render() == "\n"


def test_metrics_path_from_a_monitoring_config_file(tmp_path):
    assert prometheus_path("") == "/monitoring/prometheus/metrics"
    config = tmp_path / "monitoring.config"
    config.write_text('prometheus_config {\n  enable: true\n  path: "/metrics"\n}\n')
    assert prometheus_path(str(config)) == "/metrics"
    config.write_text("prometheus_config { enable: true }\n")
    assert prometheus_path(str(config)) == "/monitoring/prometheus/metrics"
    config.write_text("prometheus_config { enable: false }\n")
    assert prometheus_path(str(config)) is None
    config.write_text("prometheus_config { enabled: true }\n")
    with pytest.raises(ValueError, match="Invalid protobuf file"):
        prometheus_path(str(config))
