"""Soak: SIGKILL `icl grid` and `lm train` at random moments, resume them, and check every
resumed result against an uninterrupted run.

    python benchmarks/soak.py --cycles 200 --out soak      # 100 kills of each workload
    python benchmarks/soak.py --cycles 20 --workload lm --seed 3

A cycle is one SIGKILL and the resume after it. Each workload has one uninterrupted reference
run; then runs to completion, each killed up to --kills-per-run times, are compared with it.
Where each kill lands is drawn kill by kill:

    random  0.5-6 s after the process starts: start-up (imports, data, the model, reading
            the checkpoint), the first evaluation, the first steps
    step    5-75% of the way through a checkpoint window (its length measured from the
            checkpoints the run has landed) after a checkpoint lands: training steps
    eval    80-100% of the way through the window: its last steps, its evaluation and
            metrics rows, the hand-off of its checkpoint
    write   as soon as this process's temporary checkpoint folder appears (plus 0-5 ms):
            while a checkpoint is written, fsynced or read back

A cycle fails when the checkpoint on disk after the kill does not load (`checkpoint.load`:
whole, and matching the SHA-256 written with it) or when a resume exits non-zero; a run fails
when its metrics rows (elapsed_s aside) or its final checkpoint's tensors differ in any bit
from the reference's, or a temporary file is left. Prints a line a kill and a table at the
end; writes OUT/soak.json. tests/test_faults.py runs 10 cycles of it (5 of each workload).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import torch

from attnstreams.run import checkpoint
from attnstreams.run.config import ConfigError

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "fixtures" / "tinystories-sample.txt"
CLI = [sys.executable, "-m", "attnstreams.cli"]
CKPT = "checkpoint.safetensors"
TIMEOUT = 300  # seconds: a safety net against a hang, not a time budget
MODES = ("random", "step", "eval", "write")
# step and eval: where in a checkpoint window (its length measured from the checkpoints the
# run has landed) the kill lands after a checkpoint lands, as a fraction of the window
FRACTION = {"step": (0.05, 0.75), "eval": (0.8, 1.0)}
SAY = functools.partial(print, flush=True)

# fmt: off
ICL_ARGS = ["icl", "grid", "--variants", "none,value", "--seeds", "1", "--steps", "2500",
            "--batch", "16", "--eval-every", "50", "--eval-size", "64"]
ICL_SHORT = [*ICL_ARGS[:7], "300", *ICL_ARGS[8:]]
LM_DATA = dict(vocab_size=512, train_tokens=20_000, val_tokens=1000)
# fmt: on


def lm_args(data_dir: Path, steps: int = 800) -> list[str]:
    """A tiny `lm train` (dropout on, so the RNG state must survive a resume too)."""
    # fmt: off
    return ["lm", "train", "--preset", "tiny", "--stream", "value", "--data", str(FIXTURE),
            "--data-dir", str(data_dir), "--train-tokens", "20000", "--val-tokens", "1000",
            "--vocab-size", "512", "--steps", str(steps), "--batch", "4", "--block-size", "32",
            "--warmup", "5", "--eval-every", "50", "--eval-batches", "1", "--ioi-prompts", "8",
            "--dropout", "0.1"]
    # fmt: on


def prepare_lm_data(folder: Path) -> Path:
    """The token files `lm_args` reads (made once, reused if there)."""
    from attnstreams.experiments.lm.data import DataConfig, prepare_data

    return prepare_data(DataConfig(data=str(FIXTURE), **LM_DATA), folder, progress=False)


class SoakFailure(AssertionError):
    """A check failed: a checkpoint that does not load, a resume that exits non-zero, a
    resumed run that differs from the uninterrupted one."""


def rows(path: Path) -> list[dict]:
    """Metrics rows without their wall-clock times."""
    return [
        {k: v for k, v in json.loads(ln).items() if k != "elapsed_s"}
        for ln in path.read_text().splitlines()
    ]


def _env() -> dict[str, str]:
    """The commands' environment: one CPU thread unless OMP_NUM_THREADS says otherwise (tiny
    models gain nothing from more, and a kill-and-resume cycle is mostly start-up)."""
    return {"OMP_NUM_THREADS": "1", **os.environ}


def run_to_end(argv: list[str]) -> None:
    """Run the command uninterrupted; it must exit 0."""
    proc = subprocess.run(
        [*CLI, *argv], capture_output=True, text=True, timeout=TIMEOUT, env=_env()
    )
    if proc.returncode != 0:
        raise SoakFailure(f"exit {proc.returncode}: {proc.stderr[-1500:]}")


def _stamp(path: Path) -> tuple[int, int] | None:
    """Changes whenever a new file is renamed into place at `path`."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_mtime_ns


