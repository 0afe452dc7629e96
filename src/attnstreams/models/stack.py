"""Many models of one architecture trained as one batched computation.

A small model leaves most of a GPU idle, and N processes sharing it take turns. `ModelStack`
stacks the parameters of N models of one architecture on a leading model axis and runs the
models' own forward over that axis with `torch.func.vmap`: every matmul becomes one batched
matmul for all N, and one optimizer step updates them all. Any architecture and stream the
module supports is stacked as it is, with no second copy of its forward.

Each model keeps its own module, whose parameters become views into the stacked tensors: an
optimizer step on the stack is seen by the models at once, and evaluation, checkpoints and
sampling use the ordinary modules without a copy. Writing into a model's parameters (loading
a state dict) writes into the stack.
"""

from __future__ import annotations

import copy

import torch
import torch.nn as nn
from torch.func import functional_call, vmap

from attnstreams.run.config import ConfigError


def _key(name: str) -> str:
    """A parameter name as a registered name (which may not hold dots)."""
    return name.replace(".", "__")


class ModelStack(nn.Module):
    """The parameters of `models` stacked (N, ...): `stacked(name)` by the models' own name.

    forward(*args) calls every model on its slice of each argument (all stacked on dim 0) and
    returns the outputs stacked likewise. Dropout draws each model's own masks (vmap's
    randomness="different"); they are not the masks the model would draw alone, so a stack with
    dropout matches separate runs in distribution, not bit for bit."""

    def __init__(self, models: list[nn.Module]) -> None:
        super().__init__()
        if not models:
            raise ConfigError("a stack needs at least one model")
        first = models[0]
        shapes = {n: (p.shape, p.dtype, p.device) for n, p in first.named_parameters()}
        for m in models[1:]:
            if (
                type(m) is not type(first)
                or {n: (p.shape, p.dtype, p.device) for n, p in m.named_parameters()} != shapes
            ):
                raise ConfigError("stacked models must have one architecture (same parameters)")
        if any(True for _ in first.buffers()):
            raise ConfigError("stacked models may not hold buffers")
        self.size = len(models)
        self.names = list(shapes)  # the models' parameter names, tied ones once
        # All names a model's forward reads, tied ones under each of their names.
        self.all_names = {n: n for n in self.names}
        ids = {id(p): n for n, p in first.named_parameters()}
        for n, p in first.named_parameters(remove_duplicate=False):
            self.all_names[n] = ids[id(p)]
        for n in self.names:
            own = [dict(m.named_parameters())[n] for m in models]
            stacked = nn.Parameter(torch.stack([p.detach() for p in own]))
            self.register_parameter(_key(n), stacked)
            for i, p in enumerate(own):  # the model's parameter becomes a view of the stack
                p.data = stacked.data[i]
        self.models = models  # a plain list: not submodules (their parameters are views)
        # The architecture without storage, for functional_call (ties re-made by name).
        self._base = [copy.deepcopy(first).to("meta")]
        for m in self._base[0].modules():  # vmap cannot batch a nested compile region
            if getattr(m, "compile_once", False):
                m.compile_once = False

    def stacked(self, name: str) -> nn.Parameter:
        """The stacked (N, ...) parameter of the models' parameter `name`."""
        return getattr(self, _key(name))

    def params(self) -> dict[str, torch.Tensor]:
        """Every name the forward reads -> its stacked tensor (a tied weight under each name)."""
        return {n: self.stacked(kept) for n, kept in self.all_names.items()}

    def train(self, mode: bool = True) -> ModelStack:
        super().train(mode)
        self._base[0].train(mode)
        for m in self.models:
            m.train(mode)
        return self

    def call(self):
        """The vmapped function f(params, *args) of the models' forward: what torch.compile may
        wrap. Call it as f(self.params(), *args)."""
        base = self._base[0]

        def one(params: dict[str, torch.Tensor], *args):
            return functional_call(base, params, args, strict=True)

        return vmap(one, randomness="different")

    def forward(self, *args):
        return self.call()(self.params(), *args)

    def each(self, *args) -> torch.Tensor:
        """Every model on the same arguments (evaluation: one batch for all), the first output
        of each (a model may return a tuple, vmap only tensors) stacked (N, ...)."""
        base = self._base[0]

        def one(params: dict[str, torch.Tensor]):
            out = functional_call(base, params, args, strict=True)
            return out[0] if isinstance(out, tuple) else out

        return vmap(one, randomness="different")(self.params())

    @torch.no_grad()
    def clip_grad_norms_(self, max_norm: float) -> torch.Tensor:
        """Each model's gradient clipped to `max_norm` as torch.nn.utils.clip_grad_norm_ clips
        one model's (the 2-norm over all its parameters); returns the (N,) norms before."""
        grads = [p.grad for p in self.parameters() if p.grad is not None]
        if not grads:
            return torch.zeros(self.size)
        # per tensor, then over tensors: clip_grad_norm_'s order of sums
        norms = torch.stack([g.flatten(1).norm(dim=1) for g in grads]).norm(dim=0)
        coef = (max_norm / (norms + 1e-6)).clamp(max=1.0)
        for g in grads:
            g.mul_(coef.to(g.dtype).view(-1, *[1] * (g.dim() - 1)))
        return norms
