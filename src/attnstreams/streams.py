"""The residual attention stream (paper.md section 2): the one place where it happens.

Layer n adds a per-head projection handed on by an earlier layer to its own before attending:

    out_n = softmax(Q_n K_n^T / sqrt(d)) (V_n + V_{n-1})            kind=value, source=previous

`source="first"` hands layer 1's projection to every later layer (ResFormer's value residual);
`mix` chooses unit weights (`sum`, the paper: no new parameters), fixed halves (`half`:
0.5 own + 0.5 handed on, ResFormer's fixed variant and the default for `first`, so `value-first`
computes ResFormer; `value-first-sum` keeps the unit sum) or learned weights. The tensor handed
on is always a layer's own, un-mixed projection, so the stream is not cumulative.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import ConfigError, check_choice

KINDS = ("none", "value", "key", "query")
SOURCES = ("previous", "first")
MIXES = ("sum", "half", "learned", "learned-per-head")
DEFAULT_MIX = {"previous": "sum", "first": "half"}


@dataclass(frozen=True)
class StreamConfig:
    kind: str = "none"  # which projection is streamed
    source: str = "previous"  # previous: layer n-1 (the paper); first: layer 1 (ResFormer)
    # sum: unit weights; half: 0.5/0.5; learned: a scalar pair per layer; learned-per-head.
    # None: the source's default (sum for previous, half for first).
    mix: str | None = None

    def __post_init__(self) -> None:
        check_choice("stream", self.kind, KINDS)
        check_choice("stream source", self.source, SOURCES)
        if self.mix is None:
            object.__setattr__(self, "mix", DEFAULT_MIX[self.source])
        check_choice("stream mix", self.mix, MIXES)

    @classmethod
    def parse(cls, spec: str | StreamConfig) -> StreamConfig:
        """'value', 'value-first' (0.5/0.5), 'value-first-sum', 'value-learned',
        'key-first-learned-per-head', 'none'."""
        if isinstance(spec, StreamConfig):
            return spec
        if not isinstance(spec, str):
            raise ConfigError(f"stream must be a name like 'value' or 'value-first', got {spec!r}")
        kind, _, rest = spec.strip().partition("-")
        if kind == "none" and rest:
            raise ConfigError(f"stream 'none' takes no source or mix, got {spec!r}")
        source = "previous"
        for s in SOURCES:
            if rest == s or rest.startswith(s + "-"):
                source, rest = s, rest[len(s) :].lstrip("-")
        if kind not in KINDS:
            raise ConfigError(f"unknown stream {spec!r}: kind must be one of {', '.join(KINDS)}")
        return cls(kind, source, rest or None)

    @property
    def name(self) -> str:
        """Canonical short name, the inverse of parse()."""
        if self.kind == "none":
            return "none"
        parts = [self.kind]
        if self.source != "previous":
            parts.append(self.source)
        if self.mix != DEFAULT_MIX[self.source]:
            parts.append(self.mix)
        return "-".join(parts)

    @property
    def active(self) -> bool:
        return self.kind != "none"

    @property
    def learned(self) -> bool:
        return self.active and self.mix.startswith("learned")


class KVCache:
    """Keys and values of one layer for incremental decoding (post-mix, as attended to)."""

    def __init__(self) -> None:
        self.k: torch.Tensor | None = None
        self.v: torch.Tensor | None = None

    def __len__(self) -> int:
        return 0 if self.k is None else self.k.size(2)

    def append(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.k = k if self.k is None else torch.cat([self.k, k], dim=2)
        self.v = v if self.v is None else torch.cat([self.v, v], dim=2)
        return self.k, self.v


def attention_mask(
    Tq: int, Tk: int, device, causal: bool = True, key_padding_mask: torch.Tensor | None = None
) -> torch.Tensor | None:
    """The boolean mask SDPA attends with (True: attend), queries at the last Tq of Tk
    positions; None where SDPA's own is_causal (Tq == Tk) or full attention does it."""
    tri = torch.ones(Tq, Tk, dtype=torch.bool, device=device).tril(Tk - Tq) if causal else None
    if key_padding_mask is None:
        return tri if causal and Tq != Tk else None
    pad = key_padding_mask[:, None, None, :].to(torch.bool)  # (B, 1, 1, Tk), True: a token
    return pad & tri if causal else pad


def attention_probs(
    q: torch.Tensor, k: torch.Tensor, scale: float | None, mask: torch.Tensor | None = None,
    causal: bool = True,
) -> torch.Tensor:  # fmt: skip
    """Softmax attention weights (B, H, Tq, Tk) in float32, as SDPA computes them with `mask`
    (from attention_mask; None: causal, or full when causal is False)."""
    Tq, Tk = q.size(-2), k.size(-2)
    scale = q.size(-1) ** -0.5 if scale is None else scale
    scores = (q.float() @ k.float().transpose(-1, -2)) * scale
    if mask is None and causal:
        mask = torch.ones(Tq, Tk, dtype=torch.bool, device=q.device).tril(Tk - Tq)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return scores.softmax(-1)


