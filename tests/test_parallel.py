"""Data parallelism: 2 processes (gloo, CPU, via torchrun) follow the loss curve of one process
with the same global batch."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from parallel_variants import check_parallel
from test_residual import PARALLEL_CASES
from test_streams import ONE_OF_EACH, VARIANTS

from attnstreams.cli import main
from attnstreams.data.shards import TokenWindows
from attnstreams.experiments.lm.data import DataConfig, prepare_data
from attnstreams.run import checkpoint
from attnstreams.run.parallel import Dist

FIXTURE = Path(__file__).parent / "fixtures" / "tinystories-sample.txt"


def test_rows_split_the_global_batch():
    assert [Dist(r, 4).rows(8) for r in range(4)] == [
        slice(0, 2),
        slice(2, 4),
        slice(4, 6),
        slice(6, 8),
    ]
    with pytest.raises(ValueError, match="divisible"):
        Dist(0, 3).rows(8)


def test_ranks_read_their_own_rows_of_one_batch(tmp_path):
    """Every rank draws the same window starts and reads only its rows: the ranks' halves
    put together are the one-process batch."""
    path = tmp_path / "t.bin"
    np.arange(5000, dtype=np.uint16).tofile(path)
    meta = {"tokens": 5000, "dtype": "uint16", "vocab_size": 5000, "eot_id": 0, "tokenizer": "t"}
    path.with_suffix(".json").write_text(json.dumps(meta))
    data = TokenWindows(path)
    whole = data.sample(8, 16, torch.Generator().manual_seed(3))
    parts = [
        data.sample(8, 16, torch.Generator().manual_seed(3), Dist(r, 2).rows(8)) for r in (0, 1)
    ]
    assert [p[0].shape[0] for p in parts] == [4, 4]
    for i in (0, 1):
        assert torch.equal(torch.cat([p[i] for p in parts]), whole[i])


# Every stream in GPT-2's block, one of each mechanism in the modern block (GQA in both), and
# two of each cross-layer residual method.
VARIANT_CASES = [
    *(f"{s}/gpt2" for s in VARIANTS),
    *(f"{s}/modern" for s in ONE_OF_EACH),
    *PARALLEL_CASES,
]


def test_every_variant_under_ddp_and_fsdp_matches_one_process(tmp_path):
    """2 processes (DDP, then FSDP) against the whole batch in one, a few AdamW steps of
    every stream variant and residual method in float64: the same weights to rounding, and
    every parameter, each mix and gate included, moved. One launch for all: each costs seconds.
    (Compiled, and through `lm train`: the cases below.)"""
    check_parallel(tmp_path, VARIANT_CASES)


@pytest.mark.parametrize(
    "mode,compiled,block,stream",
    [
        ("ddp", False, "tiny", "value-first-gated"),
        ("fsdp", False, "modern-tiny", "value-embed"),
        ("fsdp", True, "tiny", "value-learned"),  # compiled: traced under FSDP's hooks
    ],
)
def test_two_processes_match_one(tmp_path, mode, compiled, block, stream):
    """Eager one process against torchrun x 2 (DDP or FSDP, eager or torch.compile'd), each
    with another stream and both blocks among them. The compiled case traces forward and
    backward under FSDP's hooks with the aot_eager backend; Inductor's kernels, which would
    take both ranks a minute to build here, are checked on one process (test_variants)."""
    data = DataConfig(data=str(FIXTURE), vocab_size=512, train_tokens=20_000, val_tokens=1000)
    data_dir = prepare_data(data, tmp_path / "data", progress=False)
    args = [
        "lm",
        "train",
        "--preset",
        block,
        "--stream",
        stream,
        "--data",
        str(FIXTURE),
        "--data-dir",
        str(data_dir),
        "--train-tokens",
        "20000",
        "--val-tokens",
        "1000",
        "--vocab-size",
        "512",
        "--steps",
        "8",
        "--batch",
        "8",
        "--block-size",
        "32",
        "--warmup",
        "2",
        "--eval-every",
        "4",
        "--eval-batches",
        "2",
        "--ioi-prompts",
        "8",
        "--dropout",
        "0",
        "--parallel",
        mode,
        "--ddp-bucket-mb",
        "2",
        "--json",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def single(*extra: str) -> None:
        """One process: this one, which saves starting another. It keeps the run folder's lock
        (`hold_lock`) to its end, so only for a folder no other process writes to after it."""
        assert main([*args, *extra]) == 0

    single("--out", str(tmp_path / "one"))

    def torchrun(*extra: str) -> subprocess.CompletedProcess:
        run = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
        opts = [*args, "--compile", "--compile-backend", "aot_eager"] if compiled else args
        cli = [*run, "--nproc_per_node", "2", "-m", "attnstreams.cli", *opts, *extra]
        proc = subprocess.run(cli, capture_output=True, text=True, env=env, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return proc

    # DDP eager runs its 2 processes with dropout on: each rank draws its own masks, and the
    # checkpoint keeps every rank's generator (checked below by a resume, bit for bit). FSDP
    # eager accumulates each batch in 2 pieces (FSDP's unsynced backward).
    drop = ("--dropout", "0.1") if mode == "ddp" and not compiled else ()
    accum = ("--grad-accum", "2")
    split = accum if mode == "fsdp" and not compiled else ()
    two = torchrun("--out", str(tmp_path / "two"), *drop, *split)
    summary = json.loads(two.stdout.strip().splitlines()[-1])
    assert "returned a view" not in two.stderr  # FSDP2's warning about the carry is silenced
    assert summary["processes"] == 2 and summary["parallel"] == mode  # read off the model
    held = summary["param_elems_on_rank0"] / summary["param_elems"]
    if mode == "ddp":
        assert held == 1  # a full replica
        assert summary["ddp_bucket_bytes"] == 2 * 2**20  # --ddp-bucket-mb reached DDP
    else:
        assert 0.4 < held < 0.6  # FSDP: about half on each of 2 ranks
    runs = ["one"] + ([] if drop else ["two"])
    if not compiled:
        # Stopped mid-window under torchrun and resumed: the same run, to the bit (eager only:
        # the compiled cases check the loss curve and the checkpoint).
        torchrun("--out", str(tmp_path / "resumed"), "--stop-after", "6", *drop, *split)
        # Resumed on 1 process: the same global batches, data position and schedule, so the
        # curve of one process. DDP stops a run of its own without dropout, taking each batch
        # in 2 pieces (no_sync); FSDP's stopped run, whose checkpoint is gathered from 2
        # shards, is copied.
        if mode == "ddp":
            torchrun("--out", str(tmp_path / "shrunk"), "--stop-after", "6", *accum)
        else:
            shutil.copytree(tmp_path / "resumed", tmp_path / "shrunk")
        single("--out", str(tmp_path / "shrunk"), "--resume")
        runs.append("shrunk")
        torchrun("--out", str(tmp_path / "resumed"), "--resume", *drop, *split)
        a, _ = checkpoint.load(tmp_path / "two" / "checkpoint.safetensors")
        b, _ = checkpoint.load(tmp_path / "resumed" / "checkpoint.safetensors")
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
        assert not torch.equal(a["rng/torch"], a["rng/torch/1"])  # ranks' own generators
        timeless = [
            [
                {k: v for k, v in json.loads(ln).items() if k != "elapsed_s"}
                for ln in (tmp_path / k / "metrics.jsonl").read_text().splitlines()
            ]
            for k in ("two", "resumed")
        ]
        for ra, rb in zip(*timeless, strict=True):  # the window's mean loss: to rounding
            if "train_loss" in ra:
                assert rb.pop("train_loss") == pytest.approx(ra.pop("train_loss"), rel=1e-6)
            assert ra == rb
    rows = {
        k: [json.loads(ln) for ln in (tmp_path / k / "metrics.jsonl").read_text().splitlines()]
        for k in runs
    }
    assert all([r["step"] for r in rows[k]] == [0, 4, 8] for k in runs)
    for other in runs[1:]:
        for a, b in zip(rows["one"], rows[other], strict=True):
            for key in ("train_loss", "val_loss", "ioi_logit_diff", "induction_loss"):
                if a.get(key) is not None:
                    assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-5), (other, key)
    assert rows["one"][-1]["train_loss"] < rows["one"][1]["train_loss"]  # it trained
    # The checkpoint written by 2 processes (gathered if sharded) loads on one device.
    from attnstreams.experiments.lm.weights import load_model

    a, _ = load_model(tmp_path / "one" / "checkpoint.safetensors")
    # Inductor's fused kernels round differently, and Adam's normalised steps carry that
    # into the weights (1.4e-5 seen after 12 steps; these runs take 8).
    atol = 1e-4 if compiled else 1e-5
    for other in runs[1:]:
        b, _ = load_model(tmp_path / other / "checkpoint.safetensors")
        for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
            assert torch.allclose(va, vb, rtol=1e-4, atol=atol), (other, k)


def _workers(launcher: int) -> dict[int, int]:
    """rank -> pid of the processes torchrun (pid `launcher`) started, read from /proc."""
    found = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            env = (stat.parent / "environ").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue
        rank = [e[5:] for e in env if e.startswith(b"RANK=")]
        if ppid == launcher and rank:
            found[int(rank[0])] = int(stat.parent.name)
    return found


_LAUNCHER_STOP = """
import os, signal, subprocess, sys, time
from pathlib import Path
from attnstreams.run import parallel
sleep = [sys.executable, "-c", "import time; time.sleep(20)"]
peer = subprocess.Popen(sleep, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
parallel._PEERS[:] = [parallel._identity(os.getpid()), parallel._identity(peer.pid)]
grace = 1 if sys.argv[1] in ("stuck", "silent") else 30
if sys.argv[1] != "alive":
    peer.kill()
    peer.wait()
try:
    with parallel.report_lost_ranks(parallel.Dist(0, 2), Path("ck.safetensors"), grace_s=grace):
        if sys.argv[1] != "silent":  # silent: the launcher's signal never reaches a handler
            os.kill(os.getpid(), signal.SIGTERM)  # what torchrun sends the survivors
            time.sleep(0.5)
            print("outlived", flush=True)
        if sys.argv[1] in ("stuck", "silent"):  # a collective that never returns
            time.sleep(30)
        raise RuntimeError("Connection closed by peer")  # gloo's failed collective
except parallel.RankLost as e:
    print(e, flush=True)
    os.kill(os.getpid(), signal.SIGTERM)  # still ignored: the report is never cut short
    time.sleep(0.2)
    print("reported", flush=True)
finally:
    peer.kill()
"""


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc (Linux)")
@pytest.mark.parametrize("peer", ["dead", "stuck", "silent", "alive"])
def test_the_launchers_stop_is_outlived_only_after_a_rank_died(peer):
    """torchrun SIGTERMs the survivors as soon as a rank dies, racing their failed collective:
    that SIGTERM is ignored so the survivor can report the death (and if it is stuck in a
    collective, the report comes from another thread after a grace time, exit 1, also when no
    signal handler gets to run: a watching thread sees the dead rank); with every rank alive a
    SIGTERM ends the process as before."""
    t0 = time.time()
    res = subprocess.run(
        [sys.executable, "-c", _LAUNCHER_STOP, peer], capture_output=True, text=True, timeout=60
    )
    if peer == "alive":
        assert res.returncode == -signal.SIGTERM and res.stdout == "", res.stderr[-2000:]
        return
    if peer in ("stuck", "silent"):
        out = "outlived\n" if peer == "stuck" else ""
        assert res.returncode == 1 and time.time() - t0 < 25 and res.stdout == out, res.stdout
        (line,) = res.stderr.splitlines()
        assert line.startswith("attnstreams: error: rank 1 of 2 (process "), line
        return
    assert res.returncode == 0, res.stderr[-2000:]
    lines = res.stdout.splitlines()
    assert lines[0] == "outlived" and lines[-1] == "reported", res.stdout
    assert lines[1].startswith("rank 1 of 2 (process ")
    assert lines[1].endswith("died, so this run stopped too; no checkpoint was written yet")


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc (Linux)")
@pytest.mark.parametrize("victim,when", [(1, "mid-step"), (0, "mid-checkpoint")])
def test_a_rank_that_dies_stops_the_others_with_one_line(tmp_path, victim, when):
    """SIGKILL one of 2 processes: the other exits within 60 s, non-zero, with one line that
    names the dead rank and the last good checkpoint, which loads whole."""
    data = DataConfig(data=str(FIXTURE), vocab_size=512, train_tokens=20_000, val_tokens=1000)
    data_dir = prepare_data(data, tmp_path / "data", progress=False)
    out = tmp_path / "run"
    # fmt: off
    args = ["lm", "train", "--preset", "tiny", "--data", str(FIXTURE), "--data-dir",
            str(data_dir), "--vocab-size", "512", "--train-tokens", "20000", "--val-tokens",
            "1000", "--steps", "100000", "--batch", "4",
            "--block-size", "32", "--eval-every", "10", "--eval-batches", "1",
            "--ioi-prompts", "8", "--json", "--out", str(out)]
    # fmt: on
    run = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [*run, "2", "-m", "attnstreams.cli", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    ckpt = out / "checkpoint.safetensors"
    deadline = time.time() + 240  # a safety net against a hang, not a time budget
    while not ckpt.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    pids = _workers(proc.pid)
    assert ckpt.exists() and sorted(pids) == [0, 1], (
        proc.stderr.read()[-2000:] if proc.poll() else pids
    )
    if when == "mid-checkpoint":  # rank 0 writes: catch it with its temporary folder open
        while not list(out.glob(".checkpoint.safetensors.tmp-*")):
            assert time.time() < deadline and proc.poll() is None
    os.kill(pids[victim], signal.SIGKILL)
    killed = time.time()
    _, err = proc.communicate(timeout=120)
    assert time.time() - killed < 60 and proc.returncode != 0
    ours = [ln for ln in err.splitlines() if ln.startswith("attnstreams: error:")]
    assert len(ours) == 1, err[-3000:]
    step = checkpoint.load(ckpt)[1]["step"]  # whole: its digest verifies
    assert f"rank {victim} of 2 (process {pids[victim]}) died" in ours[0]
    assert f"last good checkpoint is {ckpt} (step {step})" in ours[0] and step % 10 == 0
