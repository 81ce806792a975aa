"""`tfllm export` and the quickstart's exports: versions, refusals, formats, one continuation from each."""

import os

import pytest

import tfllm
from testing import make_tiny_lm_folder
from tfllm import cli, quickstart
from tfllm.export import from_folder
from tfllm.export.from_folder import default_output

pytest.importorskip("tensorflow_text")

CORPUS = ["The river bank was steep and the water ran fast under the bridge.", "def main():\n    return 1"] * 20


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return make_tiny_lm_folder(tmp_path_factory.mktemp("export_cli") / "tiny_hf", CORPUS)


def test_default_outputs_follow_the_tf_serving_layout():
    assert default_output("x/quickstart_hf", "saved_model") == os.path.join("saved_models", "quickstart")
    assert default_output("x/m", "tflite") == os.path.join("saved_models", "m.tflite")
    assert default_output("x/m/", "onnx") == os.path.join("saved_models", "m_onnx")


@pytest.mark.slow
def test_export_writes_versions_and_refuses_an_existing_one(folder, tmp_path, capsys):
    base = tmp_path / "saved_models" / "tiny"
    assert cli.main(["export", str(folder), "--output", str(base), "--max-new-tokens", "4"]) == 0
    # Not a terminal: the steps as plain lines.
    assert _steps(capsys.readouterr().out) == ["[1/3] trace", "[2/3] write", "[3/3] verify in a fresh process"]
    assert cli.main(["export", str(folder), "--output", str(base), "--max-new-tokens", "4"]) == 0
    assert sorted(os.listdir(base)) == ["1", "2"]
    assert cli.main(["export", str(folder), "--output", str(base), "--version", "1"]) == 2
    assert "version=1" in capsys.readouterr().err
    assert sorted(os.listdir(base)) == ["1", "2"]


def _steps(out):
    """The export steps reported as done: "[i/n] name"."""
    return [line.split(": ", 1)[1].rsplit(": done in", 1)[0] for line in out.splitlines() if ": done in " in line]


def test_export_tflite_from_the_command_line(folder, tmp_path, capsys, monkeypatch):
    path = tmp_path / "tiny.tflite"
    assert cli.main(["export", str(folder), "--format", "tflite", "--output", str(path), "--cache-length", "32"]) == 0
    out = capsys.readouterr().out
    assert path.stat().st_size > 0 and "checked against the Keras model" in out
    assert _steps(out) == ["[1/4] trace", "[2/4] convert", "[3/4] write", "[4/4] verify"]
    # The one overwrite rule: an existing file is refused (before the model is loaded), naming it and the flag.
    monkeypatch.setattr(from_folder, "_LOADERS", {})
    assert cli.main(["export", str(folder), "--format", "tflite", "--output", str(path)]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and "--overwrite" in err


def test_export_of_a_missing_folder_names_it(tmp_path, capsys):
    assert cli.main(["export", str(tmp_path / "nope"), "--output", str(tmp_path / "out")]) == 2
    assert "nope" in capsys.readouterr().err


def test_unsupported_model_and_format_name_the_supported_formats(folder, tmp_path, capsys):
    code = cli.main(["export", str(folder), "--task", "backbone", "--format", "tflite", "--output", str(tmp_path / "b")])
    assert code == 2
    assert "tflite" in capsys.readouterr().err.lower()


@pytest.mark.slow
def test_quickstart_exports_a_saved_model_and_a_tflite_file(tmp_path):
    result = quickstart.run(tmp_path / "quickstart_hf", quickstart.QuickstartConfig.small(), progress="none")
    exported = quickstart.export(result["model"], result["tokenizer"], tmp_path, quickstart.QuickstartConfig.small())
    assert exported["saved_model"] == os.path.join(tmp_path, "quickstart", "1")
    assert exported["tflite"] == os.path.join(tmp_path, "quickstart.tflite")
    # Both are greedy, so both continue the prompt exactly as the Keras model does.
    tokenizer = tfllm.AutoTokenizer.from_pretrained(tmp_path / "quickstart_hf", padding_side="left")
    batch = tokenizer([quickstart.PROMPTS[0]], return_tensors="np")
    ids = result["model"].generate(batch["input_ids"], max_new_tokens=quickstart.QuickstartConfig.small().max_new_tokens)
    expected = tokenizer.decode(ids[0], skip_special_tokens=True)
    assert exported["saved_model_text"] == expected
    assert exported["tflite_text"] == expected
    assert exported["reused"] == set()
    # A second run that reused the model reuses its exports; one that retrained replaces quickstart's
    # own .tflite and adds a SavedModel version (no export ever refuses quickstart's second run).
    again = quickstart.export(result["model"], result["tokenizer"], tmp_path, quickstart.QuickstartConfig.small(),
                              reuse=True)
    assert again["reused"] == {"saved_model", "tflite"} and again["saved_model"] == exported["saved_model"]
    assert again["saved_model_text"] == expected and again["tflite_text"] == expected
    retrained = quickstart.export(result["model"], result["tokenizer"], tmp_path, quickstart.QuickstartConfig.small())
    assert retrained["saved_model"] == os.path.join(tmp_path, "quickstart", "2") and retrained["reused"] == set()
    assert retrained["tflite_text"] == expected
