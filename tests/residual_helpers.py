"""What the residual tests (test_residual.py, test_hyper.py, ...) share: float64 models, token
batches, and the stack check every residual method passes (DDP and FSDP:
parallel_variants.check_parallel)."""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch

from attnstreams.models.gpt import GPT, preset
from attnstreams.models.stack import ModelStack


def gpt(name: str, residual: str, stream: str = "none", seed: int = 0, **overrides) -> GPT:
    """A float64 preset GPT (the CPU's loss path) from `seed`, some fields replaced."""
    torch.manual_seed(seed)
    model = GPT(preset(name, residual=residual, stream=stream, **overrides)).double()
    model.fused_loss = False
    return model


def tokens(shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 512, shape, generator=torch.Generator().manual_seed(seed))


def perturb(model: GPT, seed: int = 1, params=None) -> None:
    """`params` (by default the residual module's) off their start: start + 0.3 N(0, 1)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.residual.parameters() if params is None else params:
            p.add_(0.3 * torch.randn(p.shape, generator=g, dtype=p.dtype))


def embed(model: GPT, idx: torch.Tensor) -> torch.Tensor:
    """What the first sublayer reads: token (and position) embeddings."""
    x = model.wte(idx)
    if model.wpe is not None:
        x = x + model.wpe(torch.arange(idx.size(1)))
    return x


def sublayers(model: GPT):
    """(k, f) for every sublayer in order: f maps its input to its update."""
    for i, block in enumerate(model.blocks):
        yield 2 * i, lambda h, b=block: b.attend(h)[0]
        yield 2 * i + 1, lambda h, b=block: b.feed(h)


def check_stack(name: str, residual: str, perturb: Callable[[GPT, int], None], **overrides) -> None:
    """2 models (their residual weights perturbed) in a ModelStack: each one's loss and every
    gradient as alone."""
    alone = [gpt(name, residual, seed=s, **overrides) for s in range(2)]
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


def check_cache(model: GPT) -> None:
    """A prefix, a chunk of 2, then token by token through the KV cache: the full forward."""
    idx = tokens((2, 12))
    with torch.no_grad():
        full, _ = model(idx)
        cache = model.new_cache()
        steps = [model(idx[:, :4], cache=cache)[0], model(idx[:, 4:6], cache=cache)[0]]
        steps += [model(idx[:, t : t + 1], cache=cache)[0] for t in range(6, 12)]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, rtol=0, atol=1e-10)


def check_compiled(model: GPT) -> None:
    """torch.compile (aot_eager: the traced graph, no Inductor code) gives eager's loss and
    every gradient."""
    twin = copy.deepcopy(model)
    x, y = tokens((2, 16), 1), tokens((2, 16), 2)
    _, loss = model(x, y)
    loss.backward()
    _, compiled_loss = torch.compile(twin, backend="aot_eager", fullgraph=True)(x, y)
    compiled_loss.backward()
    torch.testing.assert_close(compiled_loss, loss, rtol=0, atol=1e-12)
    grads = dict(twin.named_parameters())
    for n, p in model.named_parameters():
        torch.testing.assert_close(grads[n].grad, p.grad, rtol=1e-10, atol=1e-12)


def residual_grads(model: GPT, params=None) -> dict[str, torch.Tensor]:
    """The gradients of one loss: of `params` (name, parameter) pairs, by default the residual
    module's."""
    _, loss = model(tokens((2, 16), 1), tokens((2, 16), 2))
    loss.backward()
    return {n: p.grad for n, p in (params or model.residual.named_parameters())}


def autocast_final_norm_input(model: GPT) -> tuple[torch.Tensor, torch.Tensor]:
    """A forward under CPU bf16 autocast: its loss and what the final norm read."""
    seen = []
    handle = model.ln_f.register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    x = tokens((2, 16))
    try:
        with torch.autocast("cpu", torch.bfloat16):
            _, loss = model(x, x)
    finally:
        handle.remove()
    return loss, seen[0]
