"""The `serving/` files that run the real TF Serving and `tfllm serve` parse as the servers read them, and a
short run of `benchmarks/serving_load.py`: concurrent gRPC clients against `tfllm serve` with and without
batching (`serving/batching.config`), zero failed requests, and a version dropped in under load is served."""

import importlib.util
import pathlib

import pytest
from google.protobuf import text_format

pytest.importorskip("tensorflow_serving")
pytest.importorskip("tensorflow_text")

REPO = pathlib.Path(__file__).resolve().parents[2]
BENCHMARK = REPO / "benchmarks" / "serving_load.py"
SERVING = REPO / "serving"


def _benchmark():
    spec = importlib.util.spec_from_file_location("serving_load_benchmark", BENCHMARK)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_models_config_is_a_model_server_config_for_the_container():
    from tensorflow_serving.config import model_server_config_pb2

    from tfllm.serving.server import config as config_lib

    config = text_format.Parse((SERVING / "models.config").read_text(), model_server_config_pb2.ModelServerConfig())
    config_lib.validate_model_server_config(config)
    (model,) = config.model_config_list.config
    assert (model.name, model.base_path, model.model_platform) == ("quickstart", "/models/quickstart", "tensorflow")
    assert model.model_version_policy.latest.num_versions == 2
    assert dict(model.version_labels) == {"stable": 1}


def test_batching_and_monitoring_configs_parse():
    from tfllm.serving.server import config as config_lib
    from tfllm.serving.server import metrics

    batching = config_lib.read_batching_parameters(str(SERVING / "batching.config"))
    assert batching.max_batch_size == 8 and batching.num_batch_threads == 2
    assert batching.batch_timeout_micros == 5000 and batching.max_enqueued_batches == 32
    assert metrics.prometheus_path(str(SERVING / "monitoring.config")) == "/monitoring/prometheus/metrics"


def test_compose_file_runs_tensorflow_serving_on_these_files():
    yaml = pytest.importorskip("yaml")
    (service,) = yaml.safe_load((SERVING / "docker-compose.yml").read_text())["services"].values()
    assert service["image"].startswith("tensorflow/serving:")
    assert set(service["ports"]) == {"8500:8500", "8501:8501"}
    assert "../saved_models:/models:ro" in service["volumes"] and "./:/config:ro" in service["volumes"]
    flags = dict((*flag.lstrip("-").split("=", 1), True)[:2] for flag in service["command"])
    assert (flags["port"], flags["rest_api_port"], flags["enable_batching"]) == ("8500", "8501", True)
    for flag in ("model_config_file", "batching_parameters_file", "monitoring_config_file"):
        assert flags[flag].startswith("/config/") and (SERVING / flags[flag][len("/config/"):]).is_file(), flag


@pytest.mark.slow
def test_load_with_and_without_batching_and_a_hot_swap(tmp_path):
    benchmark = _benchmark()
    result = benchmark.run(clients=4, seconds=10, max_new_tokens=4, swap_at=0.1, work_dir=str(tmp_path))
    print(benchmark.table(result))  # shown with `pytest -s`: the figures of this run
    runs = {run["mode"]: run for run in result["runs"]}
    assert set(runs) == {"no_batching", "batching"}
    for run in runs.values():
        assert run["requests"] > 0, run
        assert run["errors"] == 0, run["error_examples"]
    swap = runs["batching"]["hot_swap"]
    assert swap["failed_after_copy"] == 0, swap
    assert swap["new_version_served"], swap
    assert runs["batching"]["versions_served"].get("2", 0) > 0
