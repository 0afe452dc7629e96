"""The kernels torch.compile generates for one training step (forward and backward) of a small
model, by residual method: Inductor's own fused kernels and its calls to external ones (cuBLAS
or oneDNN matmuls). A residual method's extra time at 8M is memory traffic between kernels, so
fewer kernels for the same model is the change a GPU timing then confirms.

    python benchmarks/kernel_count.py --residuals plain,hc,dhc,mhc,attnres --layers 2

Under bf16 autocast on the CPU by default (as a CUDA step runs); `--device cuda` counts Triton
kernels instead.
"""

from __future__ import annotations

import argparse
import re
from collections import Counter

import torch
from torch._inductor.utils import run_and_get_code

from attnstreams.models.gpt import GPT, preset
from attnstreams.models.residual import ResidualConfig
from attnstreams.run.config import ConfigError


def count(residual: str, layers: int, device: str, autocast: bool) -> tuple[int, Counter]:
    """Fused kernels and external calls in the generated code of one forward and backward."""
    torch.manual_seed(0)
    torch.compiler.reset()
    cfg = preset(
        "tinystories-8m", residual=residual, vocab_size=512, n_layer=layers, n_embd=64, n_head=4,
        block_size=32, dropout=0.0,
    )  # fmt: skip
    model = torch.compile(GPT(cfg).to(device))
    x = torch.randint(512, (2, 32), device=device)

    def step() -> None:
        with torch.autocast(device, dtype=torch.bfloat16, enabled=autocast):
            _, loss = model(x, x)
        loss.backward()

    _, codes = run_and_get_code(step)
    code = "\n".join(codes)
    fused = len(re.findall(r"^(?:cpp|triton)_\w+ = ", code, re.M))
    return fused, Counter(re.findall(r"extern_kernels\.(\w+)\(", code))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--residuals", default="plain,hc,dhc,mhc,attnres")
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--no-autocast", action="store_true")
    args = p.parse_args()
    try:  # a wrong name: one line before any compiling
        [ResidualConfig.parse(r) for r in args.residuals.split(",")]
    except ConfigError as e:
        p.error(str(e))
    print(f"torch {torch.__version__}, {args.device}, {args.layers} layers, "
          f"autocast {'off' if args.no_autocast else 'bf16'}")  # fmt: skip
    print("| residual | fused kernels | external calls | of which |")
    print("|---|---|---|---|")
    for res in args.residuals.split(","):
        fused, ext = count(res, args.layers, args.device, not args.no_autocast)
        which = ", ".join(f"{k} {v}" for k, v in sorted(ext.items()))
        print(f"| {res} | {fused} | {sum(ext.values())} | {which} |")


if __name__ == "__main__":
    main()
