"""Every benchmark script still runs (CPU, tiny sizes) and prints its table."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]

CASES = {
    "amicl.py": ["--trials", "1000"],
    "compile_time.py": [  # each row in 2 processes: an empty cache, then the first's
        "--residuals",
        "mhc",
        "--layers",
        "1",
        "--regions",
        "on",
        "--backend",
        "eager",
        "--warm",
    ],
    "ddp_scaling.py": [
        "--preset",
        "tiny",
        "--steps",
        "1",
        "--warmup",
        "1",
        "--device",
        "cpu",
    ],  # eager: the compiled DDP step is tested through `lm train` in test_parallel.py
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
        "none,value,denseformer,value+hc-n2",
        "--peers",
        "hf-gpt2",
        "--modes",
        "eager",
        "--steps",
        "1",
        "--warmup",
        "1",
        "--profile",
    ],
    "kernel_count.py": ["--residuals", "hc", "--layers", "1"],  # Inductor, one small model
    "mix_copies.py": ["--device", "cpu", "--shape", "2,8,4,16", "--steps", "1", "--no-compile"],
    "lm_share.py": [  # a tiny model on the CPU; MPS (a CUDA daemon) is reported missing
        "--device",
        "cpu",
        "--data",
        str(ROOT / "tests" / "fixtures" / "tinystories-sample.txt"),
        "--vocab-size",
        "400",
        "--val-tokens",
        "2000",
        "--procs",
        "2",
        "--steps",
        "6",
        "--eval-log",
        "3",
        "--modes",
        "plain:3,mps,stack-flash",
    ],  # fmt: skip
    "profile_steps.py": ["--device", "cpu", "ceilings", "attention"],  # profiles: on GPUs
    "soak.py": ["--cycles", "0"],  # the table alone; tests/test_faults.py runs 10 cycles
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
    if script == "lm_share.py":  # MODE:N trains N runs
        rows = [json.loads(x) for x in lines if x.startswith("{")]
        assert rows[0] | {"runs": 3, "failed": 0} == rows[0] and rows[0]["mode"] == "plain:3"
        assert rows[2]["mode"] == "stack-flash" and rows[2]["failed"] == 0
    if script == "compile_time.py":  # two first steps, in seconds; eager caches no graph
        (row,) = [x for x in lines if x.startswith("| mhc |")]
        cells = row.strip(" |").split(" | ")
        assert all(float(c) > 0 for c in cells[3:5]) and cells[5] == "0", row
    if script == "kernel_count.py":  # hc mixes its copies without batched matmuls
        (row,) = [x for x in lines if x.startswith("| hc |")]
        assert "bmm" not in row and int(row.split(" | ")[1]) > 0
    if script == "ddp_scaling.py":  # a smoke run: one process, no DDP wrapper (test_parallel
        # runs compiled DDP and FSDP through lm train)
        row = json.loads(lines[-1])
        assert row["compile"] is False and row["parallel"] == "none"


def test_mix_copies_formulations_agree():
    """The formulations benchmarks/mix_copies.py times give one result, static weights and
    weights per position alike (float64; the autocast einsum is bf16 on the GPU only)."""
    spec = importlib.util.spec_from_file_location("mix", ROOT / "benchmarks" / "mix_copies.py")
    mix = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mix)
    torch.manual_seed(0)
    X = torch.randn(2, 8, 4, 16, dtype=torch.float64)
    for w in (torch.randn(5, 4, dtype=torch.float64), torch.randn(2, 8, 5, 4, dtype=torch.float64)):
        want = torch.stack(  # row t: sum_s w[t, s] X[s], written out
            [sum(w[..., t, s, None] * X[..., s, :] for s in range(4)) for t in range(5)], -2
        )
        for form in mix.FORMS:
            torch.testing.assert_close(mix.mix(form, w, X), want)


def refusal(script: str, argv: list[str], monkeypatch, capsys) -> str:
    """benchmarks/SCRIPT's main() given `argv`, run in this process (a refusal needs no process
    of its own): it must exit 2, argparse's status for bad arguments. Returns its stderr."""
    spec = importlib.util.spec_from_file_location(script[:-3], ROOT / "benchmarks" / script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(sys, "argv", [script, *argv])
    with pytest.raises(SystemExit) as stop:
        module.main()
    assert stop.value.code == 2
    return capsys.readouterr().err


def test_kernel_count_refuses_an_unknown_residual(monkeypatch, capsys):
    err = refusal("kernel_count.py", ["--residuals", "hc,hcc"], monkeypatch, capsys)
    assert "unknown residual 'hcc'" in err


def test_lm_throughput_times_side_by_side_rows_in_order(tmp_path):
    """--jobs 2: rows built in processes of their own come back in order, a failing row is
    reported as failed, and the rows after it are still timed."""
    out = tmp_path / "rows.json"
    argv = [sys.executable, str(ROOT / "benchmarks" / "lm_throughput.py"), "--device", "cpu",
            "--presets", "tiny", "--modes", "eager", "--steps", "1", "--warmup", "1",
            "--streams", "none,hcc,hc", "--jobs", "2", "--json", str(out)]  # fmt: skip
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = json.loads(out.read_text())
    assert [r["stream"] for r in rows] == ["none", "hcc", "hc"]
    assert "unknown stream 'hcc'" in rows[1]["error"] and "error" not in rows[2]
    assert rows[2]["params"] > rows[0]["params"] and rows[2]["tokens_per_s"] > 0


def test_lm_throughput_refuses_jobs_with_peers(monkeypatch, capsys):
    err = refusal("lm_throughput.py", ["--jobs", "2", "--peers", "hf-gpt2"], monkeypatch, capsys)
    assert "--jobs takes" in err


def test_lm_throughput_refuses_an_unknown_mode(monkeypatch, capsys):
    err = refusal("lm_throughput.py", ["--modes", "compiled"], monkeypatch, capsys)
    assert "unknown mode(s) compiled" in err


@pytest.mark.parametrize("mode", ["plainn", "mps:1", "stack:x"])
def test_lm_share_refuses_an_unknown_mode_before_any_work(mode, tmp_path):
    script = str(ROOT / "benchmarks" / "lm_share.py")
    argv = [sys.executable, script, "--data", "none", "--modes", f"plain,{mode}"]
    proc = subprocess.run(argv, capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    assert f"MODE:N with N >= 2 runs (got {mode!r})" in proc.stderr and not any(tmp_path.iterdir())


def test_ddp_scaling_refuses_buckets_under_1_mb(monkeypatch, capsys):
    err = refusal("ddp_scaling.py", ["--bucket-mb", "0.5"], monkeypatch, capsys)
    assert "--bucket-mb must be >= 1" in err


def test_multi_gpu_script_runs_its_sequence_on_one_cpu_process(tmp_path):
    """benchmarks/multi_gpu.sh at its smallest: every ddp_scaling row it asks for. (Its FSDP
    lm train, stopped, resumed and evaluated, is the same path as tests/test_parallel.py's
    FSDP runs and test_lm.py's evaluation: left out here, LM_RUN=0.)"""
    env = {
        **os.environ,
        "PYTHON": sys.executable,
        "SMALL": "tiny",
        "BIG": "tiny",
        "MODERN_SMALL": "",  # the modern-block rows are the same steps with another preset
        "MODERN_BIG": "",
        "DEVICE": "cpu",
        "BLOCK": "64",
        "COMPILED": "0",
        "LM_RUN": "0",
        "OMP_NUM_THREADS": "1",
    }
    out = tmp_path / "mg"
    script = ROOT / "benchmarks" / "multi_gpu.sh"
    proc = subprocess.run(
        ["bash", str(script), str(out), "1"], capture_output=True, text=True, env=env, timeout=400
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + (out / "log.txt").read_text()[-3000:]
    rows = [json.loads(line) for line in (out / "rows.jsonl").read_text().splitlines()]
    assert [(r["stream"], r["parallel"], r["processes"]) for r in rows] == [
        ("none", "none", 1),  # small, eager
        ("none", "none", 1),  # big, one device
        ("value", "none", 1),  # big, "FSDP" on one process: no wrapper
    ]
    assert "0 failed" in proc.stdout