class StreamAttention(nn.Module):
    """Causal multi-head (GQA-capable) attention through SDPA, holding the residual stream.

    forward(x, carry) returns (y, carry_out): `carry` is the streamed projection handed on by an
    earlier layer, shaped (B, heads of that projection, T, head_dim); it is position-wise, so a
    KV cache that stores post-mix keys and values decodes exactly like the full forward.
    Layer 0 (`layer_idx=0`) receives nothing, so it has no mix parameters even with a learned
    stream; it only hands its projection on. causal=False and key_padding_mask make it an
    encoder layer or one for padded batches (still through SDPA).
    """

    def __init__(
        self,
        dim: int,
        n_head: int,
        layer_idx: int,
        stream: StreamConfig | str = StreamConfig(),
        n_kv_head: int | None = None,
        head_dim: int | None = None,
        bias: bool = False,
        out_proj: bool = True,
        scale: float | None = None,
        dropout: float = 0.0,
        causal: bool = True,
    ) -> None:
        super().__init__()
        stream = StreamConfig.parse(stream)  # a name ("value-learned") or a StreamConfig
        n_kv_head = n_kv_head or n_head
        if n_head % n_kv_head:
            raise ConfigError(f"n_head ({n_head}) must be a multiple of n_kv_head ({n_kv_head})")
        head_dim = head_dim or dim // n_head
        if not out_proj and n_head * head_dim != dim:
            raise ConfigError("without an output projection, n_head * head_dim must equal dim")
        self.n_head, self.n_kv_head, self.head_dim = n_head, n_kv_head, head_dim
        self.layer_idx, self.stream, self.scale, self.dropout = layer_idx, stream, scale, dropout
        self.causal = causal
        self.qkv = nn.Linear(dim, (n_head + 2 * n_kv_head) * head_dim, bias=bias)
        self.proj = nn.Linear(n_head * head_dim, dim, bias=bias) if out_proj else nn.Identity()
        self.resid_drop = nn.Dropout(dropout)
        # Learned mix: (weight on own projection, weight on the stream); none in `sum` mode and
        # none in layer 1, which receives nothing.
        self.stream_mix: nn.Parameter | None = None
        if stream.learned and layer_idx > 0:
            heads = n_head if stream.kind == "query" else n_kv_head
            init = (1.0, 1.0) if stream.source == "previous" else (0.5, 0.5)
            shape = (2,) if stream.mix == "learned" else (2, heads, 1, 1)
            w = torch.empty(shape)
            w[0], w[1] = init
            self.stream_mix = nn.Parameter(w)

    keep_attention = False  # set True: the next forward keeps its probabilities in attn_probs
    attn_probs: torch.Tensor | None = None

    def mix(self, own: torch.Tensor, carry: torch.Tensor) -> torch.Tensor:
        """Where the stream happens: own projection plus the one handed on."""
        if carry.shape != own.shape:
            raise ValueError(
                f"layer {self.layer_idx}: the {self.stream.kind} handed on has shape "
                f"{tuple(carry.shape)} but this layer's is {tuple(own.shape)} (streamed layers "
                "need the same heads and head size)"
            )
        if self.stream_mix is None:
            return 0.5 * (own + carry) if self.stream.mix == "half" else own + carry
        w = self.stream_mix.to(own.dtype)
        return w[0] * own + w[1] * carry

    def forward(
        self,
        x: torch.Tensor,
        carry: torch.Tensor | None = None,
        cache: KVCache | None = None,
        key_padding_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """key_padding_mask: (B, keys) booleans, True for real tokens (padding is never attended
        to); keys are the cache's and this call's. A stream layer after the first needs the
        carry the layer before handed on."""
        B, T, _ = x.shape
        if self.stream.active and self.layer_idx > 0 and carry is None:
            raise ValueError(
                f"layer {self.layer_idx} has a {self.stream.name} stream but got no carry: pass "
                "the carry returned by the layer before (or use stream 'none')"
            )
        H, Hkv, hd = self.n_head, self.n_kv_head, self.head_dim
        q, k, v = self.qkv(x).split([H * hd, Hkv * hd, Hkv * hd], dim=-1)
        parts = {
            "query": q.view(B, T, H, hd).transpose(1, 2),
            "key": k.view(B, T, Hkv, hd).transpose(1, 2),
            "value": v.view(B, T, Hkv, hd).transpose(1, 2),
        }
        carry_out = None
        if self.stream.active:
            own = parts[self.stream.kind]
            if carry is not None:
                parts[self.stream.kind] = self.mix(own, carry)
            first_hands_on = self.stream.source == "first" and carry is not None
            carry_out = carry if first_hands_on else own
        q, k, v = parts["query"], parts["key"], parts["value"]
        if cache is not None:
            k, v = cache.append(k, v)
        if Hkv != H:
            k = k.repeat_interleave(H // Hkv, dim=1)
            v = v.repeat_interleave(H // Hkv, dim=1)
        Tq, Tk = q.size(2), k.size(2)
        causal = self.causal and Tq > 1
        mask = attention_mask(Tq, Tk, x.device, causal, key_padding_mask)
        if self.keep_attention:  # analysis only (prefix matching): what SDPA attends with
            self.attn_probs = attention_probs(q, k, self.scale, mask, causal)
        y = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=mask,
            is_causal=mask is None and causal,
            dropout_p=self.dropout if self.training else 0.0,
            scale=self.scale,
        )
        y = y.transpose(1, 2).reshape(B, T, H * hd)
        return self.resid_drop(self.proj(y)), carry_out
