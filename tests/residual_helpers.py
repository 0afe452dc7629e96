"""What the residual tests (test_residual.py, test_hyper.py, ...) share: float64 models, token
batches, and the stack check every residual method passes (DDP and FSDP:
parallel_variants.check_parallel)."""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch

from attnstreams.models.gpt import GPT, preset
from attnstreams.models.stack import ModelStack


def gpt(name: str, residual: str, stream: str = "none", seed: int = 0) -> GPT:
    """A float64 preset GPT (the CPU's loss path) from `seed`."""
    torch.manual_seed(seed)
    model = GPT(preset(name, residual=residual, stream=stream)).double()
    model.fused_loss = False
    return model


def tokens(shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 512, shape, generator=torch.Generator().manual_seed(seed))


def check_stack(name: str, residual: str, perturb: Callable[[GPT, int], None]) -> None:
    """2 models (their residual weights perturbed) in a ModelStack: each one's loss and every
    gradient as alone."""
    alone = [gpt(name, residual, seed=s) for s in range(2)]
    for i, m in enumerate(alone):
        perturb(m, 10 + i)
    stacked = ModelStack(copy.deepcopy(alone))
    x, y = tokens((2, 2, 16), 1), tokens((2, 2, 16), 2)
    _, loss = stacked(x, y)
    loss.sum().backward()
    for i, m in enumerate(alone):
        _, own = m(x[i], y[i])
        own.backward()
        torch.testing.assert_close(loss[i], own, rtol=1e-12, atol=1e-12)
        for n, p in m.named_parameters():
            torch.testing.assert_close(stacked.stacked(n).grad[i], p.grad, rtol=1e-10, atol=1e-12)
