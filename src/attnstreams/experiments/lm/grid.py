"""`lm grid`: every (stream, seed) run of Experiment 2 in one folder, alone or in stacks.

A run is trained alone (`LMTrainer`, one process each when `workers` > 1) or with the other
seeds of its stream in a stack of up to `stack` runs (lm/stack.py: one batched computation,
each run still its own folder, metrics and checkpoint). Finished runs are skipped and
interrupted ones resumed, so the same command continues a grid.
"""

from __future__ import annotations

import json
import signal
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch

from attnstreams.experiments.lm.arms import arm_name, parse_arm
from attnstreams.experiments.lm.data import DataConfig, prepare_data
from attnstreams.experiments.lm.evals import heldout_loss
from attnstreams.experiments.lm.stack import LMStack
from attnstreams.experiments.lm.train import (
    LMTrainConfig,
    LMTrainer,
    train_runs,
    with_epochs,
)
from attnstreams.run import checkpoint
from attnstreams.run.config import ConfigError
from attnstreams.run.logs import (
    CHECKPOINT,
    METRICS,
    TrainingInterrupted,
    new_run_dir,
    progress_bar,
    write_text_atomic,
)


def run_grid(
    arms: list[str],
    seeds: list[int],
    data_cfg: DataConfig,
    cfg: LMTrainConfig,
    out: Path,
    device: str | torch.device | list = "cpu",
    progress: bool = True,
    real_eval: str | None = None,
    data_dir: Path | None = None,
    workers: int = 1,
    stack: int = 1,
    stack_kernel: str = "math",
    warm: bool = True,
) -> list[dict]:
    """Every (arm, seed) run in out/<arm>-s<seed>/, sharing the token files in out/data (or
    data_dir). An arm is a stream, a residual, or STREAM+RESIDUAL (`parse_arm`; one that
    names no residual takes cfg's). workers > 1: that many jobs at once, one process each
    (small models leave most of a GPU idle; several processes fill it), compiled arms warmed
    first unless not `warm` (`warm_arms`). stack > 1: an arm's
    seeds in groups of up to `stack`, each group one job that trains its runs as one
    computation, attending on CUDA with SDPA's `stack_kernel` (lm/stack.py's KERNELS).
    device: one, or a list that the jobs take in turn (`grid_devices`): a group a GPU."""
    if not isinstance(stack, int) or isinstance(stack, bool) or stack < 1:
        raise ConfigError(f"stack must be a whole number of runs >= 1, got {stack!r}")
    out = new_run_dir(out, lock=True)  # one grid a folder; each run's, by its process
    try:
        data_dir = prepare_data(data_cfg, data_dir or out / "data", progress=progress)
        cfg = with_epochs(cfg, data_dir)
        jobs = [(arm, seeds[i : i + stack]) for arm in arms for i in range(0, len(seeds), stack)]
        devices = grid_devices(device, len(jobs))
        if workers <= 1:
            return [
                s
                for (st, sd), dev in zip(jobs, devices, strict=True)
                for s in _grid_job(
                    asdict(cfg), st, sd, out, data_dir, dev, real_eval, progress, stack_kernel
                )
            ]
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        spawn = mp.get_context("spawn")
        pending = [
            (a, sd)
            for a, sd in jobs
            if any(finished(out, a, s, cfg.steps, cfg.residual) is None for s in sd)
        ]
        if warmed := warm_arms(pending, cfg.compile and warm, stack, cfg.compile_backend):
            start = time.perf_counter()
            # processes of their own, gone (with their GPU memory) before the jobs start
            with ProcessPoolExecutor(len(warmed), mp_context=spawn) as pool:
                for f in [
                    pool.submit(_warm_compile, asdict(cfg), arm, seed, data_dir, dev)
                    for (arm, seed), dev in zip(warmed, devices, strict=False)
                ]:
                    f.result()
            names = ", ".join(arm for arm, _ in warmed)
            took = time.perf_counter() - start
            print(f"lm grid: compiled {names} once in {took:.0f} s", file=sys.stderr)
        with ProcessPoolExecutor(workers, mp_context=spawn) as pool:
            futures = [
                pool.submit(
                    _grid_job,
                    asdict(cfg),
                    st,
                    sd,
                    out,
                    data_dir,
                    dev,
                    real_eval,
                    stack_kernel=stack_kernel,
                )
                for (st, sd), dev in zip(jobs, devices, strict=True)
            ]
            summaries = []
            with progress_bar(len(jobs), "lm grid", "job", progress) as bar:
                for f in futures:
                    summaries += f.result()
                    bar.update()
        return summaries
    except (TrainingInterrupted, KeyboardInterrupt) as e:  # a grid has no --resume
        raise TrainingInterrupted(
            None,
            out,
            getattr(e, "signum", signal.SIGINT),
            text=f"interrupted: the runs keep their checkpoints in {out}; run the same `lm grid` "
            "command again to continue it",
        ) from None


