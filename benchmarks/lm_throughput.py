"""GPT training throughput: tokens/s, ms/step, MFU and peak memory per preset x arm x mode.

    python benchmarks/lm_throughput.py --device cuda            # the paper's presets on a GPU
    python benchmarks/lm_throughput.py --device cpu --presets tiny --modes eager --steps 2

An arm (--streams) is a stream, a residual (denseformer, hc, ...) or STREAM+RESIDUAL, as in
`lm grid`; each row gives its parameters, so what a method adds is its row minus none's.
Training steps on random tokens (AdamW, bf16 autocast on CUDA), after warm-up; data is made on
the device so the number is the model's. Modes: eager, compile (torch.compile), and
compile+cudagraphs (torch.compile's reduce-overhead mode, as `lm train --cuda-graphs`), and
compile+tuned (Inductor's coordinate-descent tuning of the kernels it generates) and
compile+autotune (max-autotune-no-cudagraphs: Triton matmul templates tried against cuBLAS).
--losses: our model's output layer and loss as one fused function (fused_loss.py, the
default) and/or nn.Linear + the compiled cross-entropy (compiled). --sdpa: the attention
kernels SDPA may choose from for our rows (default: its own choice; flash, cudnn, efficient:
that backend only, set while the row compiles and runs). Peers (--peers) are timed
beside ours in the same run; the closing table gives each peer's tokens/s over ours.
--jobs K: K rows at a time, each in a process of its own, compile and warm up at once and are
then timed one after another in order (no compiling while a row is timed): compiling is most of
a compiled row's time, and their compiles overlap.
MFU = (6 N + 12 L T d) x tokens/s / peak, with N the parameter count (the tied embedding
counted once: it is the output layer's matmul; padding rows not counted), L layers, T context,
d width (PaLM's formula; the second term is attention's score and value matmuls).
Authors' 8M anchor (fp32, hand-written attention, one H100): 82 ms a step at 64 x 256 tokens,
~200,000 tokens/s, 19.2 GB peak.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import queue
import sys
import time
from pathlib import Path

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from attnstreams.experiments.lm.arms import parse_arm
from attnstreams.models.gpt import GPT, preset
from attnstreams.run.logs import device_name, profile_steps, write_text_atomic

MODES = ("eager", "compile", "compile+cudagraphs", "compile+tuned", "compile+autotune")
DEFAULT_SHAPES = {
    "tinystories-8m": (64, 256),
    "gpt2-124m": (64, 1024),  # fills an 80 GB card: ~50 GB compiled, ~70 GB eager
    "gpt-1b": (8, 2048),
    "modern-8m": (64, 256),
    "modern-124m": (64, 1024),
    "modern-1b": (8, 2048),
    "tiny": (8, 64),
}


PEERS = ("hf-gpt2", "authors", "authors-value")
SDPA = {
    "flash": SDPBackend.FLASH_ATTENTION,
    "cudnn": SDPBackend.CUDNN_ATTENTION,
    "efficient": SDPBackend.EFFICIENT_ATTENTION,
}
AUTHORS_DIR = Path(__file__).resolve().parents[2] / "shared/anchors/authors-code/small-LM"


class Peer(torch.nn.Module):
    """Another implementation of our config's shapes, called as our GPT is: (logits, loss)."""

    def __init__(self, net: torch.nn.Module, call) -> None:
        super().__init__()
        self.net, self.call = net, call

    def forward(self, idx, targets):
        return self.call(self.net, idx, targets)


