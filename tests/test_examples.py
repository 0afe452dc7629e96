"""The examples run as a user runs them (a subprocess, one thread) and do what they say."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_stream_gpt_learns_to_copy():
    """With a stream (the carry handed from layer to layer); the baseline is the same code."""
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "stream_gpt.py"), "--stream", "value-learned",
         "--steps", "100"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    losses = [float(x) for x in re.findall(r"copy loss ([0-9.]+)", proc.stdout)]
    assert len(losses) == 2 and losses[-1] < 0.5  # chance is log 32 = 3.47


def test_hf_stream_patches_trains_generates_and_reloads():
    pytest.importorskip("transformers")
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "hf_stream.py"), "--steps", "60"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout
    assert "logits unchanged True" in out and "logits equal True" in out
    losses = [float(x) for x in re.findall(r"copy loss ([0-9.]+)", out)]
    assert losses[-1] < 0.6 * losses[0]
    weights = re.search(r"layers 2-3: \[(.*)\]", out).group(1).split(",")
    assert all(abs(float(w)) > 0 for w in weights)  # the mix moved off its zero start
