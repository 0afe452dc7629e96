"""How long torch.compile takes to build a model's training step (its first forward and
backward), for residual methods, with and without their nested compile regions.

mHC's maps (20 Sinkhorn iterations a sublayer) are a nested compile region, traced once for
all sublayers (models/residual.py); `--regions off` traces them in every sublayer, as a model
stack does. The time is what a run spends before its first step, once per process.

    python benchmarks/compile_time.py --residuals mhc,hc --layers 8 --regions on,off

--warm times each row in two fresh processes that share one cache folder, torch.compile's
on-disk caches on: the first finds it empty, the second finds what the first left (what a job
given an earlier job's cache sees: experiments/lm_long.sh's COMPILE_CACHE).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

# Every row compiles from nothing: no cache from an earlier row or an earlier run. A process
# started by --warm instead uses the folder it is given (SHARED_CACHE), caches on.
SHARED_CACHE = "COMPILE_TIME_CACHE"
if os.environ.get(SHARED_CACHE):  # on, whatever the parent process set
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = os.environ[SHARED_CACHE]
    os.environ["TORCHINDUCTOR_FX_GRAPH_CACHE"] = "1"
    os.environ["TORCHINDUCTOR_AUTOGRAD_CACHE"] = "1"
else:
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="compile-time-")
    os.environ["TORCHINDUCTOR_FX_GRAPH_CACHE"] = "0"
    os.environ["TORCHINDUCTOR_AUTOGRAD_CACHE"] = "0"

import torch  # noqa: E402  (after the cache settings it reads)

from attnstreams.models.gpt import GPT, preset  # noqa: E402


def model_for(residual: str, layers: int, device: str) -> GPT:
    torch.manual_seed(0)
    cfg = preset("tinystories-8m", residual=residual, n_layer=layers, vocab_size=8192, dropout=0.0)
    return GPT(cfg).to(device)


def has_regions(model: torch.nn.Module) -> bool:
    return any(hasattr(m, "compile_once") for m in model.modules())


def first_step_s(residual: str, layers: int, regions: bool, backend: str, device: str) -> float:
    """Seconds from the first compiled call to the end of its backward."""
    torch._dynamo.reset()  # nothing traced for an earlier row
    model = model_for(residual, layers, device)
    cfg = model.cfg
    for m in model.modules():
        if hasattr(m, "compile_once"):
            m.compile_once = regions
    step = torch.compile(model, backend=backend)
    x = torch.randint(cfg.vocab_size, (4, cfg.block_size), device=device)
    start = time.perf_counter()
    _, loss = step(x, x)
    loss.backward()
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def cache_hits() -> int:
    """Graphs this process found in torch.compile's on-disk caches (AOTAutograd's, Inductor's)."""
    from torch._dynamo.utils import counters

    hits = counters["aot_autograd"]["autograd_cache_hit"]
    return hits + counters["inductor"]["fxgraph_cache_hit"]


def warm_pair(row: list[str]) -> tuple[float, float, int]:
    """One row's first step in a process with an empty cache folder, then in another process
    with the folder the first left; and how many graphs the second found there."""
    env = {**os.environ, SHARED_CACHE: tempfile.mkdtemp(prefix="compile-time-shared-")}
    cmd = [sys.executable, os.path.abspath(__file__), *row, "--seconds"]
    got = []
    for _ in range(2):
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"compile_time.py {' '.join(row)}: {proc.stderr[-2000:]}")
        seconds, hits = proc.stdout.split()[-2:]
        got.append((float(seconds), int(hits)))
    return got[0][0], got[1][0], got[1][1]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--residuals", default="mhc,hc", help="comma list of --residual names")
    ap.add_argument("--layers", default="8", help="comma list of layer counts")
    ap.add_argument("--regions", default="on,off", help="on, off or both: nested regions")
    ap.add_argument("--backend", default="inductor", help="torch.compile backend")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--warm", action="store_true", help="each row cold, then from its cache")
    ap.add_argument("--seconds", action="store_true", help=argparse.SUPPRESS)  # one row: a number
    args = ap.parse_args(argv)
    try:
        layers = [int(x) for x in args.layers.split(",")]
        regions = [{"on": True, "off": False}[x] for x in args.regions.split(",")]
    except (ValueError, KeyError):
        print("compile_time.py: --layers takes integers, --regions on and/or off", file=sys.stderr)
        return 2
    if args.seconds:  # a process of --warm: its one row
        s = first_step_s(args.residuals, layers[0], regions[0], args.backend, args.device)
        print(s, cache_hits())
        return 0
    print(f"torch {torch.__version__}, {args.device}, backend {args.backend}, tinystories-8m")
    if args.warm:
        print("| residual | layers | nested regions | first step, empty cache (s) "
              "| first step, cache of the process before (s) | graphs found in it |")  # fmt: skip
        print("|---|---|---|---|---|---|")
    else:
        print("| residual | layers | nested regions | first step (s) |")
        print("|---|---|---|---|")
    for residual in args.residuals.split(","):
        for n in layers:
            some = has_regions(model_for(residual, n, "meta"))
            for on in regions if some else [True]:  # a method without regions: one row
                flag = "on" if on else "off"
                label = flag if some else "none"
                if args.warm:
                    row = ["--residuals", residual, "--layers", str(n), "--regions", flag,
                           "--backend", args.backend, "--device", args.device]  # fmt: skip
                    cold, warm, hits = warm_pair(row)
                    print(f"| {residual} | {n} | {label} | {cold:.1f} | {warm:.1f} | {hits} |",
                          flush=True)  # fmt: skip
                else:
                    s = first_step_s(residual, n, on, args.backend, args.device)
                    print(f"| {residual} | {n} | {label} | {s:.1f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
