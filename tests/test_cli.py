"""The `tfllm` command's first contact: `--help` and `--version` answer at once, without TensorFlow and
without its log; every `generate` option states its default; `--verbose` works before or after a command."""

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tfllm import cli

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = ("generate", "quickstart", "export", "attention", "embed", "train", "eval", "serve")
# What TensorFlow and the libraries it loads print on their own (absl, oneDNN, CUDA, grappler).
TF_NOISE = ("absl", "oneDNN", "cuInit", "cuda", "PredictCost", "I0000", "E0000", "W0000", "cpu_feature_guard")


def _tfllm(*arguments):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)  # conftest sets it; a user's shell does not
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "tfllm.cli", *arguments], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=120)
    return done, time.perf_counter() - start


@pytest.mark.parametrize("command", ("", *COMMANDS))
def test_help_answers_quickly_and_prints_no_tensorflow_log(command):
    done, seconds = _tfllm(*([command] if command else []), "--help")
    assert done.returncode == 0, done.stderr
    assert "usage: tfllm" in done.stdout
    assert done.stderr == ""
    # About 0.3 s measured (6-7 s when parsing imported TensorFlow); the bound leaves room for a busy CI machine.
    assert seconds < 5, seconds


def test_parsing_imports_no_tensorflow():
    code = ("import sys; from tfllm import cli; "
            "cli.build_parser().parse_args(['generate', 'folder', 'a prompt', '--do-sample']); "
            "cli.build_parser().parse_args(['serve', '--model_base_path', 'x']); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras', 'grpc')))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_version(capsys):
    from importlib import metadata

    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"tfllm {metadata.version('tfllm')}"


def test_every_generate_option_states_its_default():
    commands = next(a for a in cli.build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    options = [a for a in commands.choices["generate"]._actions if a.option_strings and a.dest not in ("help", "verbose")]
    assert {a.dest for a in options} >= {"max_new_tokens", "do_sample", "temperature", "top_k", "top_p", "seed"}
    for action in options:
        assert action.help and "(default: " in action.help, action.option_strings


@pytest.mark.parametrize("argv", (["-v", "eval", "--model", "m", "--data", "d"],
                                  ["eval", "--model", "m", "--data", "d", "--verbose"]))
def test_verbose_is_accepted_before_and_after_the_command(argv):
    assert cli.build_parser().parse_args(argv).verbose is True
    assert cli.build_parser().parse_args(["eval", "--model", "m", "--data", "d"]).verbose is False


def test_tensorflow_log_is_silenced_unless_verbose(capfd):
    # What a C++ library writes to file descriptor 2 while a command runs is dropped; the command's
    # own messages (Python's sys.stderr) still come through.
    def run(args):
        os.write(2, b"I0000 port.cc:153] oneDNN custom operations are on.\n")
        print("tfllm's own message", file=sys.stderr)
        return 0

    parser = cli.build_parser
    try:
        cli.build_parser = lambda: _with_run(parser(), run)
        assert cli.main(["eval", "--model", "m", "--data", "d"]) == 0
        quiet = capfd.readouterr().err
        assert cli.main(["eval", "--model", "m", "--data", "d", "--verbose"]) == 0
        verbose = capfd.readouterr().err
    finally:
        cli.build_parser = parser
    assert "oneDNN" not in quiet and "tfllm's own message" in quiet
    assert "oneDNN" in verbose and "tfllm's own message" in verbose


def _with_run(parser, run):
    parse = parser.parse_args

    def parse_args(argv=None):
        args = parse(argv)
        args.run = run
        return args

    parser.parse_args = parse_args
    return parser