def authors_gpt(cfg, folder: Path, value: bool) -> Peer:
    """The authors' small-LM model (their model.py, or model_Vpass.py with the value stream),
    read from their code's folder (not part of this project)."""
    import contextlib
    import importlib.util
    import io

    path = Path(folder) / ("model_Vpass.py" if value else "model.py")
    if not path.is_file():
        raise SystemExit(f"--peers authors needs the authors' small-LM code: no {path}")
    spec = importlib.util.spec_from_file_location(f"authors_{path.stem}", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # torch.compile looks the module up by its name
    spec.loader.exec_module(mod)
    conf = {
        "vocab_size": cfg.vocab_size, "hidden_size": cfg.n_embd,
        "max_position_embeddings": cfg.block_size, "num_layers": cfg.n_layer,
        "num_heads": cfg.n_head, "window_size": cfg.block_size,
    }  # fmt: skip
    with contextlib.redirect_stdout(io.StringIO()):  # it prints its parameter count
        net = mod.GPT(conf)
    return Peer(net, lambda net, idx, targets: net(idx, targets))


def hf_gpt2(cfg) -> Peer:
    """Hugging Face transformers' GPT2LMHeadModel of our config's shapes (SDPA attention, its
    own loss), called as our GPT is: (logits, loss)."""
    from transformers import GPT2Config, GPT2LMHeadModel
    from transformers.utils import logging

    logging.set_verbosity_error()  # its notes on token ids and the loss type

    if cfg.pos != "learned" or cfg.mlp != "gelu" or cfg.n_kv_head not in (None, cfg.n_head):
        raise SystemExit(f"hf-gpt2 is GPT-2's block; {cfg} is another")
    eos = cfg.vocab_size - 1
    hf = GPT2LMHeadModel(
        GPT2Config(
            vocab_size=cfg.vocab_size, n_positions=cfg.block_size, n_embd=cfg.n_embd,
            n_layer=cfg.n_layer, n_head=cfg.n_head, resid_pdrop=cfg.dropout,
            embd_pdrop=cfg.dropout, attn_pdrop=cfg.dropout, attn_implementation="sdpa",
            bos_token_id=eos, eos_token_id=eos, loss_type="ForCausalLM",
        )
    )  # fmt: skip

    def call(net, idx, targets):
        out = net(input_ids=idx, labels=targets)
        return out.logits, out.loss

    return Peer(hf, call)


def measure(
    name, stream, mode, device, batch, block, steps, warmup, over, profile=False, peer=None,
    authors_dir=AUTHORS_DIR, loss="fused", gate=None, done=None,
) -> dict:  # fmt: skip
    """One row. `gate` is called after the warm-up and `done` after the timed steps (--jobs:
    rows compile side by side, then take turns on the card)."""
    arm = ("none", "plain") if peer else parse_arm(stream)
    over = {"stream": arm[0], "residual": arm[1], "block_size": block, **over}
    torch.compiler.reset()  # the previous row's compiled graphs and their memory
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    cfg = preset(name, **over)
    with torch.device("meta"):  # our model's FLOPs a token, without its memory in a peer's row
        flops = GPT(cfg).flops_per_token()
    torch.manual_seed(0)
    with torch.device(device):  # initialise on the device: a 1B model is slow to init on CPU
        if peer == "hf-gpt2":
            model = hf_gpt2(cfg)
        elif peer:
            model = authors_gpt(cfg, authors_dir, value=peer == "authors-value")
        else:
            model = GPT(cfg)
            model.fused_loss = loss == "fused"  # fused_loss.py, or nn.Linear + cross_entropy
    cuda = device.type == "cuda"
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=cuda)
    graphs = mode == "compile+cudagraphs"  # torch.compile's CUDA graphs (reduce-overhead)
    fwd = model
    if mode == "compile+tuned":  # Inductor tunes its generated kernels: minutes of compiling
        fwd = torch.compile(model, options={"coordinate_descent_tuning": True})
    elif mode == "compile+autotune":  # Inductor also tries Triton matmul templates
        fwd = torch.compile(model, mode="max-autotune-no-cudagraphs")
    elif mode != "eager":
        fwd = torch.compile(model, mode="reduce-overhead" if graphs else None)
    x = torch.randint(cfg.vocab_size, (batch, block), device=device)
    y = torch.randint(cfg.vocab_size, (batch, block), device=device)
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
    if gate:
        gate()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    if cuda:
        torch.cuda.synchronize(device)
    dt = (time.perf_counter() - t0) / steps
    tok_s = batch * block / dt
    peak = torch.cuda.max_memory_allocated(device) / 1e9 if cuda else None
    if done:
        done()
    if profile:
        table, kernel_ms = profile_steps(step, 3, device, rows=20)
        print(table)
        print(f"{name} {stream} {mode}: GPU kernel time {kernel_ms:.2f} ms of {1000 * dt:.2f} ms")
    return {
        "preset": name,
        "stream": peer or stream,
        "model": peer or "attnstreams",
        "loss": None if peer else loss,
        "mode": mode,
        "batch": batch,
        "block": block,
        "vocab": cfg.vocab_size,
        "padded_vocab": cfg.padded_vocab,
        "dropout": cfg.dropout,
        "ms_per_step": 1000 * dt,
        "tokens_per_s": tok_s,
        "flops_per_token": flops,  # the same shapes: the same FLOPs
        "params": None if peer else sum(p.numel() for p in model.parameters()),
        "peak_gb": peak,
    }


