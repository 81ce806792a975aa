"""`tfllm embed`: sentence embeddings and cosine similarities from the command line."""

import re

import numpy as np
import pytest

from testing import minilm_folder
from tfllm import cli

SENTENCES = ["The bank raised the interest rate", "Rates went up", "A cat sleeps on the sofa"]


@pytest.fixture(scope="module")
def minilm():
    return minilm_folder()


def _cosine_matrix(out, n):
    rows = [line for line in out.splitlines() if re.match(r"\[\d+\]\s+-?\d", line)]
    assert len(rows) == n, out
    return np.array([[float(x) for x in row.split()[1:]] for row in rows])


def test_embed_prints_sentence_transformers_cosines(minilm, capsys, tmp_path):
    sentence_transformers = pytest.importorskip("sentence_transformers")
    output = tmp_path / "embeddings.npy"

    assert cli.main(["embed", minilm, *SENTENCES, "--output", str(output)]) == 0
    out = capsys.readouterr().out
    assert out.count("shape (384,) norm 1.0000") == 3, out
    reference = sentence_transformers.SentenceTransformer(minilm, device="cpu").encode(SENTENCES)
    expected = reference @ reference.T  # normalized embeddings
    printed = _cosine_matrix(out, 3)
    assert np.abs(printed - expected).max() <= 0.5e-4 + 1e-6, (printed, expected)  # equal to 4 decimals
    saved = np.load(output)
    assert saved.shape == (3, 384)
    assert ((saved * reference).sum(-1) / np.linalg.norm(saved, axis=-1)).min() >= 0.99999


def test_embed_one_sentence_and_pooling_override(minilm, capsys):
    assert cli.main(["embed", minilm, "Rates went up", "--pooling", "cls"]) == 0
    out = capsys.readouterr().out
    assert "shape (384,)" in out and "cosine" not in out
    assert "norm 1.0000" not in out  # an explicit pooling mode does not normalize


def test_embed_missing_folder_exits_2_naming_it(tmp_path, capsys):
    missing = tmp_path / "no_such_model"
    assert cli.main(["embed", str(missing), "hello"]) == 2
    err = capsys.readouterr().err
    assert "tfllm embed: error:" in err and str(missing) in err


def test_embed_unknown_pooling_exits_2(minilm, capsys):
    assert cli.main(["embed", minilm, "hello", "--pooling", "median"]) == 2
    assert "Invalid value for argument `pooling`" in capsys.readouterr().err
