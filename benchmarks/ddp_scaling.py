"""Data-parallel throughput under torchrun: tokens/s of DDP or FSDP training on random tokens.

    torchrun --nproc_per_node 1 benchmarks/ddp_scaling.py --preset gpt2-124m
    torchrun --nproc_per_node 2 benchmarks/ddp_scaling.py --preset gpt2-124m
    torchrun --nproc_per_node 2 benchmarks/ddp_scaling.py --preset gpt-1b --parallel fsdp
    torchrun --nproc_per_node 2 benchmarks/ddp_scaling.py --preset gpt2-124m --compile

--batch is per process (weak scaling: scaling efficiency = tokens/s on N / (N x tokens/s on 1)).
bf16 autocast on CUDA; MFU uses 6 N + 12 L T d FLOPs a token (as lm_throughput.py).
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from attnstreams.models.gpt import GPT, preset
from attnstreams.run import parallel


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="gpt2-124m")
    p.add_argument("--stream", default="none")
    p.add_argument("--parallel", default="ddp", choices=["ddp", "fsdp"])
    p.add_argument("--batch", type=int, default=8, help="sequences per process")
    p.add_argument("--block", type=int, help="context (default: the preset's)")
    p.add_argument("--compile", action="store_true", help="torch.compile the wrapped model")
    p.add_argument("--bucket-mb", type=float, default=25.0, help="DDP gradient bucket size")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--peak-tflops", type=float, default=790.0)
    p.add_argument("--json")
    args = p.parse_args()
    if args.bucket_mb < 1:  # as lm train: compiled DDP needs buckets >= the first one (1 MB)
        p.error("--bucket-mb must be >= 1")
    d, device = parallel.init_distributed(torch.device(args.device))
    over = {"stream": args.stream, "dropout": 0.0}
    if args.block:
        over["block_size"] = args.block
    torch.manual_seed(0)
    with torch.device(device):
        model = GPT(preset(args.preset, **over))
    n_params, flops_tok, c = model.num_params(False), model.flops_per_token(), model.cfg
    fwd = parallel.wrap(model, d, device, args.parallel, args.bucket_mb)
    mode, _ = parallel.layout(fwd, model)  # what was built: one process is "none"
    if args.compile:  # after wrapping, as `lm train` does
        fwd = torch.compile(fwd)
    cuda = device.type == "cuda"
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=cuda)
    g = torch.Generator(device=device).manual_seed(d.rank)
    x = torch.randint(c.vocab_size, (args.batch, c.block_size), device=device, generator=g)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda)

    def step():
        with autocast:
            _, loss = fwd(x, x)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(args.warmup):
        step()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    parallel.barrier(d)
    t0 = time.perf_counter()
    for _ in range(args.steps):
        step()
    if cuda:
        torch.cuda.synchronize()
    dt = (time.perf_counter() - t0) / args.steps
    tok_s = d.world * args.batch * c.block_size / dt
    row = {
        "preset": args.preset,
        "stream": args.stream,
        "parallel": mode,
        "processes": d.world,
        "compile": args.compile,
        "bucket_mb": args.bucket_mb if mode == "ddp" else None,
        "params": n_params,
        "tokens_per_s": tok_s,
        "ms_per_step": 1000 * dt,
        "mfu": flops_tok * tok_s / (d.world * args.peak_tflops * 1e12) if cuda else None,
        "peak_gb": torch.cuda.max_memory_allocated() / 1e9 if cuda else None,
    }
    if d.is_main:
        print(json.dumps(row))
        if args.json:
            with open(args.json, "w") as f:
                json.dump(row, f)
    parallel.shutdown(d)  # after a barrier: a rank leaving first could hang the last one


if __name__ == "__main__":
    main()
