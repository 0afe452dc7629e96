"""The examples run as a user runs them (a subprocess, one thread) and do what they say."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("stream", ["none", "value-learned"])
def test_stream_gpt_learns_to_copy(stream):
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "stream_gpt.py"), "--stream", stream,
         "--steps", "100"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    losses = [float(x) for x in re.findall(r"copy loss ([0-9.]+)", proc.stdout)]
    assert len(losses) == 2 and losses[-1] < 0.5  # chance is log 32 = 3.47