def _watch(
    proc: subprocess.Popen, out: Path, mode: str, rng: random.Random, window: float | None
) -> tuple[bool, float, float | None]:
    """Wait for the moment `mode` picks and SIGKILL the process then. Returns (killed, seconds
    since the start, checkpoint window as measured so far); killed is False when the process
    ended first."""
    t0 = time.monotonic()
    ckpt, tmp = out / CKPT, checkpoint._tmp_dir(out / CKPT, proc.pid)
    due = t0 + rng.uniform(0.5, 6.0) if mode == "random" else None
    frac, jitter = rng.uniform(*FRACTION.get(mode, (0.0, 1.0))), rng.uniform(0.0, 0.005)
    last, landed = _stamp(ckpt), None
    while proc.poll() is None:
        now = time.monotonic()
        if now - t0 > TIMEOUT:
            proc.kill()
            proc.wait()
            raise SoakFailure(f"still running after {TIMEOUT} s")
        stamp = _stamp(ckpt)
        if stamp != last:  # a checkpoint landed
            if landed is not None:
                window = now - landed if window is None else min(window, now - landed)
            last, landed = stamp, now
            if mode in FRACTION and window is not None:
                due = now + window * frac
        if mode == "write" and due is None and tmp.exists():
            due = now + jitter
        if due is not None and now >= due:
            proc.kill()
            proc.wait()
            return True, now - t0, window
        time.sleep(0.001)
    return False, time.monotonic() - t0, window


def _snapshot(out: Path) -> tuple:
    """What a process finds in its run folder when it starts: the checkpoint, the metrics."""
    metrics = out / "metrics.jsonl"
    return _stamp(out / CKPT), metrics.read_bytes() if metrics.exists() else None


def _where(out: Path, pid: int, before: tuple) -> tuple[str, int | None]:
    """Where the kill landed, judged by what the killed process left, and the checkpoint's
    step. The checkpoint must load; a SoakFailure otherwise.

    mid-write: its temporary checkpoint folder is there; nothing-written: it had neither
    landed a checkpoint nor changed the metrics (start-up, or the first steps of a resumed
    run); rows-before-checkpoint: it had logged an evaluation whose checkpoint was not in
    place yet; between-checkpoints: training steps (or an evaluation) after its first write."""
    ckpt = out / CKPT
    mid_write = checkpoint._tmp_dir(ckpt, pid).exists()
    metrics = out / "metrics.jsonl"
    now = _snapshot(out)
    step = None
    if ckpt.exists():
        try:
            tensors, meta = checkpoint.load(ckpt)
        except ConfigError as e:
            raise SoakFailure(f"the checkpoint left by a kill does not load: {e}") from None
        step = meta.get("step")
        if not tensors or not isinstance(step, int) or step < 0:
            raise SoakFailure(f"the checkpoint left by a kill is not a training state: {meta}")
    if mid_write:
        return "mid-write", step
    if now == before:
        return "nothing-written", step
    steps = []
    for ln in metrics.read_text().splitlines() if metrics.exists() else []:
        try:
            steps.append(json.loads(ln)["step"])
        except (ValueError, KeyError):
            steps.append(None)  # a row cut short
    if None in steps:
        return "mid-row", step
    if steps and max(steps) > (-1 if step is None else step):
        return "rows-before-checkpoint", step
    return "between-checkpoints", step


