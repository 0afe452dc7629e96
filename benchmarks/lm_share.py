"""Runs finished per GPU-minute when N runs share one GPU: N `lm train` processes, with and
without CUDA MPS (which lets their kernels run on the GPU at once instead of taking turns), or
the N runs stacked into one batched computation (`lm grid --stack`).

    python benchmarks/lm_share.py --data CORPUS --procs 10 --steps 1000 \
        --modes plain,mps,stack,stack-mps

Each mode trains the same N runs (seeds 0..N-1, the 8M model, compile + CUDA graphs, the
log-spaced evaluation schedule of results/lm-long) and times them from launch to the last
exit: compilation and evaluations included, as a grid pays them. plain and mps: N processes;
stack: one process, one stack of N; stack-mps: 2 processes of N/2 under MPS;
stack-flash, stack-efficient, stack-cudnn: one stack attending with that SDPA kernel (stack
and stack-mps: the math kernel). "steady" is the
sum of the runs' rates between their second evaluation and their last (compiling left out):
where runs start apart (separate processes compiling) these windows do not coincide and the
sum overstates the card's rate, so runs/GPU-minute, from wall time, is the measure. MPS
needs a CUDA machine where this user may start `nvidia-cuda-mps-control`; the table says
when it could not be started. Nothing here changes the GPU's settings.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TRAIN = [
    "--preset", "tinystories-8m", "--batch", "64", "--eval-batches", "0", "--ioi-prompts",
    "1024", "--eval-every", "50", "--compile", "--cuda-graphs", "--checkpoints", "end", "--json",
]  # fmt: skip
CPU_CHECK = [
    "--preset", "tiny", "--batch", "4", "--block-size", "32", "--eval-batches", "2",
    "--ioi-prompts", "16", "--eval-every", "5", "--checkpoints", "end", "--json",
]  # fmt: skip


def _mps_env(pipe: Path) -> dict[str, str]:
    """Where the MPS daemon and its clients meet."""
    return {"CUDA_MPS_PIPE_DIRECTORY": str(pipe), "CUDA_MPS_LOG_DIRECTORY": str(pipe)}


def _data_flags(args: argparse.Namespace) -> list[str]:
    """The options that name the token files: `lm prepare` and every run give the same."""
    return ["--data", args.data, "--data-dir", args.data_dir, "--train-tokens", "0",
            "--vocab-size", str(args.vocab_size), "--val-tokens", str(args.val_tokens),
            "--names", args.names]  # fmt: skip


def _mps(start: bool, pipe: Path) -> bool:
    """Start (or stop) an MPS control daemon on `pipe`; False where that is not possible."""
    ctl = shutil.which("nvidia-cuda-mps-control")
    if ctl is None:
        return False
    env = {**os.environ, **_mps_env(pipe)}
    if start:
        pipe.mkdir(parents=True, exist_ok=True)
        if subprocess.run([ctl, "-d"], env=env).returncode != 0:
            return False
        probe = "import torch; torch.ones(4, device='cuda').sum().item()"
        try:  # a client must be able to use it
            ok = subprocess.run([sys.executable, "-c", probe], env=env, timeout=60).returncode == 0
        except subprocess.TimeoutExpired:
            ok = False
        if not ok:
            subprocess.run([ctl], input=b"quit\n", env=env)
        return ok
    subprocess.run([ctl], input=b"quit\n", env=env)
    return True


#: stack-KERNEL: one stack attending with that SDPA kernel (`lm grid --stack-kernel`)
MODES = ("plain", "stack", "mps", "stack-mps", "stack-flash", "stack-efficient", "stack-cudnn")


def _split(mode: str, procs: int) -> tuple[str, int]:
    """MODE or MODE:N (N runs instead of --procs): the mode's name and its runs."""
    name, _, n = mode.partition(":")
    if name not in MODES or (n and not (n.isdigit() and int(n) >= 2)):
        print(f"lm_share.py: error: a mode is one of {', '.join(MODES)}, or MODE:N with N >= 2 "
              f"runs (got {mode!r})", file=sys.stderr)  # fmt: skip
        sys.exit(2)
    return name, int(n or procs)


def _tag(mode: str) -> str:
    """A mode as a file name (MODE:N -> MODE-nN)."""
    return mode.replace(":", "-n")


