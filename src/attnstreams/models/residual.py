"""How `GPT`'s blocks pass the residual stream on: the plain sum, or DenseFormer's
depth-weighted average (Pagliardini et al. 2024, arXiv 2402.02622).

GPT's block loop talks to a residual module through four calls, so that other ways of wiring
blocks together can sit beside these two: `start(x)` takes the embedding output and returns
a state; `read(state, i)` is block i's input; `write(state, i, out)` takes block i's output
(its input plus attention and MLP) and returns the new state; `end(state)` is what the final
norm reads. Everything is per position, so cached decoding needs no extra state.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from attnstreams.run.config import ConfigError, check_choice, check_int

RESIDUALS = ("plain", "denseformer")


@dataclass(frozen=True)
class ResidualConfig:
    """The stream between blocks: `plain` (x_{i+1} = block_i(x_i)) or `denseformer`, with
    dilation k (a DWA mixes every k-th earlier output) and period p (a DWA after every p-th
    block); `parse` reads names such as 'denseformer-d2-p2'."""

    kind: str = "plain"
    dilation: int = 1
    period: int = 1

    def __post_init__(self) -> None:
        check_choice("residual", self.kind, RESIDUALS)
        check_int("residual dilation", self.dilation, lo=1)
        check_int("residual period", self.period, lo=1)
        if self.kind == "plain" and (self.dilation, self.period) != (1, 1):
            raise ConfigError("the plain residual takes no dilation or period")

    @classmethod
    def parse(cls, spec: str | ResidualConfig) -> ResidualConfig:
        """'plain', 'denseformer', 'denseformer-d2' (dilation 2), 'denseformer-p2' (period 2),
        'denseformer-d2-p2'."""
        if isinstance(spec, ResidualConfig):
            return spec
        if not isinstance(spec, str):
            raise ConfigError(f"residual must be a name like 'denseformer', got {spec!r}")
        kind, *options = spec.strip().split("-")
        if kind not in RESIDUALS:
            raise ConfigError(
                f"unknown residual {spec!r}: one of plain, denseformer, denseformer-dK-pP"
            )
        found: dict[str, int] = {}
        for opt in options:
            key, digits = opt[:1], opt[1:]
            number = digits.isascii() and digits.isdigit()
            if kind == "plain" or key not in ("d", "p") or key in found or not number:
                raise ConfigError(
                    f"unknown residual {spec!r}: one of plain, denseformer, denseformer-dK-pP"
                )
            found[key] = int(digits)
        return cls(kind, found.get("d", 1), found.get("p", 1))

    @property
    def name(self) -> str:
        """Canonical short name, the inverse of parse()."""
        parts = [self.kind]
        if self.dilation != 1:
            parts.append(f"d{self.dilation}")
        if self.period != 1:
            parts.append(f"p{self.period}")
        return "-".join(parts)

    @property
    def active(self) -> bool:
        """Whether the stream differs from the plain residual sum."""
        return self.kind != "plain"


def check_residual_layers(cfg: ResidualConfig, n_layer: int) -> None:
    """A DenseFormer needs at least one DWA: period at most n_layer."""
    if cfg.active and cfg.period > n_layer:
        raise ConfigError(
            f"residual {cfg.name!r} has period {cfg.period}: no DWA in {n_layer} layers"
        )


def residual_module(cfg: ResidualConfig, n_layer: int) -> nn.Module:
    """The module GPT's block loop reads and writes through."""
    if cfg.kind == "denseformer":
        return DepthWeightedAverage(n_layer, cfg.dilation, cfg.period)
    return PlainResidual()


class PlainResidual(nn.Module):
    """Each block reads what the one before wrote (no parameters: checkpoints unchanged)."""

    def start(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def read(self, state: torch.Tensor, i: int) -> torch.Tensor:
        return state

    def write(self, state: torch.Tensor, i: int, out: torch.Tensor) -> torch.Tensor:
        return out

    def end(self, state: torch.Tensor) -> torch.Tensor:
        return state


@dataclass
class DWAState:
    """The outputs so far (0: the embedding, j: block j-1's) and the stream the next block
    reads."""

    outputs: list[torch.Tensor]
    x: torch.Tensor


class DepthWeightedAverage(nn.Module):
    """DenseFormer's DWA: after block i (0-based) with (i + 1) % period == 0, the stream passed
    on is sum_m alpha_{i,m} X_m over the outputs X_m with m = i + 1, i + 1 - k, ... >= 0
    (k the dilation; X_0 the embedding output, X_m block m-1's output before any DWA). After
    other blocks the block output is passed on as it is.

    `weights[str(i)]` holds alpha_i, oldest output first. It starts as (0, ..., 0, 1): the model
    starts as the plain transformer, and no random number is drawn (a seed gives the other
    weights of the plain model). The sum is written term by term so that autograd keeps no
    stacked copy of the outputs (it keeps the outputs themselves, which it keeps anyway)."""

    def __init__(self, n_layer: int, dilation: int = 1, period: int = 1) -> None:
        super().__init__()
        self.dilation, self.period = dilation, period
        self.weights = nn.ParameterDict()
        for i in range(n_layer):
            if (i + 1) % period == 0:
                w = torch.zeros(len(self.sources(i)))
                w[-1] = 1.0
                self.weights[str(i)] = nn.Parameter(w)

    def sources(self, i: int) -> range:
        """The outputs DWA i mixes: indices i + 1, i + 1 - k, ... >= 0, oldest first."""
        return range((i + 1) % self.dilation, i + 2, self.dilation)

    def start(self, x: torch.Tensor) -> DWAState:
        return DWAState([x], x)

    def read(self, state: DWAState, i: int) -> torch.Tensor:
        return state.x

    def write(self, state: DWAState, i: int, out: torch.Tensor) -> DWAState:
        outputs = [*state.outputs, out]
        if str(i) not in self.weights:
            return DWAState(outputs, out)
        w = self.weights[str(i)].to(out.dtype)  # under autocast: the stream's dtype
        x = None
        for m, j in enumerate(self.sources(i)):
            x = w[m] * outputs[j] if x is None else x + w[m] * outputs[j]
        return DWAState(outputs, x)

    def end(self, state: DWAState) -> torch.Tensor:
        return state.x
