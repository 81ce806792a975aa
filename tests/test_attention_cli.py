"""`tfllm attention` and `tfllm.inspect` on the real all-MiniLM-L6-v2 checkpoint, against transformers."""

import numpy as np
import pytest
import torch
import transformers

import tfllm
from testing import minilm_folder
from tfllm import cli, inspect

TEXT = "The bank raised the interest rate"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def folder():
    return minilm_folder()


@pytest.fixture(scope="module")
def models(folder):
    return dict(
        ours=tfllm.AutoModel.from_pretrained(folder),
        tokenizer=tfllm.AutoTokenizer.from_pretrained(folder),
        theirs=transformers.BertModel.from_pretrained(folder, attn_implementation="eager").eval(),
        hf_tokenizer=transformers.AutoTokenizer.from_pretrained(folder),
    )


@pytest.fixture(scope="module")
def hf_attentions(models):
    batch = models["hf_tokenizer"]([TEXT], return_tensors="pt")
    with torch.no_grad():
        attentions = models["theirs"](**batch, output_attentions=True).attentions
    tokens = models["hf_tokenizer"].convert_ids_to_tokens(batch["input_ids"][0])
    return tokens, [a[0].numpy() for a in attentions]  # per layer (num_heads, T, T)


def test_attention_map_matches_transformers(models, hf_attentions):
    tokens, theirs = hf_attentions
    result = inspect.attention_map(models["ours"], models["tokenizer"], TEXT, layer=2, head=1)
    assert result["tokens"] == tokens == ["[CLS]", "the", "bank", "raised", "the", "interest", "rate", "[SEP]"]
    assert result["attention"].shape == (len(tokens), len(tokens))
    assert np.abs(result["attention"] - theirs[2][1]).max() <= 1e-4
    np.testing.assert_allclose(result["attention"].sum(axis=1), 1.0, atol=1e-5)


def test_defaults_are_the_last_layer_and_head_zero_and_all_averages(models, hf_attentions):
    _, theirs = hf_attentions
    default = inspect.attention_map(models["ours"], models["tokenizer"], TEXT)
    assert (default["layer"], default["head"]) == (5, 0)
    assert np.abs(default["attention"] - theirs[5][0]).max() <= 1e-4
    mean = inspect.attention_map(models["ours"], models["tokenizer"], TEXT, layer=-2, head="all")
    assert mean["layer"] == 4
    assert np.abs(mean["attention"] - theirs[4].mean(axis=0)).max() <= 1e-4


def test_attention_map_of_a_task_model_is_its_backbones(folder, models):
    classifier = tfllm.AutoModelForSequenceClassification.from_pretrained(folder, num_labels=2)
    ours = inspect.attention_map(classifier, models["tokenizer"], TEXT, layer=2, head=1)
    expected = inspect.attention_map(models["ours"], models["tokenizer"], TEXT, layer=2, head=1)
    np.testing.assert_allclose(ours["attention"], expected["attention"], atol=1e-6)


@pytest.mark.parametrize("kwargs, message", [
    (dict(layer=6), "Invalid value for argument `layer`. Expected an integer from 0 to 5"),
    (dict(layer=-7), "Received: layer=-7"),
    (dict(head=12), "Invalid value for argument `head`. Expected an integer from 0 to 11"),
    (dict(head=-1), "Received: head=-1"),
    (dict(head="mean"), "or 'all' for their mean. Received: head='mean'"),
])
def test_attention_map_refuses_a_layer_or_head_the_model_lacks(models, kwargs, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(".", r"\.")):
        inspect.attention_map(models["ours"], models["tokenizer"], TEXT, **kwargs)


def test_plot_attention_refuses_a_matrix_that_does_not_fit_the_tokens(tmp_path):
    with pytest.raises(ValueError, match="Invalid value for argument `attention`"):
        inspect.plot_attention(["a", "b"], np.ones((3, 3)) / 3, str(tmp_path / "x.png"))


def _read_png(path):
    with open(path, "rb") as file:
        assert file.read(8) == PNG_SIGNATURE
    import matplotlib.image

    return matplotlib.image.imread(path)


def test_cli_writes_a_png_heatmap(folder, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["attention", folder, TEXT, "--layer", "2", "--head", "1", "--output", "tmp/x.png"]) == 0
    assert "layer 2, head 1" in capsys.readouterr().out
    pixels = _read_png(tmp_path / "tmp" / "x.png")
    height, width = pixels.shape[:2]
    assert 300 <= height <= 3000 and 300 <= width <= 3000 and width > height  # square map plus a colorbar
    assert pixels[..., :3].std() > 0.1  # not a blank image


def test_cli_average_of_the_heads(folder, tmp_path, capsys):
    output = tmp_path / "mean.png"
    assert cli.main(["attention", folder, TEXT, "--average", "--output", str(output)]) == 0
    assert "layer 5, mean of the heads" in capsys.readouterr().out
    _read_png(output)


@pytest.mark.parametrize("flags, message", [
    (["--layer", "6"], "Invalid value for argument `layer`. Expected an integer from 0 to 5"),
    (["--head", "12"], "Invalid value for argument `head`. Expected an integer from 0 to 11"),
])
def test_cli_bad_layer_or_head_exits_2(folder, tmp_path, capsys, flags, message):
    output = tmp_path / "x.png"
    assert cli.main(["attention", folder, TEXT, *flags, "--output", str(output)]) == 2
    assert message in capsys.readouterr().err
    assert not output.exists()


def test_cli_head_that_is_not_a_number_exits_2(folder, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["attention", folder, TEXT, "--head", "first"])
    assert exit_info.value.code == 2
    assert "argument --head: expected an integer or 'all'" in capsys.readouterr().err