def kill_until_done(
    argv: list[str],
    out: Path,
    kills: int,
    seed: int,
    modes: tuple[str, ...] = MODES,
    records: list[dict] | None = None,
    log: Callable[[dict], None] | None = None,
) -> list[dict]:
    """Start the run, SIGKILL it at a moment drawn from `modes`, check the checkpoint on disk,
    resume; `kills` times, then let it finish (exit 0). A record a kill attempt (`hit` False:
    the run finished before the kill was due, and that ends it). SoakFailure on a failed
    check."""
    rng = random.Random(seed)
    out = Path(out)
    records = [] if records is None else records
    err_file = out.parent / f"{out.name}.stderr"
    window = None
    while True:
        resume = ["--resume"] if (out / CKPT).exists() else []
        before = _snapshot(out)
        with open(err_file, "w+") as err:
            proc = subprocess.Popen(
                [*CLI, *argv, "--out", str(out), *resume],
                stdout=subprocess.DEVNULL,
                stderr=err,
                env=_env(),
            )
            hits = sum(r["hit"] for r in records)
            if hits < kills:
                mode = rng.choice(modes)
                hit, after, window = _watch(proc, out, mode, rng, window)
                rec = {"mode": mode, "after_s": round(after, 3), "hit": hit, "resume": bool(resume)}
                if hit:
                    rec["landed"], rec["step"] = _where(out, proc.pid, before)
            else:
                hit, rec = False, None
            if not hit:
                try:
                    proc.wait(timeout=TIMEOUT)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            if not hit and proc.returncode != 0:
                err.seek(0)
                msg = f"{'resume' if resume else 'start'} exited {proc.returncode}"
                raise SoakFailure(f"{msg}: {err.read()[-1500:]}")
        if rec is not None:
            records.append(rec)
            if log is not None:
                log(rec)
        if not hit:
            err_file.unlink(missing_ok=True)
            return records


def differences(ref: Path, killed: Path) -> list[str]:
    """How a killed and resumed run differs from the uninterrupted one: metrics rows
    (elapsed_s aside), the final checkpoint's tensors bit for bit, temporary files left."""
    diffs = []
    a_rows, b_rows = rows(ref / "metrics.jsonl"), rows(killed / "metrics.jsonl")
    if a_rows != b_rows:
        at = next((i for i, (x, y) in enumerate(zip(a_rows, b_rows, strict=False)) if x != y), None)
        diffs.append(f"metrics: {len(b_rows)} rows against {len(a_rows)}, first differing: {at}")
    a, _ = checkpoint.load(ref / CKPT)
    try:
        b, _ = checkpoint.load(killed / CKPT)
    except ConfigError as e:
        return [*diffs, f"final checkpoint: {e}"]
    if a.keys() != b.keys():
        diffs.append(f"checkpoint tensors: {sorted(set(a) ^ set(b))[:5]} in one only")
    differ = [k for k in a if k in b and not torch.equal(a[k], b[k])]
    if differ:
        diffs.append(f"checkpoint tensors differ: {differ[:5]} ({len(differ)} in all)")
    left = [p.name for p in killed.glob(".*tmp*")]  # a write cut short is cleared on resume
    if left:
        diffs.append(f"temporary files left: {left}")
    return diffs


def assert_same_run(ref: Path, killed: Path) -> None:
    """Metrics and final checkpoint bitwise equal to the uninterrupted run; no temp files."""
    diffs = differences(ref, killed)
    if diffs:
        raise SoakFailure("; ".join(diffs))


def soak(
    name: str,
    argv: list[str],
    work: Path,
    cycles: int,
    kills_per_run: int = 10,
    seed: int = 0,
    modes: tuple[str, ...] = MODES,
    keep: bool = False,
    say: Callable[[str], None] = SAY,
) -> dict:
    """`cycles` kill-and-resume cycles of the command `argv`: one uninterrupted reference run,
    then runs to completion killed up to `kills_per_run` times each, every one compared with
    the reference. Failures are counted, not raised."""
    t0 = time.perf_counter()
    work = Path(work)
    run_to_end([*argv, "--out", str(work / "ref")])
    ref_s = time.perf_counter() - t0
    say(f"{name}: reference run {ref_s:.0f} s")
    records: list[dict] = []
    failures: list[str] = []
    runs = 0
    while len(records) < cycles:
        out = work / f"run{runs}"
        k = min(kills_per_run, cycles - len(records))
        mine: list[dict] = []

        def line(rec: dict, run: int = runs, mine: list = mine, base: int = len(records)) -> None:
            n = base + len(mine)
            where = f"{rec['landed']}, step {rec['step']}" if rec["hit"] else "finished first"
            say(f"{name} cycle {n}/{cycles} (run {run}): {rec['mode']} kill at "
                f"{rec['after_s']:.2f} s: {where}")  # fmt: skip

        try:
            kill_until_done(argv, out, k, seed * 100_003 + runs, modes, mine, line)
            diffs = differences(work / "ref", out)
        except SoakFailure as e:
            diffs = [" ".join(str(e).split())[-600:] or repr(e)]
        for rec in mine:
            rec["run"] = runs
        records += mine or [{"run": runs, "hit": False, "mode": None}]
        if diffs:
            failures.append(f"run {runs}: {'; '.join(diffs)}")
            say(f"{name} run {runs}: FAILED: {'; '.join(diffs)}")
        else:
            say(f"{name} run {runs}: {sum(r['hit'] for r in mine)} kills, resumed result equal "
                "to the reference (metrics rows, checkpoint bitwise)")  # fmt: skip
            if not keep:
                shutil.rmtree(out, ignore_errors=True)
        runs += 1
    hit = [r for r in records if r["hit"]]
    return {
        "workload": name,
        "command": argv,
        "cycles": len(records),
        "kills_hit": len(hit),
        "runs": runs,
        "failures": len(failures),
        "failure_messages": failures,
        "wall_s": round(time.perf_counter() - t0, 1),
        "reference_s": round(ref_s, 1),
        "by_mode": dict(Counter(r["mode"] for r in hit)),
        "landed": dict(Counter(r["landed"] for r in hit)),
        "kills": records,
    }


