"""Pack a grid's runs into GPU jobs of bounded length, from each arm's measured step time.

Runs that share one card under CUDA MPS take about the sum of their step times alone (in the
lm-long grid, 8 plain 8M runs sharing the card each took about 8 times a run's step time alone),
so a job holds runs whose summed card time, steps x ms/step x `--margin`, stays under `--budget`
seconds. Prints one `experiments/lm_long.sh` line a job (groups NAMES ARMS SEED SEEDS), costliest
runs first, with the settings it needs (`PRESET`, `MPS=1`, and `EPOCHS` from `--epochs`).
Runs already finished in a `--done` folder (its ARM-sSEED/summary.json at `--steps`) are left out.
`--apart mhc` puts at most one mHC run in a job: a single run compiles in its own process while
the job's other runs train, where several would compile first (lm grid warms an arm of several
processes before they start) and leave the card idle meanwhile.

The defaults leave room for what the sum does not count. In the residual comparison's first
jobs (results/lm-residuals/tinystories-8m, H100), 6 runs summing 281 card-s ended 365 s after
the data was ready, 4 summing 264 s after 371 s: 1.25 times the sum and 13 and 40 s more
(compiling), and preparing the data took 13 and 57 s. lm_long.sh stops its grids 570 s into
the job, so that a job of 450 card-s (x 1.25) ends in time; an arm whose compiling takes
minutes (mHC) needs more room than this counts.

    python experiments/plan_jobs.py --cost residuals-tinystories-8m.json \
        --preset tinystories-8m --vocab 8192 --arms denseformer,hc,dhc,mhc,attnres --seeds 5 \
        --steps 6554 --epochs 40

The step times are read as `lm report --cost` reads them (`step_times`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from attnstreams.experiments.lm.grid import finished
from attnstreams.experiments.lm.report import step_times
from attnstreams.run.config import ConfigError

BUDGET, MARGIN = 450.0, 1.25  # card seconds a job; times the summed step times (see above)


def pack(
    runs: list[tuple[str, int, float]], budget: float, apart: frozenset[str] = frozenset()
) -> list[list[tuple[str, int, float]]]:
    """First-fit decreasing: (arm, seed, seconds) runs into jobs of at most `budget` seconds,
    at most one run of each arm in `apart` a job."""
    jobs: list[list[tuple[str, int, float]]] = []
    for run in sorted(runs, key=lambda r: (-r[2], r[0], r[1])):
        if run[2] > budget:
            raise ValueError(f"{run[0]} takes {run[2]:.0f} s alone, more than a job's {budget:g}")
        for job in jobs:
            if run[0] in apart and any(r[0] == run[0] for r in job):
                continue
            if sum(r[2] for r in job) + run[2] <= budget:
                job.append(run)
                break
        else:
            jobs.append([run])
    return jobs


def groups(job: list[tuple[str, int, float]], names: str) -> str:
    """A job's runs as lm_long.sh groups: each arm's consecutive seeds as SEED SEEDS."""
    out = []
    for arm in dict.fromkeys(r[0] for r in job):
        seeds = sorted(r[1] for r in job if r[0] == arm)
        start = prev = seeds[0]
        for s in [*seeds[1:], None]:
            if s is not None and s == prev + 1:
                prev = s
                continue
            out.append(f"{names} {arm} {start} {prev - start + 1}")
            if s is not None:
                start = prev = s
    return " ".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cost", type=Path, required=True, help="lm_throughput.py --json rows")
    p.add_argument("--preset", required=True, help="the runs' preset, as in the rows")
    p.add_argument("--vocab", type=int, help="the runs' vocabulary (default: any)")
    p.add_argument("--arms", required=True, help="comma list of arms")
    p.add_argument("--seeds", type=int, default=5, help="seeds 0..N-1 of each arm")
    p.add_argument("--steps", type=int, required=True, help="training steps a run")
    p.add_argument("--budget", type=float, default=BUDGET, help="card seconds a job")
    p.add_argument("--margin", type=float, default=MARGIN, help="evaluations, compiling, sharing")
    p.add_argument("--apart", default="", help="arms of at most one run a job (comma list)")
    p.add_argument(
        "--done", type=Path, action="append", default=[], help="finished runs' folder; repeatable"
    )
    p.add_argument("--names", default="resampled")
    p.add_argument("--epochs", type=float, help="passes a run, as lm_long.sh's EPOCHS (its steps)")
    args = p.parse_args(argv)
    arms = [a for a in args.arms.split(",") if a]
    try:
        if not arms or args.seeds < 1 or args.steps < 1 or args.budget <= 0:
            raise ValueError("--arms, --seeds, --steps and --budget must name work")
        if args.epochs is not None and not args.epochs > 0:  # lm_long.sh would train nothing
            raise ValueError(f"--epochs must be above 0, got {args.epochs:g}")
        ms = step_times(args.cost, args.preset, arms, args.vocab)
        runs = [
            (a, s, args.steps * ms[a]["ms_per_step"] / 1e3 * args.margin)
            for a in arms
            for s in range(args.seeds)
            if not any(finished(done, a, s, args.steps) for done in args.done)
        ]
        if not runs:
            raise ValueError("every run is finished in the --done folders")
        jobs = pack(runs, args.budget, frozenset(a for a in args.apart.split(",") if a))
    except (ValueError, ConfigError) as e:
        print(f"plan_jobs: {e}", file=sys.stderr)
        return 2
    env = f"EPOCHS={args.epochs:g} " if args.epochs is not None else ""
    env += f"MPS=1 PRESET={args.preset}"
    for i, job in enumerate(jobs, 1):
        total = sum(r[2] for r in job)
        print(f"# job {i}: {len(job)} runs, ~{total:.0f} card-s")
        print(f"{env} experiments/lm_long.sh CORPUS WORK OUT {groups(job, args.names)}")
    print(f"# {len(jobs)} jobs, ~{sum(r[2] for r in runs):.0f} card-s in all")
    return 0


if __name__ == "__main__":
    sys.exit(main())
