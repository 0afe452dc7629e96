"""Toy-ICL grid speed: ms per step of one run and of a variants x seeds grid, eager vs compiled.

    python benchmarks/icl_grid.py [--device cuda] [--seeds 10] [--steps 200] [--json OUT]
    python benchmarks/icl_grid.py --device cuda --full   # also the whole 75,000-step grid

The authors' JAX code: 14.0 ms a step, ~1,066 s a 75,000-step run with evaluations (H100).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import torch

from attnstreams.experiments.icl.train import ICLGrid, ICLTrainConfig, train
from attnstreams.run.logs import profile_steps


def make_grid(variants, seeds, device, mode, precision, **cfg) -> ICLGrid:
    """mode: eager | graph (CUDA graph of the eager step) | compile | compile+graph."""
    return ICLGrid(
        variants,
        seeds,
        ICLTrainConfig(precision=precision, **cfg),
        device,
        compile="compile" in mode,
        cuda_graph="graph" in mode,
    )


def ms_per_step(variants, seeds, device, mode, precision, steps) -> float:
    grid = make_grid(variants, seeds, device, mode, precision, eval_size=100)
    for _ in range(max(10, grid.cfg.data_chunk)):  # warm-up, compilation, first data chunk
        grid.train_step()
    sync = torch.cuda.synchronize if grid.device.type == "cuda" else (lambda: None)
    sync()
    t0 = time.perf_counter()
    for _ in range(steps):
        grid.train_step()
    sync()
    return 1000 * (time.perf_counter() - t0) / steps


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--seeds", type=int, default=10)
    p.add_argument("--variants", default="none,value,key,query")
    p.add_argument("--steps", type=int, default=200, help="timed steps per row")
    p.add_argument("--modes", default="eager,graph,compile+graph", help="comma-separated")
    p.add_argument("--precisions", default="fp32,tf32")
    p.add_argument("--full-mode", default="compile+graph")
    p.add_argument("--full-precision", default="tf32")
    p.add_argument("--full", action="store_true", help="also time the whole 75,000-step grid")
    p.add_argument("--what", default="single,grid", help="single and/or grid rows")
    p.add_argument("--profile", action="store_true", help="kernel-time table of an eager grid step")
    p.add_argument("--json")
    args = p.parse_args()
    variants = args.variants.split(",")
    seeds = list(range(args.seeds))
    rows = []
    name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
    print(f"device: {name}, torch {torch.__version__}")
    head = ("what", "mode", "runs", "ms/step", "ms/run-step", "75k steps (s)")
    print(f"{head[0]:<34} {head[1]:<18} {head[2]:>5} {head[3]:>9} {head[4]:>12} {head[5]:>14}")
    for prec in args.precisions.split(","):
        for mode in args.modes.split(","):
            mode_name = f"{mode}/{prec}"
            cases = {
                "single": ("single run (value)", ["value"], [0]),
                "grid": ("grid", variants, seeds),
            }
            for what, v, s in (cases[w] for w in args.what.split(",")):
                ms = ms_per_step(v, s, args.device, mode, prec, args.steps)
                runs = len(v) * len(s)
                rows.append({"what": what, "mode": mode_name, "runs": runs, "ms_per_step": ms})
                print(
                    f"{what:<34} {mode_name:<18} {runs:>5} {ms:>9.3f} {ms / runs:>12.4f} "
                    f"{75 * ms:>14.1f}"
                )
    if args.profile:
        grid = make_grid(variants, seeds, args.device, "eager", args.full_precision, eval_size=100)
        for _ in range(5):
            grid.train_step()
        table, kernel_ms = profile_steps(grid.train_step, 10, grid.device)
        print(table)
        print(f"GPU kernel time per eager grid step: {kernel_ms:.3f} ms")
    if args.full:
        with tempfile.TemporaryDirectory() as out:
            grid = make_grid(variants, seeds, args.device, args.full_mode, args.full_precision)
            summary = train(grid, out, progress=False)
        rows.append({"what": "full grid with evaluations", **summary})
        print(
            f"full {len(variants)}x{len(seeds)}x75,000 grid with evaluations: "
            f"{summary['wall_s']:.1f} s ({summary['eval_and_checkpoint_s']:.1f} s of it "
            "evaluating and saving checkpoints)"
        )
    print("authors (JAX, H100): 14.0 ms a step, ~1,066 s a run")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
