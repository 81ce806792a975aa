"""The embedded main job end to end (reduced size), the CLI on its output."""

import subprocess
import sys

import numpy as np
import pytest

from tfllm import cli, quickstart


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    folder = tmp_path_factory.mktemp("quickstart") / "model"
    result = quickstart.run(folder, quickstart.QuickstartConfig.small(), progress="none")
    return folder, result


def test_quickstart_loss_falls_and_text_decodes(trained):
    folder, result = trained
    losses = result["losses"]
    assert losses[-1] < losses[0] - 0.2, losses
    assert set(result["samples"]) == set(quickstart.PROMPTS)
    for prompt, text in result["samples"].items():
        assert text.startswith(prompt) and len(text) > len(prompt)
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in folder.iterdir()}


def test_quickstart_samples_say_their_settings_and_do_not_loop(trained):
    """Plain greedy decoding of this model is a run of blank lines; the samples' settings avoid it."""
    _, result = trained
    assert result["sample_settings"] == quickstart.describe_settings(quickstart.SAMPLE_SETTINGS)
    assert result["sample_settings"] == "greedy decoding (no_repeat_ngram_size=3)"
    for prompt, text in result["samples"].items():
        assert "\n" * 4 not in text[len(prompt):], text


def test_quickstart_folder_loads_in_transformers(trained):
    import torch
    import transformers

    import tfllm

    folder, _ = trained
    hf_tok = transformers.AutoTokenizer.from_pretrained(folder)
    hf_model = transformers.GPT2LMHeadModel.from_pretrained(folder).eval()
    tok = tfllm.AutoTokenizer.from_pretrained(folder)
    text = "The for statement is used to iterate"
    assert tok.encode(text) == hf_tok(text)["input_ids"]
    ids = np.array([tok.encode(text)])
    with torch.no_grad():
        reference = hf_model(torch.tensor(ids)).logits.numpy()
    ours = tfllm.AutoModelForCausalLM.from_pretrained(folder)(ids).numpy()
    np.testing.assert_allclose(ours, reference, atol=1e-4)


def test_cli_generate_prints_continuations(trained, capsys):
    folder, _ = trained
    code = cli.main(["generate", str(folder), "The for statement", "Exceptions", "--max-new-tokens", "5", "--seed", "1",
                     "--do-sample", "--top-p", "0.9"])
    out = capsys.readouterr().out
    assert code == 0
    assert "The for statement" in out and "Exceptions" in out


def test_cli_reports_bad_arguments_by_name(trained, capsys):
    folder, _ = trained
    code = cli.main(["generate", str(folder), "x", "--top-p", "2"])
    assert code == 2
    assert "`top_p`" in capsys.readouterr().err


def test_cli_reports_a_missing_folder(tmp_path, capsys):
    assert cli.main(["generate", str(tmp_path / "nope"), "x"]) == 2
    assert "nope" in capsys.readouterr().err


def test_a_second_run_reuses_the_finished_model_and_says_so(trained, capsys, monkeypatch):
    folder, result = trained

    def no_training(*args, **kwargs):
        raise AssertionError("trained again")

    monkeypatch.setattr(quickstart, "train", no_training)
    assert cli.main(["quickstart", "--small", "--output", str(folder), "--no-export"]) == 0
    out = capsys.readouterr().out
    assert f"reusing the model already trained in {folder} (tfllm quickstart --retrain trains it again)" in out
    losses = result["losses"]
    assert f"loss: {losses[0]:.3f} before training -> {losses[-1]:.3f} after" in out


class Retrained(Exception):
    pass


def test_retrain_and_other_settings_train_again(trained, monkeypatch):
    folder, _ = trained
    config = quickstart.QuickstartConfig.small()

    def train(output_dir, config, progress):
        raise Retrained(config.epochs)

    monkeypatch.setattr(quickstart, "train", train)
    assert quickstart.finished_losses(folder, config) is not None
    with pytest.raises(Retrained):
        cli.main(["quickstart", "--small", "--output", str(folder), "--no-export", "--retrain"])
    with pytest.raises(Retrained, match="2"):  # other settings: not the model asked for
        cli.main(["quickstart", "--small", "--epochs", "2", "--output", str(folder), "--no-export"])
    assert quickstart.finished_losses(folder, config) is not None  # the failed runs removed nothing


def test_console_script_is_installed():
    out = subprocess.run([sys.executable, "-m", "tfllm.cli", "--help"], capture_output=True, text=True, check=True).stdout
    assert "quickstart" in out and "generate" in out