def _commands(mode: str, args: argparse.Namespace, work: Path) -> tuple[list, list[Path], int]:
    """The commands a mode launches, the run folders they fill, and the processes training."""
    cli = [sys.executable, "-m", "attnstreams.cli", "--threads", "1", "lm"]
    common = [*_data_flags(args), "--steps", str(args.steps), "--eval-log", str(args.eval_log),
              "--device", args.device, *(CPU_CHECK if args.device == "cpu" else TRAIN)]  # fmt: skip
    name, n = _split(mode, args.procs)
    tag = _tag(mode)
    if name in ("plain", "mps"):
        outs = [work / f"{tag}-{i}" for i in range(n)]
        cmds = [
            [*cli, "train", *common, "--seed", str(i), "--out", str(o)] for i, o in enumerate(outs)
        ]
        return cmds, outs, n
    procs = 2 if name == "stack-mps" else 1
    kernel = name.removeprefix("stack-") if procs == 1 and name != "stack" else "math"
    size = -(-n // procs)
    grid = work / tag
    cmd = [*cli, "grid", *common, "--stream", "none", "--seeds", str(n), "--stack", str(size),
           "--stack-kernel", kernel, "--workers", str(procs), "--out", str(grid)]  # fmt: skip
    return [cmd], [grid / f"none-s{i}" for i in range(n)], procs


def run_mode(mode: str, args: argparse.Namespace, work: Path) -> dict:
    """N runs in `mode` (MODES); their wall time and rates."""
    pipe = work / "mps-pipe"
    mps = _split(mode, args.procs)[0].endswith("mps")
    started = mps and _mps(True, pipe)
    if mps and not started:
        return {"mode": mode, "error": "MPS daemon could not be started"}
    env = {**os.environ, **(_mps_env(pipe) if started else {})}
    cmds, outs, training = _commands(mode, args, work)
    t0 = time.perf_counter()
    try:
        with contextlib.ExitStack() as logs:
            procs = []
            for i, cmd in enumerate(cmds):
                log = logs.enter_context((work / f"{_tag(mode)}-{i}.log").open("w"))
                procs.append(subprocess.Popen(cmd, env=env, stdout=log, stderr=log))
            codes = [p.wait() for p in procs]
    finally:
        if started:
            _mps(False, pipe)
    wall = time.perf_counter() - t0
    for i, code in enumerate(codes):  # what went wrong, where it can be read
        if code:
            tail = (work / f"{_tag(mode)}-{i}.log").read_text().splitlines()[-15:]
            print(f"{mode} process {i} exited {code}:", *tail, sep="\n", file=sys.stderr)
    steady, tokens, finished = 0.0, 0, 0
    for out in outs:
        if not (out / "summary.json").is_file():
            continue
        finished += 1
        rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
        tokens += rows[-1]["tokens"]
        if len(rows) >= 4:
            a, b = rows[2], rows[-1]
            steady += (b["tokens"] - a["tokens"]) / (b["elapsed_s"] - a["elapsed_s"])
    return {
        "mode": mode,
        "procs": training,
        "runs": len(outs),
        "failed": len(outs) - finished,  # runs that wrote no summary
        "wall_s": wall,
        "tokens_per_s": tokens / wall,
        "steady_tokens_per_s": steady,
        "runs_per_gpu_minute": finished / (wall / 60),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="the corpus (a folder of TinyStories files)")
    p.add_argument("--data-dir", help="its token files, if prepared (default: made here)")
    p.add_argument("--vocab-size", type=int, default=8192)
    p.add_argument("--val-tokens", type=int, default=1_000_000)
    p.add_argument("--names", default="original")
    p.add_argument("--procs", type=int, default=10, help="runs (N)")
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--eval-log", type=int, default=12)
    p.add_argument(
        "--modes",
        default="plain,stack,mps,stack-mps",
        help=f"comma list of {', '.join(MODES)}; MODE:N trains N runs instead of --procs",
    )
    p.add_argument("--device", default="cuda", help="cpu: a tiny model, to check the script")
    p.add_argument("--json", help="write the rows here too, each as its mode ends")
    args = p.parse_args()
    for mode in args.modes.split(","):  # every mode checked before any work
        _split(mode, args.procs)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        if args.data_dir is None:  # the runs' own token files, made once for every mode
            args.data_dir = str(Path(tmp) / "tokens")
            prep = [sys.executable, "-m", "attnstreams.cli", "lm", "prepare", *_data_flags(args),
                    "--json"]  # fmt: skip
            subprocess.run(prep, check=True, stdout=subprocess.DEVNULL)
        for mode in args.modes.split(","):
            rows.append(run_mode(mode, args, Path(tmp)))
            print(json.dumps(rows[-1]), flush=True)
            if args.json:  # kept if a later mode runs out of time
                Path(args.json).write_text(json.dumps(rows, indent=1))
    base = next((r for r in rows if "error" not in r), None)  # the first mode that ran
    print(
        "\n| mode | procs | runs | failed | wall s | tokens/s | steady tokens/s | runs/GPU-min | "
        f"x {base['mode'] if base else '-'} |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        if "error" in r:
            print(f"| {r['mode']} | {r['error']} |")
            continue
        x = r["runs_per_gpu_minute"] / base["runs_per_gpu_minute"] if base else float("nan")
        print(
            f"| {r['mode']} | {r['procs']} | {r['runs']} | {r['failed']} | {r['wall_s']:.1f} | "
            f"{r['tokens_per_s']:,.0f} | {r['steady_tokens_per_s']:,.0f} | "
            f"{r['runs_per_gpu_minute']:.2f} | {x:.2f} |"
        )


if __name__ == "__main__":
    main()
