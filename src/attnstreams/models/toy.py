"""ToyICL (paper.md section 3): the two-layer attention model of experiment 1."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

from attnstreams.run.config import ConfigError, check_choice, check_range
from attnstreams.streams import StreamAttention, StreamConfig, check_stream_layers

TOY_INITS = ("jax", "jax-legacy", "independent")
TOY_BIASES = ("scalar", "vector", "none")


@dataclass(frozen=True)
class ToyICLConfig:
    """paper.md section 3: two single-head attention layers, no LayerNorm, no output projection.

    Defaults are the authors' model (`transformer_v2_v_residuals_V1.py`): attention weights
    N(0, attn_std^2) with attn_std = 1/sqrt(D), D = 85 the content dimension; ReLU layers
    He-normal with ONE scalar bias each, N(0, 1/width); a read-out without bias, N(0, 1/width).
    `init` reproduces how their code draws the MLP keys: `random.split(key, mlp_layers + 1)` is
    indexed up to 2 * mlp_layers - 1, and JAX clamps indices past the end, so several tensors
    share the last key. Under JAX >= 0.5 (threefry "partitionable", the default) tensors drawn
    from one key share a prefix: with 3 layers, bias 2 = bias 3 = W3[0, 0] / sqrt(2) and the
    read-out is W3[:32] / sqrt(2) ("jax"). Older JAX, as in 2024, gives only bias 2 = bias 3
    ("jax-legacy"). "independent" draws every tensor on its own key (not the authors')."""

    d_in: int = 150
    n_labels: int = 32
    n_attn_layers: int = 2
    mlp_layers: int = 3
    mlp_width: int = 150
    scaled: bool = False  # 1/sqrt(d) in the attention; off in the authors' code
    attn_std: float = 85**-0.5  # attention init std: 1/sqrt(content dim) in the authors' code
    mlp_bias: str = "scalar"  # scalar: one per layer (the authors'); vector: nn.Linear's
    readout_bias: bool = False  # the authors' read-out has none
    init: str = "jax"  # see the class docstring
    stream: StreamConfig = field(default_factory=StreamConfig)

    def __post_init__(self) -> None:
        for name in ("d_in", "n_labels", "n_attn_layers", "mlp_width"):
            check_range(name, getattr(self, name), lo=1)
        check_range("mlp_layers", self.mlp_layers, lo=0)
        check_range("attn_std", self.attn_std, lo=0.0, lo_open=True)
        check_choice("mlp_bias", self.mlp_bias, TOY_BIASES)
        check_choice("init", self.init, TOY_INITS)
        object.__setattr__(self, "stream", StreamConfig.parse(self.stream))
        check_stream_layers(self.stream, self.n_attn_layers)
        if self.stream.source == "embed":
            raise ConfigError("value-embed needs token ids; the toy model reads vectors")


class Dense(nn.Module):
    """y = x W^T + b with b one scalar per layer (the authors' ReLU layers), a vector, or none."""

    def __init__(self, d_in: int, d_out: int, bias: str = "vector") -> None:
        super().__init__()
        check_choice("bias", bias, TOY_BIASES)
        self.weight = nn.Parameter(torch.empty(d_out, d_in))
        shape = {"scalar": (1,), "vector": (d_out,)}.get(bias)
        self.bias = nn.Parameter(torch.zeros(shape)) if shape else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x W^T + b."""
        return F.linear(x, self.weight, self.bias)


class ToyICL(nn.Module):
    """x <- x + attn(x) twice, then three ReLU layers and a linear read-out of the last token."""

    def __init__(self, cfg: ToyICLConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d = cfg.d_in
        self.attn = nn.ModuleList(
            StreamAttention(
                d, 1, i, stream=cfg.stream, out_proj=False, scale=None if cfg.scaled else 1.0
            )
            for i in range(cfg.n_attn_layers)
        )
        widths = [d] + [cfg.mlp_width] * cfg.mlp_layers
        self.mlp = nn.ModuleList(
            Dense(a, b, cfg.mlp_bias) for a, b in zip(widths[:-1], widths[1:], strict=True)
        )
        self.readout = Dense(widths[-1], cfg.n_labels, "vector" if cfg.readout_bias else "none")
        self._init_weights()

    @torch.no_grad()
    def _init_weights(self) -> None:
        cfg = self.cfg
        for layer in self.attn:  # a shared projection's rows are drawn and dropped
            full = torch.randn(3 * cfg.d_in, cfg.d_in) * cfg.attn_std
            layer.qkv.weight.copy_(full[layer.full_rows()])
        # The MLP and read-out as the authors draw them: tensor j of the list
        # [W1, b1, W2, b2, ..., read-out] takes key min(j, m) (m = mlp_layers) except the
        # read-out, which takes key m; see the class docstring for what shared keys give.
        m = cfg.mlp_layers
        tensors = [
            (t, math.sqrt(2 / t.size(1)), 2 * k)
            for k, t in enumerate(layer.weight for layer in self.mlp)
        ]
        tensors += [
            (layer.bias, layer.weight.size(1) ** -0.5, 2 * k + 1)
            for k, layer in enumerate(self.mlp)
            if layer.bias is not None
        ]
        tensors.append((self.readout.weight, self.readout.weight.size(1) ** -0.5, m))
        if self.readout.bias is not None:
            nn.init.zeros_(self.readout.bias)
        if cfg.init == "independent":
            for t, std, _ in tensors:
                nn.init.normal_(t, 0.0, std)
            return
        # Every tensor draws its buffer in turn (setdefault evaluates it), and the first draw for
        # a key (or key and shape) is the one kept: the draws are part of a seed's stream.
        by_key: dict[tuple, torch.Tensor] = {}
        for t, std, j in tensors:
            key = min(j, m)
            if cfg.init == "jax":  # one stream per key; every tensor reads its prefix
                need = max(u.numel() for u, _, i in tensors if min(i, m) == key)
                z = by_key.setdefault((key,), torch.randn(need))
                t.copy_(z[: t.numel()].view_as(t) * std)
            else:  # jax-legacy: the same key and shape give the same tensor
                z = by_key.setdefault((key, t.shape), torch.randn(t.shape))
                t.copy_(z * std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, d_in) -> logits (B, n_labels) for the last token."""
        carry = None
        for layer in self.attn:
            a, carry = layer(x, carry)
            x = x + a
        h = x[:, -1]
        for layer in self.mlp:
            h = F.relu(layer(h))
        return self.readout(h)
