"""The residual attention stream (paper.md section 2) and its cross-layer relatives: the one
place where they happen.

Layer n mixes a per-head projection handed on to it into its own before attending:

    out_n = softmax(Q_n K_n^T / sqrt(d)) (V_n + V_{n-1})            kind=value, source=previous

A stream is named kind[-source][-mix] (`StreamConfig.parse`); every name below works wherever
a stream does (GPT, ToyICL, the stacked toy grid, `lm train`, `icl grid`, the benchmarks):

    value, key, query     V_n + V_{n-1} (K, Q): the paper
    value-learned         w0 V_n + w1 V_{n-1}, a learned scalar pair a layer, from (1, 1)
    value-first           0.5 V_n + 0.5 V_1: ResFormer's fixed value residual (Zhou et al. 2024)
    value-first-learned   learned pair from (0.5, 0.5): ResFormer's learned variant
    value-first-gated     (1 - g) V_n + g V_1, g = sigmoid(x W + b) a gate per token and
                          (key/value) head from the layer input: x-transformers' learned value
                          residual mix; W = 0, b = 0 at the start (g = 0.5); value-gated: the
                          same gate on the previous layer's values
    value-shared          V_1 in place of V_n after layer 1, which then has no value projection:
                          SVFormer (single-value transformer)
    value-embed           w0 V_n + w1_h E[token], E a token value-embedding table (modded-
                          nanogpt), w1 per (key/value) head from 0.5, w0 from 1; tables at the
                          first and last layers (`embed_layers`)
    key-smear             k_t + a_h k_{t-1} in every layer: each position's key mixes in the
                          key one position back (raw keys, before RoPE; position 0 as it is),
                          a_h per (key/value) head from 0, so it starts as `none`. The smeared
                          key (Olsson et al. 2022; modded-nanogpt's key offset), the known
                          shortcut to induction heads: the control for the value stream.
                          key-smear-learned: one a a layer; key-smear-sum: a = 1, fixed

`-sum`, `-half`, `-learned`, `-learned-per-head` and `-gated` combine with any kind and
source but `smear`, which is for keys only and takes `-learned-per-head` (its default),
`-learned` or `-sum`. A model has one stream: key-smear does not combine with the others. The
tensor handed on is always a layer's own, un-mixed projection (layer 1's for source `first`),
so no stream is cumulative.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from attnstreams.run.config import ConfigError, check_choice

KINDS = ("none", "value", "key", "query")
SOURCES = ("previous", "first", "embed", "smear")
MIXES = ("sum", "half", "learned", "learned-per-head", "gated", "shared")
DEFAULT_MIX = {
    "previous": "sum",
    "first": "half",
    "embed": "learned-per-head",
    "smear": "learned-per-head",
}
SMEAR_MIXES = ("learned-per-head", "learned", "sum")  # a per head, a per layer (from 0), a = 1
# Where a learned mix (weight on own, weight on the handed-on projection) starts.
LEARNED_INIT = {"previous": (1.0, 1.0), "first": (0.5, 0.5), "embed": (1.0, 0.5)}
EMBED_TABLES = 3  # modded-nanogpt: 3 value-embedding tables, at the first and last 3 layers


@dataclass(frozen=True)
class StreamConfig:
    """Which projection is streamed, from where, and how it is mixed in (`parse` reads a
    name such as 'value-first-gated')."""

    kind: str = "none"  # which projection is streamed
    # previous: layer n-1 (the paper); first: layer 1 (ResFormer); embed: a token table;
    # smear: the same layer's key one position back (keys only)
    source: str = "previous"
    # sum: unit weights; half: 0.5/0.5; learned: a scalar pair per layer; learned-per-head;
    # gated: a sigmoid gate per token and head; shared: the source replaces the layer's own.
    # A smear's weight on its own key is 1; on the one before, a learned a (from 0) or 1 (sum).
    # None: the source's default (sum for previous, half for first, learned-per-head for embed
    # and smear).
    mix: str | None = None

    def __post_init__(self) -> None:
        check_choice("stream", self.kind, KINDS)
        check_choice("stream source", self.source, SOURCES)
        if self.mix is None:
            object.__setattr__(self, "mix", DEFAULT_MIX[self.source])
        check_choice("stream mix", self.mix, MIXES)
        if self.mix == "shared" and self.source == "previous":
            object.__setattr__(self, "source", "first")  # a shared projection is layer 1's
        if self.source == "embed" and (self.kind != "value" or self.mix == "shared"):
            raise ConfigError(
                "a value embedding mixes into values only, with sum, half, learned or gated "
                f"weights (got kind {self.kind!r}, mix {self.mix!r})"
            )
        if self.smear and (self.kind != "key" or self.mix not in SMEAR_MIXES):
            raise ConfigError(
                f"a smear is for keys only, with mix {', '.join(SMEAR_MIXES)} (got kind "
                f"{self.kind!r}, mix {self.mix!r})"
            )

    @classmethod
    def parse(cls, spec: str | StreamConfig) -> StreamConfig:
        """'value', 'value-first' (0.5/0.5), 'value-first-sum', 'value-learned',
        'value-first-gated', 'value-shared', 'value-embed', 'key-first-learned-per-head',
        'key-smear', 'none'."""
        if isinstance(spec, StreamConfig):
            return spec
        if not isinstance(spec, str):
            raise ConfigError(f"stream must be a name like 'value' or 'value-first', got {spec!r}")
        if "+" in spec:
            raise ConfigError(f"a model has one stream; streams do not combine (got {spec!r})")
        kind, _, rest = spec.strip().partition("-")
        if kind == "none" and rest:
            raise ConfigError(f"stream 'none' takes no source or mix, got {spec!r}")
        source = "previous"
        for s in SOURCES:  # one source at most: 'value-first-embed' is not a value-embed
            if rest == s or rest.startswith(s + "-"):
                source, rest = s, rest[len(s) + 1 :]
                break
        if kind not in KINDS:
            raise ConfigError(f"unknown stream {spec!r}: kind must be one of {', '.join(KINDS)}")
        return cls(kind, source, rest or None)

    @property
    def name(self) -> str:
        """Canonical short name, the inverse of parse()."""
        if self.kind == "none":
            return "none"
        if self.mix == "shared":
            return f"{self.kind}-shared"
        parts = [self.kind]
        if self.source != "previous":
            parts.append(self.source)
        if self.mix != DEFAULT_MIX[self.source]:
            parts.append(self.mix)
        return "-".join(parts)

    @property
    def active(self) -> bool:
        """Whether there is a stream at all (kind is not 'none')."""
        return self.kind != "none"

    @property
    def learned(self) -> bool:
        """Whether the mix has learned weights (a pair a layer or a pair a head; a smear's
        coefficient a layer or a head)."""
        return self.active and self.mix.startswith("learned")

    @property
    def smear(self) -> bool:
        """Whether this is the smeared key: each layer mixes in its own key one position back,
        nothing is handed from layer to layer."""
        return self.source == "smear"

    def receives(self, layer_idx: int) -> bool:
        """Whether layer `layer_idx` (0-based) mixes in a projection handed on to it: every
        layer after the first, and, for a value embedding, the first too; none for a smear."""
        return self.active and not self.smear and (layer_idx > 0 or self.source == "embed")


def check_stream_layers(stream: StreamConfig, n_layer: int) -> None:
    """A stream needs a layer to hand on and one to receive (a smear, one layer)."""
    if stream.active and not stream.smear and n_layer < 2:
        raise ConfigError(
            f"stream {stream.name!r} needs at least 2 attention layers, got {n_layer}"
        )


def learned_mix(w: torch.Tensor, own: torch.Tensor, carry: torch.Tensor) -> torch.Tensor:
    """w[0] own + w[1] carry: w a pair (2,) or a pair per head (2, heads, 1, 1) over
    (B, heads, T, head_dim)."""
    w = w.to(own.dtype)
    return w[0] * own + w[1] * carry


def embed_layers(n_layer: int, layers: tuple[int, ...] | None = None) -> list[int | None]:
    """The value-embedding table each layer reads (None: none). Default, as modded-nanogpt
    places them: k = min(3, n_layer // 2) tables, table i at layer i and at layer
    n_layer - k + i. `layers`: those layers instead, a table each."""
    table: list[int | None] = [None] * n_layer
    if layers is not None:
        for t, i in enumerate(layers):
            table[i] = t
        return table
    k = min(EMBED_TABLES, n_layer // 2)
    for i in range(k):
        table[i] = table[n_layer - k + i] = i
    return table


class KVCache:
    """Keys and values of one layer for incremental decoding (post-mix, as attended to); for a
    smeared key also the last raw key, the k_{t-1} of the next call's first position."""

    def __init__(self) -> None:
        self.k: torch.Tensor | None = None
        self.v: torch.Tensor | None = None
        self.raw_key: torch.Tensor | None = None

    def __len__(self) -> int:
        return 0 if self.k is None else self.k.size(2)

    def append(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Add this call's keys and values; returns all of them so far."""
        self.k = k if self.k is None else torch.cat([self.k, k], dim=2)
        self.v = v if self.v is None else torch.cat([self.v, v], dim=2)
        return self.k, self.v


def attention_mask(
    Tq: int,
    Tk: int,
    device: torch.device | str,
    causal: bool = True,
    key_padding_mask: torch.Tensor | None = None,
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


def rope(x: torch.Tensor, positions: torch.Tensor, theta: float) -> torch.Tensor:
    """Rotary position embedding (Su et al. 2021) of (B, H, T, hd) at `positions` (T,), the
    half-split layout of Llama in Hugging Face transformers. Linear and per position, so it
    commutes with every stream mix across layers: the carry is the un-rotated projection. A
    smear mixes positions, so there the order matters: it smears the raw keys, and the
    smeared key is rotated at its own position."""
    hd = x.size(-1)
    f = torch.float64 if x.dtype == torch.float64 else torch.float32
    inv = theta ** -(torch.arange(0, hd, 2, device=x.device, dtype=f) / hd)
    ang = positions.to(f)[:, None] * inv  # (T, hd/2)
    cos, sin = ang.cos().repeat(1, 2).to(x.dtype), ang.sin().repeat(1, 2).to(x.dtype)
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos + torch.cat([-x2, x1], dim=-1) * sin


class Gate(nn.Linear):
    """A stream gate's projection: zero-initialised (g = sigmoid(0) = 0.5) without drawing
    random numbers, and left alone by model initialisers, so a seed's other weights are the
    same with and without it. Made on the default device, as any layer is."""

    def __init__(self, dim: int, heads: int) -> None:
        nn.Module.__init__(self)
        self.in_features, self.out_features = dim, heads
        self.weight = nn.Parameter(torch.zeros(heads, dim))
        self.bias = nn.Parameter(torch.zeros(heads))


class StreamAttention(nn.Module):
    """Causal multi-head (GQA-capable) attention through SDPA, holding the residual stream.

    forward(x, carry) returns (y, carry_out): `carry` is the streamed projection handed on by an
    earlier layer (or, for `value-embed`, this layer's value embedding of the tokens), shaped
    (B, heads of that projection, T, head_dim); it is position-wise, so a KV cache that stores
    post-mix keys and values decodes exactly like the full forward. Layer 0 (`layer_idx=0`)
    receives nothing (but a value embedding), so it has no mix parameters even with a learned
    stream; it only hands its projection on. A smeared key (`key-smear`) takes no carry: every
    layer mixes its own raw key one position back into each key, before RoPE (`smear`).
    causal=False and key_padding_mask make it an encoder layer or one for padded batches (still
    through SDPA); rope_theta rotates queries and keys (RoPE) at their positions, counted on
    from the cache's length.
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
        rope_theta: float | None = None,
    ) -> None:
        super().__init__()
        stream = StreamConfig.parse(stream)  # a name ("value-learned") or a StreamConfig
        n_kv_head = n_kv_head or n_head
        if n_head % n_kv_head:
            raise ConfigError(f"n_head ({n_head}) must be a multiple of n_kv_head ({n_kv_head})")
        if head_dim is None and dim % n_head:  # dim // n_head would drop the remainder
            raise ConfigError(
                f"width {dim} is not divisible by {n_head} heads: give head_dim, or a width "
                f"that {n_head} heads split evenly"
            )
        head_dim = head_dim or dim // n_head
        if not out_proj and n_head * head_dim != dim:
            raise ConfigError("without an output projection, n_head * head_dim must equal dim")
        self.n_head, self.n_kv_head, self.head_dim = n_head, n_kv_head, head_dim
        self.layer_idx, self.stream, self.scale, self.dropout = layer_idx, stream, scale, dropout
        self.causal, self.rope_theta = causal, rope_theta
        self.receives = stream.receives(layer_idx)
        self.heads = {"query": n_head, "key": n_kv_head, "value": n_kv_head}
        # The projections this layer computes, in qkv's row order; a shared one comes from
        # layer 1 instead (SVFormer: no value projection after the first layer).
        self.projections = [
            p
            for p in self.heads
            if not (p == stream.kind and stream.mix == "shared" and self.receives)
        ]
        # Drawn at full width either way, so a seed's later random draws do not shift.
        # Initialisers that redraw it do the same: `qkv.full_width` rows, then `qkv.rows` kept.
        full_width = sum(self.heads.values()) * head_dim
        self.qkv = nn.Linear(dim, full_width, bias=bias)
        if len(self.projections) < 3:
            rows = self.qkv.rows = self.full_rows()
            self.qkv.full_width = full_width
            self.qkv.weight = nn.Parameter(self.qkv.weight.detach()[rows].clone())
            if bias:
                self.qkv.bias = nn.Parameter(self.qkv.bias.detach()[rows].clone())
            self.qkv.out_features = len(rows)
        self.proj = nn.Linear(n_head * head_dim, dim, bias=bias) if out_proj else nn.Identity()
        self.resid_drop = nn.Dropout(dropout)
        # Learned mix: (weight on own projection, weight on the stream); gated: a gate per token
        # and head from the layer input, zero-initialised (g = 0.5). None in a layer that
        # receives nothing.
        self.stream_mix: nn.Parameter | None = None
        self.stream_gate: Gate | None = None
        if self.receives and stream.learned:
            shape = (2,) if stream.mix == "learned" else (2, self.heads[stream.kind], 1, 1)
            w = torch.empty(shape)
            w[0], w[1] = LEARNED_INIT[stream.source]
            self.stream_mix = nn.Parameter(w)
        if self.receives and stream.mix == "gated":
            self.stream_gate = Gate(dim, self.heads[stream.kind])
        # A learned smear's coefficient a, per key/value head or one a layer: zero-initialised,
        # so the layer starts as the baseline (and draws no random numbers).
        self.stream_smear: nn.Parameter | None = None
        if stream.smear and stream.learned:
            shape = (n_kv_head, 1, 1) if stream.mix == "learned-per-head" else (1,)
            self.stream_smear = nn.Parameter(torch.zeros(shape))

    def full_rows(self) -> torch.Tensor:
        """Indices, in the full (query, key, value) row layout, of the rows qkv holds."""
        rows, start = [], 0
        for p, h in self.heads.items():
            if p in self.projections:
                rows.append(torch.arange(start, start + h * self.head_dim, device="cpu"))
            start += h * self.head_dim
        return torch.cat(rows)

    keep_attention = False  # set True: the next forward keeps its probabilities in attn_probs
    attn_probs: torch.Tensor | None = None

    def mix(
        self, own: torch.Tensor | None, carry: torch.Tensor, gate: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Where the stream happens: the layer's own projection and the one handed on, both
        (B, heads, T, head_dim); gate: a gated mix's logits, (B, T, heads)."""
        if own is not None and carry.shape != own.shape:
            raise ValueError(
                f"layer {self.layer_idx}: the {self.stream.kind} handed on has shape "
                f"{tuple(carry.shape)} but this layer's is {tuple(own.shape)} (streamed layers "
                "need the same heads and head size)"
            )
        mix = self.stream.mix
        if mix == "shared":
            return carry
        if mix == "sum":
            return own + carry
        if mix == "half":
            return 0.5 * (own + carry)
        if mix == "gated":  # lerp, as x-transformers: (1 - g) own + g carry
            # In the projections' own (B, T, heads, head_dim) layout, so that the backward
            # writes qkv's gradient in place rather than through a transpose.
            g = torch.sigmoid(gate).unsqueeze(-1).to(own.dtype)
            o, c = own.transpose(1, 2), carry.transpose(1, 2)
            return (o + g * (c - o)).transpose(1, 2)
        return learned_mix(self.stream_mix, own, carry)

    def smear(
        self, k: torch.Tensor, cache: KVCache | None, key_padding_mask: torch.Tensor | None
    ) -> torch.Tensor:
        """k_t + a k_{t-1} over raw keys (B, kv heads, T, head_dim): k_{t-1} of this call's
        first position is the cache's last raw key, or zero at position 0; a padding key is
        not smeared in (it is never attended to either)."""
        before = None if cache is None else cache.raw_key
        if cache is not None:
            cache.raw_key = k[:, :, -1:]
        if before is None:  # position 0: nothing before it
            shifted = F.pad(k[:, :, :-1], (0, 0, 1, 0))
        else:
            shifted = torch.cat([before, k[:, :, :-1]], dim=2)
        if key_padding_mask is not None:  # (B, keys): whether each key's predecessor is a token
            was_token = F.pad(key_padding_mask.to(k.dtype), (1, 0))[:, -k.size(2) - 1 : -1]
            shifted = shifted * was_token[:, None, :, None]
        a = 1.0 if self.stream_smear is None else self.stream_smear.to(k.dtype)
        return k + a * shifted

    def project(
        self, x: torch.Tensor | tuple[torch.Tensor, ...]
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """qkv(x), and a gated stream's gate logits (B, T, heads): the gate's rows ride on
        qkv's matmul (one launch, and x read once), its parameters kept apart. x may be three
        inputs (query, key, value): each goes through its own rows of qkv, and the gate reads
        the input of its stream's projection."""
        if isinstance(x, tuple):
            inputs = dict(zip(self.heads, x, strict=True))
            sizes = [self.heads[p] * self.head_dim for p in self.projections]
            weights = self.qkv.weight.split(sizes)
            biases = [None] * len(sizes) if self.qkv.bias is None else self.qkv.bias.split(sizes)
            out = [
                F.linear(inputs[p], w, b)
                for p, w, b in zip(self.projections, weights, biases, strict=True)
            ]
            gate = None if self.stream_gate is None else self.stream_gate(inputs[self.stream.kind])
            return torch.cat(out, dim=-1), gate
        if self.stream_gate is None:
            return self.qkv(x), None
        gw, gb = self.stream_gate.weight, self.stream_gate.bias
        bias = None if self.qkv.bias is None else torch.cat([self.qkv.bias, gb])
        out = F.linear(x, torch.cat([self.qkv.weight, gw]), bias)
        qkv, gate = out.split([self.qkv.out_features, gw.size(0)], dim=-1)
        return qkv, (gate if bias is not None else gate + gb)

    def forward(
        self,
        x: torch.Tensor | tuple[torch.Tensor, torch.Tensor, torch.Tensor],
        carry: torch.Tensor | None = None,
        cache: KVCache | None = None,
        key_padding_mask: torch.Tensor | None = None,
        value_add: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x: the layer input, or separate query, key and value inputs (a tuple of three, all
        (B, T, dim)). key_padding_mask: (B, keys) booleans, True for real tokens (padding is
        never attended to); keys are the cache's and this call's. A stream layer after the
        first needs the carry the layer before handed on; a value-embedding layer, its
        embedding. value_add: (B, T, n_kv_head * head_dim), added to this layer's own value
        projection before a value stream mixes it (a muddvr residual's V way); the sum is
        what the layer hands on."""
        inputs = x
        x = x[0] if isinstance(x, tuple) else x  # shape and device
        B, T, _ = x.shape
        if self.receives and carry is None:
            raise ValueError(
                f"layer {self.layer_idx} has a {self.stream.name} stream but got no carry: pass "
                + (
                    "this layer's value embedding of the tokens"
                    if self.stream.source == "embed"
                    else "the carry returned by the layer before (or use stream 'none')"
                )
            )
        if carry is not None and not self.receives:
            raise ValueError(
                f"layer {self.layer_idx} ({self.stream.name}) receives no carry: only layers "
                "after the first (layer_idx > 0) of a stream mix one in"
            )
        hd = self.head_dim
        sizes = [self.heads[p] * hd for p in self.projections]
        qkv, gate = self.project(inputs)
        parts = {
            p: t.view(B, T, self.heads[p], hd).transpose(1, 2)
            for p, t in zip(self.projections, qkv.split(sizes, dim=-1), strict=True)
        }
        if value_add is not None:
            if "value" not in parts:
                raise ValueError(f"layer {self.layer_idx} has no value projection to add to")
            v = parts["value"]
            add = value_add.unflatten(-1, (self.n_kv_head, hd)).transpose(1, 2)
            parts["value"] = v + add.to(v.dtype)
        carry_out = None
        if self.stream.smear:  # before RoPE: the raw key one position back
            parts["key"] = self.smear(parts["key"], cache, key_padding_mask)
        elif self.stream.active:
            kind = self.stream.kind
            own = parts.get(kind)
            if self.receives:
                parts[kind] = self.mix(own, carry, gate)
            if self.stream.source == "previous":
                carry_out = own
            elif self.stream.source == "first":  # layer 1 hands its own on to every later layer
                carry_out = carry if self.receives else own
        q, k, v = parts["query"], parts["key"], parts["value"]
        if self.rope_theta is not None:
            start = len(cache) if cache is not None else 0
            pos = torch.arange(start, start + T, device=x.device)
            q, k = rope(q, pos, self.rope_theta), rope(k, pos, self.rope_theta)
        if cache is not None:
            k, v = cache.append(k, v)
        H, Hkv = self.n_head, self.n_kv_head
        if Hkv != H:
            k = k.repeat_interleave(H // Hkv, dim=1)
            v = v.repeat_interleave(H // Hkv, dim=1)
        Tq, Tk = q.size(2), k.size(2)
        causal = self.causal if Tq > 1 else False  # a bool under dynamic shapes (a branch)
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
