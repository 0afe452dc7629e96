"""Where a training step's GPU time goes: kernel time grouped by what the kernel does, the
card's two ceilings, and the output layer's loss kernels against their byte floor.

    python benchmarks/profile_steps.py --device cuda ceilings loss      # bandwidth, matmul, loss
    python benchmarks/profile_steps.py --device cuda lm --preset tinystories-8m --stream none
    python benchmarks/profile_steps.py --device cuda icl --variants none,value --seeds 10
    python benchmarks/profile_steps.py --device cpu lm --preset tiny --steps 2   # smoke test

`lm` profiles the compiled step without CUDA graphs (the same kernels as with them, each one
visible) and groups kernel time: output-layer matmuls (those with a vocabulary-sized operand),
other matmuls, cross-entropy, attention, norms, dropout, other elementwise, optimizer. `loss`
times the output layer's pieces alone at the paper's 8M shapes. `icl` times a toy grid's
CUDA-graphed step and one evaluation, then groups a compiled step's kernels. `--json` writes
every row and the kernel list.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict

import torch

GEMM_WORDS = ("gemm", "nvjet", "cutlass", "xmma", "wgmma", "cublas", "sm90_", "sm80_", "s16816")
MM_OPS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::matmul", "aten::linear")


def group(kernel: str, op: str, shapes, vocab: int | None) -> str:
    """What a kernel does, from its name and the op that launched it."""
    k = kernel.lower()
    if "_ce_kernel" in k or any(w in k for w in ("logsumexp", "log_softmax", "nll_loss", "gather")):
        return "cross-entropy"
    if any(w in k for w in ("flash", "fmha", "attention", "cudnn", "sdpa")) or "scaled_dot" in op:
        return "attention"
    if any(w in k for w in ("adam", "multi_tensor", "foreach")):
        return "optimizer"
    if op in MM_OPS or (not k.startswith("triton") and any(w in k for w in GEMM_WORDS)):
        dims = {d for s in shapes or () for d in (s if isinstance(s, (list, tuple)) else ())}
        return "output matmul" if vocab and vocab in dims else "other matmuls"
    if "layer_norm" in k or "rms_norm" in k:
        return "norms (+ fused neighbours)"
    if "dropout" in k or "bernoulli" in k or "rand" in k:
        return "dropout (+ fused neighbours)"
    if "gelu" in k or "silu" in k:
        return "gelu (+ fused neighbours)"
    if "embedding" in k:
        return "embedding"
    return "other elementwise / copies"


def kernel_breakdown(step, n: int, device: torch.device, vocab: int | None) -> dict:
    """Profile n calls of step(): per-group and per-kernel GPU time a call (ms)."""
    cuda = device.type == "cuda"
    with torch.profiler.profile(record_shapes=True) as prof:
        for _ in range(n):
            step()
        if cuda:
            torch.cuda.synchronize(device)
    groups, kernels, counts = defaultdict(float), defaultdict(float), defaultdict(int)
    for e in prof.events():
        for k in getattr(e, "kernels", ()):
            g = group(k.name, e.name, e.input_shapes, vocab)
            groups[g] += k.duration / 1000 / n
            kernels[(g, k.name[:110])] += k.duration / 1000 / n
            counts[(g, k.name[:110])] += 1
    top = sorted(kernels.items(), key=lambda kv: -kv[1])
    return {
        "kernel_ms": sum(groups.values()),
        "groups": dict(sorted(groups.items(), key=lambda kv: -kv[1])),
        "kernels": [
            {"group": g, "kernel": name, "ms": ms, "launches": counts[(g, name)] / n}
            for (g, name), ms in top
        ],
    }


def print_breakdown(title: str, b: dict, wall_ms: float | None = None, top: int = 18) -> None:
    tail = f" of {wall_ms:.2f} ms wall" if wall_ms else ""
    print(f"\n{title}: kernel time {b['kernel_ms']:.3f} ms a step{tail}")
    for g, ms in b["groups"].items():
        print(f"  {g:<34} {ms:8.3f} ms  {100 * ms / max(b['kernel_ms'], 1e-9):5.1f}%")
    print("  top kernels:")
    for r in b["kernels"][:top]:
        print(
            f"    {r['ms']:7.3f} ms  x{r['launches']:<4.0f} {r['group'][:14]:<14} "
            f"{r['kernel'][:90]}"
        )


def timed(fn, device, reps: int = 20, warm: int = 3) -> float:
    """Mean ms a call between two synchronisations, after warm-up."""
    for _ in range(warm):
        fn()
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda *a: None)
    sync(device)
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    sync(device)
    return 1000 * (time.perf_counter() - t0) / reps


# -- ceilings and the output layer's pieces --------------------------------------------------
def ceilings(device) -> dict:
    n = 2**30 if device.type == "cuda" else 2**22  # 4 GiB of float32 each way on a GPU
    a = torch.randn(n, device=device)
    b = torch.empty_like(a)
    ms = timed(lambda: b.copy_(a), device)
    bw = 2 * a.numel() * 4 / (ms / 1e3) / 1e12

    m = 8192 if device.type == "cuda" else 128
    x, y = (torch.randn(m, m, device=device, dtype=torch.bfloat16) for _ in range(2))
    ms_mm = timed(lambda: x @ y, device)
    tflops = 2 * m**3 / (ms_mm / 1e3) / 1e12
    print(
        f"device-to-device copy: {bw:.2f} TB/s (read + write); bf16 {m}^3 matmul: "
        f"{tflops:.0f} TFLOP/s"
    )
    return {"copy_tb_s": bw, "matmul_tflops": tflops}


def loss_pieces(device, rows: int, d: int, vocab: int, padded: int, bw: float) -> list[dict]:
    """The output layer at (rows, d) x (padded, d): its matmuls, and the loss kernels of the
    compiled logsumexp form and of the fused kernel (fused_loss.py), each against its bytes."""
    from attnstreams.models import fused_loss
    from attnstreams.models.gpt import _cross_entropy_lse

    bf = torch.bfloat16
    h = torch.randn(rows, d, device=device, dtype=bf)
    w = torch.randn(padded, d, device=device, dtype=bf) * 0.05
    t = torch.randint(vocab, (rows,), device=device)
    logits = (h @ w.mT).requires_grad_()
    gbytes = rows * padded * 2 / 1e9  # one pass over the bf16 logits
    out = []

    def row(name, ms, passes, note=""):
        floor = passes * gbytes / (bw * 1e3) * 1e3 if passes else None
        r = {"piece": name, "ms": ms, "passes_of_logits": passes, "byte_floor_ms": floor}
        out.append(r)
        fl = f"{floor:6.3f}" if floor else "     -"
        print(f"  {name:<58} {ms:7.3f} ms  floor {fl} ms  {note}")

    print(
        f"\noutput layer at {rows} x {d} -> {padded} columns (one pass of bf16 logits: "
        f"{gbytes:.2f} GB)"
    )
    g = torch.empty_like(logits)
    row("matmul: logits = h W^T", timed(lambda: h @ w.mT, device), 1, "(plus its FLOPs)")
    row("matmul: dL/dh = G W", timed(lambda: g.detach() @ w, device), 1)
    row("matmul: dL/dW = G^T h", timed(lambda: g.detach().mT @ h, device), 1)
    fl = 6 * rows * padded * d / 790e12 * 1e3
    print(f"  (the three matmuls' FLOPs at 790 TFLOP/s: {fl:.3f} ms)")

    ce = torch.compile(lambda z: _cross_entropy_lse(z, t, vocab))

    def ce_fb():
        loss = ce(logits)
        (gz,) = torch.autograd.grad(loss, logits)
        return gz

    row(
        "compiled logsumexp CE, forward + backward (today's)",
        timed(ce_fb, device),
        3,
        "read, read, write",
    )
    n = (t != -100).sum()
    ref_rows, ref_g = fused_loss._loss_and_grad_torch(logits.detach(), t, vocab, n)
    base_cfg = dict(fused_loss.CONFIG)
    variants = [(b, w, 0) for b, w in ((2048, 8), (4096, 16), (8192, 16))]
    variants += [(4096, 16, p) for p in (1, 2, 3)] + [(8192, 16, p) for p in (1, 2)]
    variants += [(2048, 8, p) for p in (2, 4)]
    for block, warps, per_sm in variants:
        fused_loss.CONFIG.update(BLOCK=block, num_warps=warps, PROGRAMS_PER_SM=per_sm)
        rows_, g_ = fused_loss.loss_and_grad(logits.detach(), t, vocab, n)
        err = ((g_.float() - ref_g.float()).norm() / ref_g.float().norm()).item()
        lerr = ((rows_ - ref_rows).abs().max()).item()
        ms = timed(lambda: fused_loss.loss_and_grad(logits.detach(), t, vocab, n), device)
        who = f"{per_sm}/SM" if per_sm else "a row"
        row(
            f"fused loss+grad kernel BLOCK={block} warps={warps} programs {who}",
            ms,
            2,
            f"read, write; grad rel err {err:.1e}, loss max err {lerr:.1e}",
        )
    fused_loss.CONFIG.clear()
    fused_loss.CONFIG.update(base_cfg)
    return out


def attention_backends(device) -> list[dict]:
    """SDPA forward + backward through each backend at the 8M model's shapes (head size 16,
    dropout 0.1, causal) and gpt2-124m's (head size 64, no dropout)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    F = torch.nn.functional
    out = []
    for name, (B, H, T, hd, p) in {
        "8m": (64, 16, 256, 16, 0.1) if device.type == "cuda" else (2, 2, 32, 16, 0.1),
        "124m": (64, 12, 1024, 64, 0.0) if device.type == "cuda" else (2, 2, 64, 64, 0.0),
    }.items():
        q, k, v = (
            torch.randn(B, H, T, hd, device=device, dtype=torch.bfloat16, requires_grad=True)
            for _ in range(3)
        )
        go = torch.randn(B, H, T, hd, device=device, dtype=torch.bfloat16)
        for be in ("CUDNN_ATTENTION", "FLASH_ATTENTION", "EFFICIENT_ATTENTION", "MATH"):

            def fb(be=be, q=q, k=k, v=v, p=p, go=go):
                with sdpa_kernel(getattr(SDPBackend, be)):
                    y = F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True)
                torch.autograd.grad(y, (q, k, v), go)

            try:
                ms = timed(fb, device, reps=10)
            except Exception as e:
                print(f"  attention {name} {be}: failed {e!r:.120}")
                continue
            print(
                f"  attention {name} (B={B} H={H} T={T} hd={hd} dropout={p}) {be}: "
                f"{ms:.3f} ms forward + backward a layer"
            )
            out.append({"shape": name, "backend": be, "ms": ms})
    return out


