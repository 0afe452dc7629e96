"""Every benchmark script still runs (CPU, tiny sizes) and prints its table."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

CASES = {
    "amicl.py": ["--trials", "1000"],
    "ddp_scaling.py": [
        "--preset",
        "tiny",
        "--steps",
        "1",
        "--warmup",
        "1",
        "--device",
        "cpu",
        "--compile",
    ],
    "icl_grid.py": [
        "--device",
        "cpu",
        "--seeds",
        "1",
        "--variants",
        "none",
        "--steps",
        "2",
        "--modes",
        "eager",
        "--precisions",
        "fp32",
        "--what",
        "single",
        "--profile",
    ],
    "lm_throughput.py": [
        "--device",
        "cpu",
        "--presets",
        "tiny",
        "--streams",
        "none,value",
        "--modes",
        "eager",
        "--steps",
        "1",
        "--warmup",
        "1",
        "--profile",
    ],
    "stories.py": ["--n", "300", "--vocab-size", "400"],
}


@pytest.mark.parametrize("script", sorted(CASES))
def test_benchmark_runs(script, tmp_path):
    assert sorted(CASES) == sorted(p.name for p in (ROOT / "benchmarks").glob("*.py"))
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), *CASES[script]],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.strip().splitlines()
    assert len(lines) >= (1 if script == "ddp_scaling.py" else 3)  # one JSON row, or a table
    assert "Traceback" not in proc.stderr
    if script == "ddp_scaling.py":  # a smoke run: one process, no DDP wrapper (test_parallel
        # runs compiled DDP and FSDP through lm train)
        assert json.loads(lines[-1])["compile"] is True


def test_lm_throughput_refuses_an_unknown_mode():
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "lm_throughput.py"), "--modes", "compiled"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2 and "unknown mode(s) compiled" in proc.stderr