def sdpa_backend(name: str):
    """That SDPA backend alone while a row compiles and runs, or SDPA's own choice ('default')."""
    only = SDPA.get(name)
    return sdpa_kernel([only]) if only else contextlib.nullcontext()


def _row_in_turn(i: int, kwargs: dict, sdpa: str, sync: tuple) -> None:
    """A --jobs worker: build, compile and warm up row i beside the others, wait until all are
    ready (so no compiling runs while a row is timed), time it when the rows before it are
    done, and put (i, row or error) on the queue."""
    barrier, cond, turn, out = sync
    state = {"gated": False, "done": False}

    def gate() -> None:
        state["gated"] = True
        barrier.wait()
        with cond:
            cond.wait_for(lambda: turn.value == i)

    def done() -> None:
        state["done"] = True
        with cond:
            turn.value = i + 1
            cond.notify_all()

    try:
        with sdpa_backend(sdpa):
            out.put((i, measure(**kwargs, gate=gate, done=done)))
    except Exception as e:  # the others still pass the barrier and get their turn
        out.put((i, e))
        try:
            if not state["gated"]:
                gate()
        finally:
            if not state["done"]:
                done()


def measure_side_by_side(specs: list[tuple[dict, str]], jobs: int) -> list[dict | Exception]:
    """Rows `jobs` at a time, each in its own process: they compile at once and are timed one
    after another, in order. A process that dies is that row's error; the next row goes on."""
    ctx = torch.multiprocessing.get_context("spawn")
    # the rows' compiles share the cores: each its share of Inductor's compile workers
    os.environ.setdefault("TORCHINDUCTOR_COMPILE_THREADS", str(max(1, os.cpu_count() // jobs)))
    results: list = [None] * len(specs)
    for lo in range(0, len(specs), jobs):
        chunk = range(lo, min(lo + jobs, len(specs)))
        cond, turn, out = ctx.Condition(), ctx.Value("i", lo), ctx.Queue()
        barrier = ctx.Barrier(len(chunk))
        sync = (barrier, cond, turn, out)
        procs = {i: ctx.Process(target=_row_in_turn, args=(i, *specs[i], sync)) for i in chunk}
        for proc in procs.values():
            proc.start()
        pending = set(chunk)
        while pending:
            try:
                i, r = out.get(timeout=5)
                results[i] = r
                pending.discard(i)
            except queue.Empty:
                for i in sorted(pending):
                    if procs[i].exitcode is not None:  # died without a word
                        results[i] = RuntimeError(f"process exited {procs[i].exitcode}")
                        pending.discard(i)
                        barrier.abort()  # the others stop waiting for it
                        with cond:
                            if turn.value == i:
                                turn.value = i + 1
                                cond.notify_all()
        for proc in procs.values():
            proc.join()
    return results


def measure_rows(specs: list[tuple[dict, str]], jobs: int):
    """The row (or the exception it raised) of each (measure's arguments, SDPA backend), in
    order: one after another here, or `jobs` side by side (measure_side_by_side)."""
    if jobs > 1:
        yield from measure_side_by_side(specs, jobs)
        return
    for kwargs, sdpa in specs:
        try:
            with sdpa_backend(sdpa):
                row = measure(**kwargs)
        except Exception as e:  # e.g. a peer that cannot run this mode
            row = e
        yield row


def summary(rows: list[dict]) -> None:
    """The closing table: for each preset and mode, our first row, every other row's tokens/s
    over it, the matmul floor, and the parameters each row adds to the first."""
    print("\nsummary (ratio: tokens/s over our first row of the preset and mode)")
    print(f"{'preset':<15} {'mode':<18} {'model':<26} {'tokens/s':>12} {'ratio':>6} "
          f"{'ms/step':>8} {'floor ms':>8} {'peak GB':>8} {'+params':>9}")  # fmt: skip
    firsts = {}
    for r in rows:
        key = (r["preset"], r["mode"])
        if "error" in r:
            print(f"{key[0]:<15} {key[1]:<18} {r['model']:<26} failed")
            continue
        first = firsts.setdefault(key, r)
        who = r["model"] if r["model"] != "attnstreams" else f"ours {r['stream']} ({r['loss']})"
        who += f" {r['sdpa']}" if r.get("sdpa", "default") != "default" else ""
        peak = f"{r['peak_gb']:.2f}" if r["peak_gb"] is not None else "-"
        ours = r["params"] is not None and first["params"] is not None
        added = f"{r['params'] - first['params']:+,}" if ours else "-"
        print(f"{key[0]:<15} {key[1]:<18} {who:<26} {r['tokens_per_s']:>12,.0f} "
              f"{r['tokens_per_s'] / first['tokens_per_s']:>6.3f} {r['ms_per_step']:>8.2f} "
              f"{r['floor_ms']:>8.2f} {peak:>8} {added:>9}")  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--presets", default="tinystories-8m,gpt2-124m")
    p.add_argument(
        "--streams",
        default="none,value,value-first,value-learned",
        help="comma list of arms (a stream, a residual, or STREAM+RESIDUAL); arm:fused or "
        "arm:compiled fixes that row's loss",
    )
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
    p.add_argument(
        "--peers", default="", help=f"comma list of peer models timed beside ours: {PEERS}"
    )
    p.add_argument(
        "--authors-dir", type=Path, default=AUTHORS_DIR, help="the authors' small-LM code"
    )
    p.add_argument(
        "--peak-tflops", type=float, default=790.0, help="bf16 matmul rate measured on an H100"
    )
    p.add_argument("--losses", default="fused", help="fused and/or compiled (see above)")
    p.add_argument("--sdpa", default="default", help=f"comma list: default, {', '.join(SDPA)}")
    p.add_argument(
        "--again", action="store_true", help="time each preset and mode's first row again last"
    )
    p.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="rows compiled side by side, each in its own process, then timed one at a time "
        "(ours only; a 124M row needs its memory K times)",
    )
    p.add_argument("--json")
    args = p.parse_args()
    if args.jobs < 1 or (args.jobs > 1 and (args.profile or args.peers)):
        p.error("--jobs takes K >= 1, and K > 1 neither --profile nor --peers")
    bad = set(args.modes.split(",")) - set(MODES)
    if bad:
        p.error(f"unknown mode(s) {', '.join(sorted(bad))}; choose from {', '.join(MODES)}")
    device = torch.device(args.device)
    name = device_name(device)
    print(f"device: {name}, torch {torch.__version__}")
    head = ("preset", "stream", "mode", "tokens/s", "ms/step", "floor ms", "MFU", "peak GB")
    print(
        f"{head[0]:<15} {head[1]:<14} {head[2]:<8} {head[3]:>12} {head[4]:>9} {head[5]:>8} "
        f"{head[6]:>6} {head[7]:>8} vs first"
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
    peers = [x for x in args.peers.split(",") if x]
    losses = [x for x in args.losses.split(",") if x]
    if set(losses) - {"fused", "compiled"}:
        p.error("--losses takes fused and/or compiled")
    backends = [x for x in args.sdpa.split(",") if x]
    if set(backends) - {"default", *SDPA}:
        p.error(f"--sdpa takes default and/or {', '.join(SDPA)}")
    if set(peers) - set(PEERS):
        p.error(f"unknown peer(s) {', '.join(sorted(set(peers) - set(PEERS)))}; choose {PEERS}")
    rows = []

    def save(rows: list[dict]) -> None:
        if args.json:
            write_text_atomic(Path(args.json), json.dumps(rows, indent=1))

    for pre in args.presets.split(","):
        b0, t0 = DEFAULT_SHAPES.get(pre, (8, 256))
        batch, block = args.batch or b0, args.block or t0
        for mode in args.modes.split(","):
            base = None  # the first row of a preset and mode: what "vs first" divides by
            ours = [  # "stream:loss" names one row; a plain stream gets a row per --losses
                (st, None, lo, sd)
                for spec in args.streams.split(",")
                for st, _, one in [spec.partition(":")]
                for lo in ([one] if one else losses)
                for sd in backends
            ]
            peer_rows = [("none", x, None, "default") for x in peers]
            todo = ours + peer_rows + (ours[:1] if args.again else [])

            specs = [
                (dict(name=pre, stream=stream, mode=mode, device=device, batch=batch,
                      block=block, steps=args.steps, warmup=args.warmup, over=over,
                      profile=args.profile and j == 0, peer=peer, authors_dir=args.authors_dir,
                      loss=loss or "fused"), sdpa)
                for j, (stream, peer, loss, sdpa) in enumerate(todo)
            ]  # fmt: skip
            measured = measure_rows(specs, args.jobs)
            for (stream, peer, loss, sdpa), r in zip(todo, measured, strict=True):
                if isinstance(r, Exception):  # say so, go on
                    e = r
                    print(f"{pre:<15} {peer or stream:<14} {mode:<8} failed: {e!r:.200}")
                    who = peer or stream
                    err = {"preset": pre, "stream": who, "mode": mode, "error": repr(e)[:500]}
                    rows.append(err | {"model": peer or "attnstreams"})
                    save(rows)
                    continue
                r["sdpa"] = sdpa
                mfu = r["flops_per_token"] * r["tokens_per_s"] / (args.peak_tflops * 1e12)
                r["mfu"] = mfu if device.type == "cuda" else None
                # the matmul floor: the step's FLOPs at the bf16 rate
                r["floor_ms"] = (
                    1e3 * r["flops_per_token"] * batch * block / (args.peak_tflops * 1e12)
                )
                base = base or r
                r["time_vs_none"] = r["ms_per_step"] / base["ms_per_step"]
                rows.append(r)
                save(rows)  # each row as it comes: a job cut short keeps what it measured
                mfu_s = f"{100 * mfu:.1f}%" if r["mfu"] is not None else "-"
                peak = f"{r['peak_gb']:.2f}" if r["peak_gb"] is not None else "-"
                label = r["stream"] if peer else f"{stream} ({loss})"
                label += f" {sdpa}" if sdpa != "default" else ""
                print(
                    f"{pre:<15} {label:<14} {mode:<8} {r['tokens_per_s']:>12,.0f} "
                    f"{r['ms_per_step']:>9.2f} {r['floor_ms']:>8.2f} {mfu_s:>6} {peak:>8} "
                    f"{r['time_vs_none']:>8.3f}"
                )
    summary(rows)
    print("authors' 8M (fp32, H100): 82 ms a step at 64 x 256, ~200,000 tokens/s, 19.2 GB peak")


if __name__ == "__main__":
    main()
