"""AMICL throughput: trials per second at the paper's settings (CPU by default).

python benchmarks/amicl.py [--trials N] [--threads T] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from attnstreams.amicl import AMICLConfig, run

SETTINGS = [
    ("paper table (D=100, K=512, T=20)", AMICLConfig(a=1.25)),
    ("D=1000", AMICLConfig(a=1.0, dim=1000)),
    ("T=100", AMICLConfig(a=1.0, length=100)),
    ("pearson", AMICLConfig(a=2.0, classes=50, similarity="pearson")),
    ("softmax read-out", AMICLConfig(a=1.25, readout="softmax")),
]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=200_000)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--json", help="also write the rows to this JSON file")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    print(
        f"{'setting':<34} {'method':<12} {'trials':>10} {'seconds':>8} {'trials/s':>12} "
        f"{'accuracy':>9}"
    )
    for name, cfg in SETTINGS:
        fast = cfg.similarity == "dot" and cfg.readout == "argmax"
        for method in ("vectors", "projections") if fast else ("vectors",):
            vectors = max(1000, args.trials * 2000 // (cfg.dim * cfg.length))
            trials = 20 * args.trials if method == "projections" else vectors
            run(cfg, min(trials, 2000), method=method)  # warm-up
            t0 = time.perf_counter()
            res = run(cfg, trials, seed=0, method=method)
            dt = time.perf_counter() - t0
            rows.append(
                {
                    "setting": name,
                    "method": method,
                    "trials": trials,
                    "seconds": dt,
                    "trials_per_s": trials / dt,
                    "accuracy": res.accuracy,
                }
            )
            print(
                f"{name:<34} {method:<12} {trials:>10,} {dt:>8.2f} {trials / dt:>12,.0f} "
                f"{res.accuracy:>9.4f}"
            )
    print(f"torch {torch.__version__}, {args.threads} threads; authors' notebook: ~420 trials/s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