def table(results: list[dict]) -> str:
    """The summary, one row a workload."""
    head = f"{'workload':<10} {'cycles':>6} {'kills hit':>9} {'failures':>8} {'wall':>8}"
    lines = [head, "-" * len(head)]
    for r in results:
        lines.append(
            f"{r['workload']:<10} {r['cycles']:>6} {r['kills_hit']:>9} {r['failures']:>8} "
            f"{r['wall_s']:>7.0f}s"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cycles", type=int, default=200, help="kill-and-resume cycles in all")
    p.add_argument("--workload", choices=["lm", "icl", "both"], default="both",
                   help="both: the cycles split between icl grid and lm train")  # fmt: skip
    p.add_argument("--kills-per-run", type=int, default=10)
    p.add_argument("--icl-steps", type=int, default=2500, help="steps of an icl grid run")
    p.add_argument("--lm-steps", type=int, default=800, help="steps of an lm train run")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--modes", default=",".join(MODES), help="where kills land: " + "|".join(MODES))
    p.add_argument("--out", default="runs/soak", help="work folder; soak.json is written here")
    p.add_argument("--keep", action="store_true", help="keep the folders of runs that passed")
    args = p.parse_args(argv)
    modes = tuple(m for m in args.modes.split(",") if m)
    if min(args.cycles + 1, args.kills_per_run, args.icl_steps, args.lm_steps) < 1:
        p.error("--cycles must be >= 0; --kills-per-run, --icl-steps, --lm-steps >= 1")
    if not modes or set(modes) - set(MODES):
        p.error("--modes: some of " + ",".join(MODES))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    names = ["icl", "lm"] if args.workload == "both" else [args.workload]
    shares = [args.cycles // len(names) + (i < args.cycles % len(names)) for i in range(len(names))]
    t0 = time.perf_counter()
    results = []
    for name, n in zip(names, shares, strict=True):
        label = {"icl": "icl grid", "lm": "lm train"}[name]
        work = out / name
        if work.exists():
            shutil.rmtree(work)
        if n == 0:
            results.append({"workload": label, "cycles": 0, "kills_hit": 0, "failures": 0,
                            "wall_s": 0.0})  # fmt: skip
            continue
        if name == "icl":
            cmd = [*ICL_ARGS[:7], str(args.icl_steps), *ICL_ARGS[8:]]
        else:
            cmd = lm_args(prepare_lm_data(out / "lm-data"), args.lm_steps)
        results.append(soak(label, cmd, work, n, args.kills_per_run, args.seed, modes, args.keep))
    summary = {
        "date": time.strftime("%Y-%m-%d"),
        "argv": sys.argv[1:] if argv is None else argv,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores",
        "torch": torch.__version__,
        "seed": args.seed,
        "cycles": sum(r["cycles"] for r in results),
        "kills_hit": sum(r["kills_hit"] for r in results),
        "failures": sum(r["failures"] for r in results),
        "wall_s": round(time.perf_counter() - t0, 1),
        "workloads": results,
    }
    (out / "soak.json").write_text(json.dumps(summary, indent=1))
    print(table(results))
    s = summary
    print(f"all: {s['cycles']} cycles, {s['kills_hit']} kills hit a live process, "
          f"{s['failures']} failures, {s['wall_s']:.0f} s; {out / 'soak.json'}")  # fmt: skip
    return 1 if summary["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
