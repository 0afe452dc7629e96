"""experiments/lm_long.sh assembles its `lm grid` commands: one folder a group, and every
group's arms, seeds and settings passed on (a stub stands in for the CLI)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_two_groups_of_one_setting_and_seed_get_folders_of_their_own(tmp_path):
    stub = tmp_path / "cli"
    log = tmp_path / "calls"
    stub.write_text(f'#!/usr/bin/env bash\necho "$*" >> {log}\necho "{{}}"\n')
    stub.chmod(0o755)
    env = {**os.environ, "CLI": str(stub), "EPOCHS": "3", "LIMIT": "60"}
    argv = ["bash", str(ROOT / "experiments" / "lm_long.sh"), "corpus", str(tmp_path / "w"),
            str(tmp_path / "o"), "resampled", "mhc", "0", "2", "resampled", "denseformer", "0",
            "1"]  # fmt: skip
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    grids = [ln.split() for ln in log.read_text().splitlines() if ln.startswith("lm grid")]
    outs = [g[g.index("--out") + 1] for g in grids]
    assert len(outs) == 2 and len(set(outs)) == 2
    arms = sorted((g[g.index("--stream") + 1], g[g.index("--seeds") + 1]) for g in grids)
    assert arms == [("denseformer", "1"), ("mhc", "2")]
    assert all(g[g.index("--epochs") + 1] == "3" for g in grids)
    assert any(ln.startswith("lm prepare") for ln in log.read_text().splitlines())
    assert not any("--no-warm-compile" in g for g in grids)
    assert all(
        g[g.index("--data-dir") + 1] == str(tmp_path / "w" / "data-resampled") for g in grids
    )
    # WARM=0: each process compiles for itself; DATA_ROOT: token files another job can reuse
    env |= {"WARM": "0", "DATA_ROOT": str(tmp_path / "d")}
    subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120, check=True)
    grids = [ln.split() for ln in log.read_text().splitlines() if ln.startswith("lm grid")][2:]
    assert len(grids) == 2 and all("--no-warm-compile" in g for g in grids)
    assert all(
        g[g.index("--data-dir") + 1] == str(tmp_path / "d" / "data-resampled") for g in grids
    )


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_grids_stop_at_the_jobs_deadline_and_what_they_wrote_is_packed(tmp_path):
    """DEADLINE counts from the job's start (preparing the data included), so a slow
    preparation cannot push the grids' end past the job's own limit, packing unfinished."""
    stub = tmp_path / "cli"
    stub.write_text(
        "#!/usr/bin/env bash\n"
        'if [ "$2" = grid ]; then out=${@: -1}; mkdir -p "$out/mhc-s0"\n'
        '  echo "{}" > "$out/mhc-s0/metrics.jsonl"; exec sleep 60; fi\n'
        'sleep 1; echo "{}"\n'
    )
    stub.chmod(0o755)
    env = {**os.environ, "CLI": str(stub), "EPOCHS": "3", "LIMIT": "60", "DEADLINE": "3"}
    argv = ["bash", str(ROOT / "experiments" / "lm_long.sh"), "corpus", str(tmp_path / "w"),
            str(tmp_path / "o"), "resampled", "mhc", "0", "1"]  # fmt: skip
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=50)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert re.search(r"grids stop in [0-2] s \(DEADLINE\)", proc.stdout), proc.stdout
    packed = subprocess.run(["tar", "tzf", str(tmp_path / "o" / "runs.tar.gz")],
                            capture_output=True, text=True, check=True).stdout  # fmt: skip
    assert "resampled-s0-g1/mhc-s0/metrics.jsonl" in packed


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_the_compile_cache_is_packed_and_a_later_job_starts_from_it(tmp_path):
    """What a job's compiles leave in torch.compile's cache comes back in OUT; given to the
    next job as COMPILE_CACHE, its runs find it. A COMPILE_CACHE that is not a file: one line,
    exit 2, nothing written."""
    stub = tmp_path / "cli"
    stub.write_text(
        "#!/usr/bin/env bash\n"
        'if [ "$2" = grid ]; then ls "$TORCHINDUCTOR_CACHE_DIR" > "${@: -1}.seen"\n'
        '  echo kernel > "$TORCHINDUCTOR_CACHE_DIR/k-$$"; fi\n'
        'echo "{}"\n'
    )
    stub.chmod(0o755)
    env = {**os.environ, "CLI": str(stub), "EPOCHS": "3", "LIMIT": "60"}

    def job(name: str, **extra: str) -> subprocess.CompletedProcess:
        script, out = str(ROOT / "experiments" / "lm_long.sh"), str(tmp_path / f"{name}-out")
        argv = ["bash", script, "corpus", str(tmp_path / name), out, "resampled", "mhc", "0", "1"]
        return subprocess.run(argv, capture_output=True, text=True, env=env | extra, timeout=60)

    assert job("first").returncode == 0
    packed = tmp_path / "first-out" / "compile-cache.tar.gz"
    listing = subprocess.run(["tar", "tzf", str(packed)], capture_output=True, text=True).stdout
    assert re.search(r"k-\d+", listing)
    runs = subprocess.run(["tar", "tzf", str(tmp_path / "first-out" / "runs.tar.gz")],
                          capture_output=True, text=True).stdout  # fmt: skip
    assert "k-" not in runs  # the cache travels apart from the runs
    second = job("second", COMPILE_CACHE=str(packed))
    assert second.returncode == 0 and "compile cache unpacked" in second.stdout
    seen = (tmp_path / "second" / "resampled-s0-g1.seen").read_text()
    assert re.search(r"k-\d+", seen)  # the first job's kernel, there before the grid started
    bad = job("third", COMPILE_CACHE=str(tmp_path / "missing.tar.gz"))
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1
    assert "COMPILE_CACHE" in bad.stderr and not (tmp_path / "third").exists()
