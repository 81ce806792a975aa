"""The architecture as a contract: the import layers (`lint-imports`, contracts in setup.cfg), no family
knowledge outside `tfllm/models/`, and no function-level import that hides a cycle."""

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "tfllm"
# Every family registered in tfllm.models.auto, and the model_types they load.
FAMILY_NAMES = ("gpt2", "bert", "llama", "t5", "mistral", "qwen2", "roberta", "distilbert")
FAMILY_PATTERN = re.compile(r"(?<![a-z0-9])(" + "|".join(FAMILY_NAMES) + r")(?![a-z0-9])", re.IGNORECASE)
# File names other libraries chose (sentence-transformers' config file), not a family tfllm knows.
FOREIGN_NAMES = {"sentence_bert_config.json"}


# Hugging Face names tokenizer classes after models (`"tokenizer_class": "T5Tokenizer"`): the tokenizers
# package reproduces those classes' formats and defaults, which is tokenizer knowledge, not a model family's.
FAMILY_KNOWLEDGE_ALLOWED = ("tfllm/models/", "tfllm/tokenizers/")


def _modules(outside_models=False):
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(ROOT).as_posix()
        if outside_models and relative.startswith(FAMILY_KNOWLEDGE_ALLOWED):
            continue
        yield relative, path.read_text(encoding="utf-8")


def _docstrings(tree):
    nodes = [tree] + [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]
    return {id(n.body[0].value) for n in nodes if n.body and isinstance(n.body[0], ast.Expr)
            and isinstance(n.body[0].value, ast.Constant)}


def _names_in_code(tree):
    """Identifiers and string literals (docstrings left out: prose may cite a paper's model)."""
    docstrings = _docstrings(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            yield node.lineno, node.value
        elif isinstance(node, ast.Name):
            yield node.lineno, node.id
        elif isinstance(node, ast.Attribute):
            yield node.lineno, node.attr
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            yield node.lineno, node.name
        elif isinstance(node, ast.alias):
            yield node.lineno, node.name
        elif isinstance(node, ast.ImportFrom) and node.module:
            yield node.lineno, node.module


def test_lint_imports_keeps_the_contracts_of_setup_cfg():
    pytest.importorskip("importlinter")
    lint_imports = os.path.join(os.path.dirname(sys.executable), "lint-imports")
    done = subprocess.run([lint_imports, "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout and "BROKEN" not in done.stdout


def test_no_family_name_in_code_outside_models():
    found = [f"{path}:{line}: {text!r}" for path, source in _modules(outside_models=True)
             for line, text in _names_in_code(ast.parse(source))
             if FAMILY_PATTERN.search(text) and text not in FOREIGN_NAMES]
    assert not found, "family names outside tfllm/models/:\n" + "\n".join(found)


def test_no_model_type_comparison_outside_models():
    found = []
    for path, source in _modules(outside_models=True):
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.Compare) and "model_type" in ast.unparse(node):
                found.append(f"{path}:{node.lineno}: {ast.unparse(node)}")
    assert not found, "model_type comparisons outside tfllm/models/:\n" + "\n".join(found)


def test_every_function_level_import_of_tfllm_says_why():
    """A function-level import must not dodge a cycle: each one carries `# lazy: <reason>`."""
    found = []
    for path, source in _modules():
        lines, tree = source.split("\n"), ast.parse(source)
        for function in ast.walk(tree):
            if not isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(function):
                module = node.module if isinstance(node, ast.ImportFrom) else (
                    node.names[0].name if isinstance(node, ast.Import) else None)
                if module and module.split(".")[0] == "tfllm":
                    said = "# lazy:" in lines[node.end_lineno - 1] or "# lazy:" in lines[node.lineno - 2]
                    if not said:
                        found.append(f"{path}:{node.lineno}: {lines[node.lineno - 1].strip()}")
    assert not found, "function-level imports without a `# lazy:` reason:\n" + "\n".join(found)


def test_the_checks_see_what_they_look_for():
    """The scanners find a planted family name, comparison and unexplained import (they can fail)."""
    planted = ast.parse('def f(model):\n    from tfllm import x\n    return model.model_type == "bert"\n')
    assert any(FAMILY_PATTERN.search(text) for _, text in _names_in_code(planted))
    assert any(isinstance(n, ast.Compare) and "model_type" in ast.unparse(n) for n in ast.walk(planted))
    docstring_only = ast.parse('"""GPT-2 and BERT, T5 in prose."""\nx = 1\n')
    assert not any(FAMILY_PATTERN.search(text) for _, text in _names_in_code(docstring_only))