# -- a language-model step ----------------------------------------------------------------------
def lm_step(preset_name, stream, device, batch, block, fused: bool, compile_: bool):
    from attnstreams.models.gpt import GPT, preset

    cfg = preset(preset_name, stream=stream, **({"block_size": block} if block else {}))
    torch.manual_seed(0)
    with torch.device(device):
        model = GPT(cfg)
    model.fused_loss = fused
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device.type == "cuda")
    fwd = torch.compile(model) if compile_ else model
    T = cfg.block_size
    x = torch.randint(cfg.vocab_size, (batch, T), device=device)
    y = torch.randint(cfg.vocab_size, (batch, T), device=device)
    autocast = torch.autocast(device.type, torch.bfloat16, enabled=device.type == "cuda")

    def step():
        with autocast:
            _, loss = fwd(x, y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    return step, cfg


def profile_lm(args, device) -> list[dict]:
    rows = []
    for stream in args.stream.split(","):
        for loss in args.loss.split(","):
            step, cfg = lm_step(
                args.preset, stream, device, args.batch, args.block, loss == "fused", args.compile
            )
            t0 = time.perf_counter()
            try:
                first = step().item()  # the same weights and batch in every row: same loss
            except Exception as e:
                print(f"{args.preset} {stream} (loss {loss}) failed: {e!r:.300}")
                continue
            compile_s = time.perf_counter() - t0
            print(
                f"{args.preset} {stream} (loss {loss}): first loss {first:.6f}, "
                f"compiled in {compile_s:.1f} s"
            )
            wall = timed(step, device, reps=args.steps)
            b = kernel_breakdown(step, 3, device, cfg.padded_vocab)
            how = "compiled, no CUDA graphs" if args.compile else "eager"
            title = f"{args.preset} {stream} (loss {loss}), {how}"
            print_breakdown(title, b, wall)
            rows.append(
                {
                    "what": "lm",
                    "preset": args.preset,
                    "stream": stream,
                    "loss": loss,
                    "batch": args.batch,
                    "wall_ms": wall,
                    "compile_s": compile_s,
                    "first_loss": first,
                    **b,
                }
            )
            torch.compiler.reset()
    return rows


# -- the toy grid -------------------------------------------------------------------------------
def profile_icl(args, device) -> list[dict]:
    from attnstreams.experiments.icl.train import ICLGrid, ICLTrainConfig

    variants, seeds = args.variants.split(","), list(range(args.seeds))
    rows = []
    for prec in args.precision.split(","):
        cfg = ICLTrainConfig(precision=prec, **({"eval_size": 200} if device.type == "cpu" else {}))
        t0 = time.perf_counter()
        grid = ICLGrid(variants, seeds, cfg, device, compile=True, cuda_graph=device.type == "cuda")
        build_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        for _ in range(max(5, cfg.data_chunk)):
            grid.train_step()
        sync = torch.cuda.synchronize if device.type == "cuda" else (lambda *a: None)
        sync(device)
        first_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        grid.evaluate()
        sync(device)
        first_eval_s = time.perf_counter() - t0
        step_ms = timed(grid.train_step, device, reps=args.steps, warm=0)
        eval_ms = timed(grid.evaluate, device, reps=3, warm=1)
        n = len(variants) * len(seeds)
        est = (75_000 * step_ms + 151 * eval_ms) / 1e3 + build_s + first_s + first_eval_s
        print(
            f"\ntoy grid {len(variants)} x {len(seeds)} = {n} runs, {prec}: build {build_s:.1f} s,"
            f" first {max(5, cfg.data_chunk)} steps {first_s:.1f} s, first evaluation "
            f"{first_eval_s:.1f} s; {step_ms:.3f} ms a step ({step_ms / n:.4f} a run-step), "
            f"{eval_ms:.1f} ms an evaluation; 75,000 steps + 151 evaluations ~ {est:.0f} s"
        )
        flat = ICLGrid(variants, seeds, cfg, device, compile=True, cuda_graph=False)
        for _ in range(5):
            flat.train_step()
        b = kernel_breakdown(flat.train_step, 5, device, None)
        print_breakdown(f"toy grid step ({prec}), compiled, no CUDA graph", b)
        be = kernel_breakdown(grid.evaluate, 1, device, None)
        print_breakdown(f"toy grid evaluation ({prec})", be, top=8)
        rows.append(
            {
                "what": "icl",
                "runs": n,
                "precision": prec,
                "build_s": build_s,
                "first_steps_s": first_s,
                "first_eval_s": first_eval_s,
                "step_ms": step_ms,
                "eval_ms": eval_ms,
                "estimate_75k_s": est,
                "step": b,
                "eval": be,
            }
        )
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("what", nargs="+", choices=("ceilings", "loss", "attention", "lm", "icl"))
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--preset", default="tinystories-8m")
    p.add_argument("--stream", default="none", help="comma list (lm)")
    p.add_argument("--loss", default="fused,compiled", help="fused and/or compiled (lm)")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--block", type=int, help="override the preset's context (lm)")
    p.add_argument("--steps", type=int, default=20, help="timed steps")
    p.add_argument(
        "--variants", default="none,value,key,query,value-learned,value-first,value-first-learned"
    )
    p.add_argument("--seeds", type=int, default=10)
    p.add_argument("--precision", default="tf32", help="comma list (icl)")
    p.add_argument(
        "--no-compile", dest="compile", action="store_false", help="lm: eager (a smoke test)"
    )
    p.add_argument("--json")
    args = p.parse_args()
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"device: {name}, torch {torch.__version__}")
    out, bw = {"device": name, "torch": torch.__version__}, 4.3
    if "ceilings" in args.what:
        out["ceilings"] = ceilings(device)
        bw = out["ceilings"]["copy_tb_s"]
    if "loss" in args.what:
        small = device.type == "cpu"
        shape = (512, 64, 1000, 1024) if small else (64 * 256, 256, 50257, 50304)
        out["loss"] = loss_pieces(device, *shape, bw)
    if "attention" in args.what:
        out["attention"] = attention_backends(device)
    if "lm" in args.what:
        out["lm"] = profile_lm(args, device)
    if "icl" in args.what:
        out["icl"] = profile_icl(args, device)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1, default=str)


if __name__ == "__main__":
    main()
