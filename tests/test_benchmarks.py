"""The README's benchmark command runs: a smoke run of `benchmarks/suite.py` (the full run is by hand)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_suite_quick_smoke_run_writes_numbers_for_each_system(tmp_path):
    command = [sys.executable, str(ROOT / "benchmarks" / "suite.py"), "--quick", "--systems", "tfllm,floor",
               "--measures", "load", "--output", str(tmp_path)]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-4000:]
    suite = json.loads((tmp_path / "suite.json").read_text())
    for system in ("tfllm", "floor"):
        assert suite["results"][system]["load"]["load_s"] > 0, suite["results"][system]
    assert (tmp_path / "suite.png").stat().st_size > 0
    assert "checkpoint load s" in result.stdout
