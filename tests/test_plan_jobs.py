"""experiments/plan_jobs.py: a grid's runs packed into GPU jobs from measured step times."""

from __future__ import annotations

import importlib.util
import json
import math
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("plan_jobs", ROOT / "experiments" / "plan_jobs.py")
plan_jobs = importlib.util.module_from_spec(spec)
spec.loader.exec_module(plan_jobs)

#: ms a step of the 8M rows measured on an H100 (BENCHMARKS.md), and one failed row
ROW = {"preset": "tinystories-8m", "mode": "compile+cudagraphs", "model": "attnstreams",
       "vocab": 8192}  # fmt: skip
ROWS = [ROW | {"stream": a, "ms_per_step": ms} for a, ms in
        (("none", 6.94), ("denseformer", 8.13), ("hc", 18.95), ("mhc", 30.18))] + [
        ROW | {"stream": "mudd", "error": "RuntimeError()"},
        ROW | {"preset": "modern-8m", "stream": "hc", "ms_per_step": 99.0}]  # fmt: skip


def plan(tmp_path, capsys, *extra: str) -> tuple[int, str, str]:
    cost = tmp_path / "cost.json"
    cost.write_text(json.dumps(ROWS))
    argv = ["--cost", str(cost), "--preset", "tinystories-8m", "--steps", "6554", *extra]
    code = plan_jobs.main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_every_run_once_and_no_job_over_its_budget(tmp_path, capsys):
    code, out, _ = plan(
        tmp_path, capsys, "--arms", "none,denseformer,hc,mhc", "--seeds", "5", "--epochs", "40"
    )
    assert code == 0
    ms = {r["stream"]: r["ms_per_step"] for r in ROWS if "error" not in r and r is not ROWS[-1]}
    seen, totals = [], []
    for line in out.splitlines():
        if "experiments/lm_long.sh" in line:  # with the settings the runs need
            assert line.startswith("EPOCHS=40 MPS=1 PRESET=tinystories-8m experiments/lm_long.sh")
            groups = re.findall(r"resampled (\S+) (\d+) (\d+)", line)
            runs = [(a, s) for a, s0, n in groups for s in range(int(s0), int(s0) + int(n))]
            seen += runs
            totals.append(sum(6554 * ms[a] / 1e3 * plan_jobs.MARGIN for a, _ in runs))
    assert sorted(seen) == sorted((a, s) for a in ms for s in range(5))
    budget = plan_jobs.BUDGET
    assert max(totals) <= budget and len(totals) == int(out.splitlines()[-1].split()[1])
    assert len(totals) >= math.ceil(sum(totals) / budget)
    # the tinystories-8m rows, not the other preset's hc
    assert out.splitlines()[-1].endswith(f"~{sum(totals):.0f} card-s in all")


def test_runs_finished_in_a_done_folder_are_left_out(tmp_path, capsys):
    done = tmp_path / "done"
    for run, step in (("hc-s0", 6554), ("hc-s2", 6554), ("mhc-s1", 6554), ("hc-s1", 100)):
        (done / run).mkdir(parents=True)  # hc-s1 stopped early: still to run
        (done / run / "summary.json").write_text(json.dumps({"step": step}))
    code, out, _ = plan(tmp_path, capsys, "--arms", "hc,mhc", "--seeds", "3", "--done", str(done))
    assert code == 0
    runs = re.findall(r"resampled (\S+) (\d+) (\d+)", out)
    seen = sorted((a, s) for a, s0, n in runs for s in range(int(s0), int(s0) + int(n)))
    assert seen == [("hc", 1), ("mhc", 0), ("mhc", 2)]
    code, out, err = plan(tmp_path, capsys, "--arms", "hc", "--seeds", "1", "--done", str(done))
    assert code == 2 and "every run is finished" in err and not out


def test_apart_arms_get_at_most_one_run_a_job(tmp_path, capsys):
    args = ("--arms", "denseformer,mhc", "--seeds", "5", "--budget", "600")  # 2 mhc fit a job
    code, out, _ = plan(tmp_path, capsys, *args)
    assert code == 0 and re.search(r"resampled mhc \d+ [2-9]", out)  # packed together
    code, out, _ = plan(tmp_path, capsys, *args, "--apart", "mhc")
    lines = [ln for ln in out.splitlines() if "lm_long.sh" in ln]
    mhc = [re.findall(r"resampled mhc (\d+) (\d+)", ln) for ln in lines]
    assert code == 0 and all(len(m) <= 1 and all(n == "1" for _, n in m) for m in mhc)
    assert sorted(int(s) for m in mhc for s, _ in m) == list(range(5))


def test_groups_join_consecutive_seeds():
    job = [("hc", 0, 1.0), ("hc", 1, 1.0), ("hc", 3, 1.0), ("mhc", 2, 1.0)]
    assert plan_jobs.groups(job, "original") == "original hc 0 2 original hc 3 1 original mhc 2 1"


@pytest.mark.parametrize(
    "extra,says",
    [
        (["--arms", "none,mudd"], "with a step time for every arm (none, mudd)"),  # row failed
        (["--arms", "mhc", "--budget", "100"], "more than a job's 100"),
        (["--arms", ""], "must name work"),
        (["--arms", "hc", "--epochs", "0"], "--epochs must be above 0, got 0"),
        (["--arms", "hc", "--epochs", "nan"], "--epochs must be above 0, got nan"),
    ],
)
def test_bad_plans_are_refused_in_one_line(tmp_path, capsys, extra, says):
    code, out, err = plan(tmp_path, capsys, *extra)
    assert code == 2 and says in err and len(err.strip().splitlines()) == 1 and not out
