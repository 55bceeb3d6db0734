import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

TINY = """\
name: tiny
description: A tiny sweep for the tests.
task: {name: adding, seq_len: 8}
model: {hidden_size: 8}
train: {steps: 4, batch_size: 4, eval_size: 8}
probe: {every: 2}
sweep:
  task.seq_len: [6, 9]
  model.activation: [tanh, relu]
"""
"""A sweep of 4 runs that trains in seconds (test_end_to_end, test_load_results)."""


def cli(*args: str, cwd: Path | None = None, env: dict | None = None, timeout: float = 300):
    """Run `python -m rnnlab ARGS` as a user would; returns the CompletedProcess."""
    environ = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"} | (env or {})
    return subprocess.run(
        [sys.executable, "-m", "rnnlab", *map(str, args)],
        cwd=cwd or ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=environ,
    )


@pytest.fixture
def store(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path