def finished(out: Path, arm: str, seed: int, steps: int, residual: str = "plain") -> dict | None:
    """The summary of the run of `arm` and `seed` in `out` (its folder named as a grid names
    it; an arm that names no residual takes `residual`) if it reached step `steps`."""
    stream, residual = parse_arm(arm, residual)
    done = out / f"{arm_name(stream, residual)}-s{seed}" / "summary.json"
    summary = json.loads(done.read_text()) if done.exists() else None
    return summary if summary is not None and summary["step"] >= steps else None


def warm_arms(
    jobs: list[tuple[str, list[int]]], compile: bool, stack: int, backend: str = "inductor"
) -> list[tuple]:
    """(arm, seed) of each compiled arm with more than one job: one process compiles its
    training step first, so that the arm's jobs load it from torch.compile's on-disk cache
    instead of each compiling it at once (mHC's step takes minutes to compile, and several
    processes compiling together slow each other). A stack compiles a computation of its own,
    and only Inductor's graphs are cached on disk: then none is warmed."""
    if not compile or stack > 1 or backend != "inductor":
        return []
    first: dict[str, int] = {}
    for arm, seeds in jobs:
        first.setdefault(arm, seeds[0])
    return [(arm, seed) for arm, seed in first.items() if sum(a == arm for a, _ in jobs) > 1]


def _warm_compile(cfg: dict, arm: str, seed: int, data_dir: Path, device: str) -> None:
    """One training step of `arm` (seed `seed`) that writes nothing of a run: what it leaves
    is torch.compile's cache of the step."""
    stream, residual = parse_arm(arm, cfg["residual"])
    run_cfg = LMTrainConfig(**{**cfg, "stream": stream, "residual": residual, "seed": seed})
    LMTrainer(run_cfg, data_dir, device).train_step()


def grid_devices(device: str | torch.device | list, n: int) -> list[str]:
    """The device of each of n jobs: one device for all, or a list taken in turn. The pool
    starts jobs in order, so the jobs going at any time are spread evenly over the list."""
    devices = device if isinstance(device, list) else [device]
    return [str(devices[i % len(devices)]) for i in range(n)]


def _grid_job(
    cfg: dict,
    arm: str,
    seeds: list[int],
    out: Path,
    data_dir: Path,
    device: str,
    real_eval: str | None,
    progress: bool = False,
    stack_kernel: str = "math",
) -> list[dict]:
    """The runs of one arm's `seeds` (in a worker process when the grid has several):
    finished ones read back, the others trained together where they stand at one step (all
    new, or all checkpointed at the same step), else one after another."""
    summaries: dict[int, dict] = {}
    todo = []
    stream, residual = parse_arm(arm, cfg["residual"])
    for seed in seeds:
        run_cfg = LMTrainConfig(**{**cfg, "stream": stream, "residual": residual, "seed": seed})
        run_dir = out / f"{arm_name(stream, residual)}-s{seed}"
        if (summary := finished(out, arm, seed, run_cfg.steps, residual)) is not None:
            summaries[seed] = summary
        else:
            todo.append((run_cfg, run_dir))
    steps = {checkpoint.saved_step(d / CHECKPOINT) for _, d in todo}
    groups = [todo] if len(steps) == 1 else [[job] for job in todo]
    for group in groups:
        trainers = [LMTrainer(c, data_dir, device) for c, _ in group]
        runner = trainers[0] if len(trainers) == 1 else LMStack(trainers, stack_kernel)
        dirs = [d for _, d in group]
        resume = (dirs[0] / CHECKPOINT).exists()
        got = train_runs(runner, dirs, resume=resume, progress=progress)
        for trainer, run_dir, summary in zip(trainers, dirs, got, strict=True):
            if real_eval:
                summary["real_val_loss"] = heldout_loss(
                    trainer.model,
                    trainer.tokenizer,
                    real_eval,
                    trainer.model_cfg.block_size,
                    trainer.device,
                )
                _append_to_last_row(run_dir / METRICS, {"real_val_loss": summary["real_val_loss"]})
                write_text_atomic(run_dir / "summary.json", json.dumps(summary, indent=1))
        summaries |= {c.seed: s for (c, _), s in zip(group, got, strict=True)}
    return [summaries[seed] for seed in seeds]


def _append_to_last_row(path: Path, extra: dict) -> None:
    lines = path.read_text().splitlines()
    lines[-1] = json.dumps(json.loads(lines[-1]) | extra)
    write_text_atomic(path, "\n".join(lines) + "\n")
