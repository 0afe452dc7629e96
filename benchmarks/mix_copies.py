"""Forward and backward of the hyper-connection mixing, sum_s w[t, s] X[..., s, :], by
formulation, compiled: the residual cost rows found static hyper-connections (`hc`, one weight
matrix for every position) slower under the broadcast product `mix_copies` than under the
einsum they had before, while the dynamic form (`dhc`, weights per position) got faster.
This times the one operation alone, at a tinystories-8m step's shape, for both weight shapes;
hc now uses `product-expanded`, under which its whole step timed cheaper than dhc's
(BENCHMARKS.md, the residual cost rows' third job).

    python benchmarks/mix_copies.py --device cuda

Formulations: `product` (mix_copies, the stream's dtype kept under autocast),
`product-expanded` (the same with static weights expanded to every position), `einsum` (a
matmul over all positions, under autocast: bf16 in, bf16 out) and `einsum-fp32` (the matmul
with autocast off: the stream's dtype kept).
"""

from __future__ import annotations

import argparse
import time

import torch

from attnstreams.models.residual import mix_copies

FORMS = ("product", "product-expanded", "einsum", "einsum-fp32")


def mix(form: str, w: torch.Tensor, X: torch.Tensor) -> torch.Tensor:
    """(..., 1 + n, d) from weights (1 + n, n) or (..., 1 + n, n) and copies X (..., n, d)."""
    if form == "product":
        return mix_copies(w, X)
    if form == "product-expanded":  # static weights given per position: their gradient is
        # summed over the channels at each position first, then over the positions
        return mix_copies(w.expand(*X.shape[:-2], *w.shape[-2:]), X)
    if form == "einsum":
        return torch.einsum("...ts,...sd->...td", w, X)
    with torch.autocast(X.device.type, enabled=False):
        return torch.einsum("...ts,...sd->...td", w.to(X.dtype), X)


def time_form(
    form: str, static: bool, shape: tuple, device: str, steps: int, compile: bool = True
) -> float:
    """Milliseconds for one forward and backward (bf16 autocast, fp32 copies)."""
    B, T, n, d = shape
    torch.manual_seed(0)
    X = torch.randn(B, T, n, d, device=device, requires_grad=True)
    w = torch.randn(*(() if static else (B, T)), 1 + n, n, device=device, requires_grad=True)
    g = torch.randn(B, T, 1 + n, d, device=device)
    torch.compiler.reset()

    def f(w: torch.Tensor, X: torch.Tensor) -> torch.Tensor:
        return (mix(form, w, X).float() * g).sum()

    f = torch.compile(f) if compile else f

    def step() -> None:
        with torch.autocast(device, dtype=torch.bfloat16):
            loss = f(w, X)
        loss.backward()
        w.grad = X.grad = None

    for _ in range(3):
        step()
    if device == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    if device == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / steps * 1e3


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--shape", default="64,256,4,256", help="B,T,n,d (default: an 8M step, n 4)")
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--no-compile", action="store_true", help="eager (a quick check of the script)")
    a = p.parse_args(argv)
    try:
        shape = tuple(int(s) for s in a.shape.split(","))
        if len(shape) != 4 or min(shape) < 1 or a.steps < 1:
            raise ValueError
    except ValueError:
        p.error(f"--shape: four positive integers B,T,n,d (got {a.shape!r}); --steps: 1 or more")
    if a.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA device here")
    how = "eager" if a.no_compile else "compiled"
    print(f"shape {shape}, {a.device}, {a.steps} steps, {how}, bf16 autocast")
    print("| weights | formulation | ms (forward + backward) |\n|---|---|---|")
    for static in (True, False):
        for form in FORMS:
            ms = time_form(form, static, shape, a.device, a.steps, not a.no_compile)
            print(f"| {'static' if static else 'per position'} | {form} | {ms:.3f} |")


if __name__ == "__main__":
    main()
