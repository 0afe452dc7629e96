"""GPT training throughput: tokens/s, ms/step, MFU and peak memory per preset x stream x mode.

    python benchmarks/lm_throughput.py --device cuda            # the paper's presets on a GPU
    python benchmarks/lm_throughput.py --device cpu --presets tiny --modes eager --steps 2

Training steps on random tokens (AdamW, bf16 autocast on CUDA), after warm-up; data is made on
the device so the number is the model's. Modes: eager, compile (torch.compile), and
compile+cudagraphs (torch.compile's reduce-overhead mode, as `lm train --cuda-graphs`), and
compile+tuned (Inductor's coordinate-descent tuning of the kernels it generates).
MFU = (6 N + 12 L T d) x tokens/s / peak, with N the parameter count (the tied embedding
counted once: it is the output layer's matmul; padding rows not counted), L layers, T context,
d width (PaLM's formula; the second term is attention's score and value matmuls).
Authors' 8M anchor (fp32, hand-written attention, one H100): 82 ms a step at 64 x 256 tokens,
~200,000 tokens/s, 19.2 GB peak.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from attnstreams.models.gpt import GPT, preset
from attnstreams.run.logs import device_name, profile_steps

MODES = ("eager", "compile", "compile+cudagraphs", "compile+tuned")
DEFAULT_SHAPES = {
    "tinystories-8m": (64, 256),
    "gpt2-124m": (64, 1024),  # fills an 80 GB card: ~50 GB compiled, ~70 GB eager
    "gpt-1b": (8, 2048),
    "modern-8m": (64, 256),
    "modern-124m": (64, 1024),
    "modern-1b": (8, 2048),
    "tiny": (8, 64),
}


def measure(name, stream, mode, device, batch, block, steps, warmup, over, profile=False) -> dict:
    over = {"stream": stream, "block_size": block, **over}
    torch.compiler.reset()  # the previous row's compiled graphs and their memory
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    torch.manual_seed(0)
    with torch.device(device):  # initialise on the device: a 1B model is slow to init on CPU
        model = GPT(preset(name, **over))
    cuda = device.type == "cuda"
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=cuda)
    graphs = mode == "compile+cudagraphs"  # torch.compile's CUDA graphs (reduce-overhead)
    fwd = model
    if mode == "compile+tuned":  # Inductor tunes its generated kernels: minutes of compiling
        fwd = torch.compile(model, options={"coordinate_descent_tuning": True})
    elif mode != "eager":
        fwd = torch.compile(model, mode="reduce-overhead" if graphs else None)
    x = torch.randint(model.cfg.vocab_size, (batch, block), device=device)
    y = torch.randint(model.cfg.vocab_size, (batch, block), device=device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda)

    def step():
        if graphs:
            torch.compiler.cudagraph_mark_step_begin()
        with autocast:
            _, loss = fwd(x, y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(warmup):
        step()
    if cuda:  # peak memory counts warm-up too: a CUDA graph's pool is allocated there
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    if cuda:
        torch.cuda.synchronize(device)
    dt = (time.perf_counter() - t0) / steps
    tok_s = batch * block / dt
    peak = torch.cuda.max_memory_allocated(device) / 1e9 if cuda else None
    if profile:
        table, kernel_ms = profile_steps(step, 3, device, rows=20)
        print(table)
        print(f"{name} {stream} {mode}: GPU kernel time {kernel_ms:.2f} ms of {1000 * dt:.2f} ms")
    return {
        "preset": name,
        "stream": stream,
        "mode": mode,
        "batch": batch,
        "block": block,
        "vocab": model.cfg.vocab_size,
        "padded_vocab": model.cfg.padded_vocab,
        "dropout": model.cfg.dropout,
        "ms_per_step": 1000 * dt,
        "tokens_per_s": tok_s,
        "flops_per_token": model.flops_per_token(),
        "peak_gb": peak,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--presets", default="tinystories-8m,gpt2-124m")
    p.add_argument("--streams", default="none,value,value-first,value-learned")
    p.add_argument("--modes", default="eager,compile,compile+cudagraphs")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--batch", type=int, help="override the preset's default batch")
    p.add_argument("--block", type=int, help="override the preset's default context")
    p.add_argument("--vocab", type=int, help="override the vocabulary (default: the preset's)")
    p.add_argument("--vocab-multiple", type=int, help="pad the embedding rows (default: 64)")
    p.add_argument("--dropout", type=float, help="override the preset's dropout")
    p.add_argument(
        "--profile", action="store_true", help="kernel table of each preset and mode's first row"
    )
    p.add_argument("--peak-tflops", type=float, default=790.0, help="bf16 peak for MFU (H100)")
    p.add_argument("--json")
    args = p.parse_args()
    bad = set(args.modes.split(",")) - set(MODES)
    if bad:
        p.error(f"unknown mode(s) {', '.join(sorted(bad))}; choose from {', '.join(MODES)}")
    device = torch.device(args.device)
    name = device_name(device)
    print(f"device: {name}, torch {torch.__version__}")
    head = ("preset", "stream", "mode", "tokens/s", "ms/step", "MFU", "peak GB", "vs none")
    print(
        f"{head[0]:<15} {head[1]:<14} {head[2]:<8} {head[3]:>12} {head[4]:>9} {head[5]:>6} "
        f"{head[6]:>8} {head[7]:>8}"
    )
    over = {
        k: v
        for k, v in (
            ("vocab_size", args.vocab),
            ("vocab_multiple", args.vocab_multiple),
            ("dropout", args.dropout),
        )
        if v is not None
    }
    rows = []
    for pre in args.presets.split(","):
        b0, t0 = DEFAULT_SHAPES.get(pre, (8, 256))
        batch, block = args.batch or b0, args.block or t0
        for mode in args.modes.split(","):
            base = None
            for stream in args.streams.split(","):
                r = measure(
                    pre,
                    stream,
                    mode,
                    device,
                    batch,
                    block,
                    args.steps,
                    args.warmup,
                    over,
                    args.profile and base is None,
                )
                mfu = r["flops_per_token"] * r["tokens_per_s"] / (args.peak_tflops * 1e12)
                r["mfu"] = mfu if device.type == "cuda" else None
                base = base or r
                r["time_vs_none"] = r["ms_per_step"] / base["ms_per_step"]
                rows.append(r)
                mfu_s = f"{100 * mfu:.1f}%" if r["mfu"] is not None else "-"
                peak = f"{r['peak_gb']:.2f}" if r["peak_gb"] is not None else "-"
                print(
                    f"{pre:<15} {stream:<14} {mode:<8} {r['tokens_per_s']:>12,.0f} "
                    f"{r['ms_per_step']:>9.2f} {mfu_s:>6} {peak:>8} "
                    f"{r['time_vs_none']:>8.3f}"
                )
    print("authors' 8M (fp32, H100): 82 ms a step at 64 x 256, ~200,000 tokens/s, 19.2 GB peak")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
