"""`GPT`, the decoder LM of experiment 2 (paper.md sections 4-5): GPT-2's block or the modern
one, and their presets.

Like `ToyICL` (toy.py) it threads the residual stream through its attention layers: each layer
returns the projection it hands on (`carry`) and the next layer takes it (streams.py). What
each sublayer (attention, MLP) reads and how its update is added is the residual module's
(residual.py): the plain sum, DenseFormer's depth-weighted average of the block outputs before
it, hyper-connections (n copies of the stream, mixed by learned weights), Attention
Residuals (a softmax over depth of the embedding and the earlier sublayer outputs), MUDD
(per-position mixtures of the block outputs so far as each block's query, key, value and
residual inputs), or its trimmed form muddvr (mixtures after the last two blocks added to the
stream and to the last block's values).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace

import torch
import torch.nn as nn
import torch.nn.functional as F

from attnstreams.models.fused_loss import linear_cross_entropy
from attnstreams.models.residual import (
    PLAIN,
    ResidualConfig,
    ValueAdd,
    check_residual_layers,
    residual_module,
)
from attnstreams.models.sampling import sample
from attnstreams.run.config import (
    ConfigError,
    check_bool,
    check_choice,
    check_int,
    check_range,
)
from attnstreams.streams import (
    Gate,
    KVCache,
    StreamAttention,
    StreamConfig,
    check_stream_layers,
    embed_layers,
)


def cross_entropy(
    logits: torch.Tensor, targets: torch.Tensor, vocab_size: int | None = None
) -> torch.Tensor:
    """Mean token cross-entropy in float32, targets of -100 ignored. Columns from vocab_size on
    (the embedding's padding rows) are not part of the distribution.

    Under torch.compile it is written as logsumexp - target logit, which Inductor fuses without
    keeping float32 log-probabilities for the backward pass: on one H100, gpt2-124m went from
    95.6 to 73.0 ms a step and from ~36 to ~26 GB (BENCHMARKS.md). There the padding columns
    are masked rather than sliced off, which keeps the rows 64-aligned (+2.3% tokens/s at
    gpt2-124m, +4.5% at 8M). Eager mode keeps F.cross_entropy, which measured faster there."""
    logits, targets = logits.flatten(0, -2), targets.flatten()
    if not torch.compiler.is_compiling():
        return F.cross_entropy(_fp32_or_wider(logits[:, :vocab_size]), targets, ignore_index=-100)
    return _cross_entropy_lse(logits, targets, vocab_size)


def _fp32_or_wider(t: torch.Tensor) -> torch.Tensor:
    """float32 for bf16/fp16 logits; float64 stays float64 (the equivalence tests use it)."""
    return t.to(torch.promote_types(t.dtype, torch.float32))


def _cross_entropy_lse(
    logits: torch.Tensor, targets: torch.Tensor, vocab_size: int | None = None
) -> torch.Tensor:
    if vocab_size is not None and vocab_size < logits.size(-1):
        pad = torch.arange(logits.size(-1), device=logits.device) >= vocab_size
        logits = logits.masked_fill(pad, float("-inf"))
    keep = targets != -100
    lse = torch.logsumexp(_fp32_or_wider(logits), -1)
    picked = _fp32_or_wider(logits.gather(1, targets.clamp_min(0).unsqueeze(1)).squeeze(1))
    return torch.where(keep, lse - picked, 0.0).sum() / keep.sum()


POSITIONS = ("learned", "rope")
NORMS = ("layernorm", "rmsnorm")
MLPS = ("gelu", "swiglu")


@dataclass(frozen=True)
class GPTConfig:
    """Defaults: GPT-2's block (learned positions, LayerNorm, GELU MLP, biases, tied
    embeddings). The modern block most current work uses is `pos="rope", norm="rmsnorm",
    mlp="swiglu", bias=False` with GQA (`n_kv_head`): the `modern-*` presets."""

    vocab_size: int = 50257
    block_size: int = 256
    n_layer: int = 8
    n_head: int = 16
    n_kv_head: int | None = None  # None: as many as n_head (no GQA)
    n_embd: int = 256
    dropout: float = 0.1
    bias: bool = True
    stream: StreamConfig = field(default_factory=StreamConfig)
    # How sublayers pass the residual stream on: plain, DenseFormer's depth-weighted average,
    # hyper-connections, Attention Residuals (residual.py); a name given here is parsed.
    residual: ResidualConfig = field(default_factory=ResidualConfig)
    # Embedding rows rounded up to a multiple of this: GPT-2's 50,257 logits a token make an
    # odd-width output matmul; 50,304 runs on faster kernels. Extra rows are never read and
    # their logits are sliced off, so the model is exactly the unpadded one.
    vocab_multiple: int = 64
    pos: str = "learned"  # learned absolute positions (GPT-2) or rotary (RoPE, Su et al. 2021)
    rope_theta: float = 10000.0
    norm: str = "layernorm"  # or rmsnorm (Zhang and Sennrich 2019)
    mlp: str = "gelu"  # GELU 4x (GPT-2) or SwiGLU (Shazeer 2020)
    mlp_hidden: int | None = None  # None: 4 n_embd (gelu); 8/3 n_embd to a multiple of 64 (swiglu)
    tie_embeddings: bool = True
    # value-embed: the layers (0-based) that read a value-embedding table, a table each;
    # None: modded-nanogpt's placement, 3 tables shared by the first and last 3 layers
    value_embed_layers: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        # The stream first: the checks below read it (a name given here is parsed).
        object.__setattr__(self, "stream", StreamConfig.parse(self.stream))
        object.__setattr__(self, "residual", ResidualConfig.parse(self.residual))
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd", "vocab_multiple"):
            check_int(name, getattr(self, name), lo=1)
        check_bool("bias", self.bias)
        check_bool("tie_embeddings", self.tie_embeddings)
        check_range("dropout", self.dropout, lo=0.0, hi=1.0)
        check_choice("pos", self.pos, POSITIONS)
        check_choice("norm", self.norm, NORMS)
        check_choice("mlp", self.mlp, MLPS)
        check_range("rope_theta", self.rope_theta, lo=0.0, lo_open=True)
        if self.mlp_hidden is not None:
            check_int("mlp_hidden", self.mlp_hidden, lo=1)
        if self.pos == "rope" and (self.n_embd // self.n_head) % 2:
            raise ConfigError("RoPE needs an even head size (n_embd / n_head)")
        if self.value_embed_layers is not None:
            layers = self.value_embed_layers
            if not isinstance(layers, (tuple, list)) or not all(
                isinstance(i, int) and not isinstance(i, bool) for i in layers
            ):
                raise ConfigError(f"value_embed_layers must be layer numbers, got {layers!r}")
            layers = tuple(layers)
            object.__setattr__(self, "value_embed_layers", layers)
            if self.stream.source != "embed":
                raise ConfigError("value_embed_layers is for a value-embed stream")
            if not layers or len(set(layers)) != len(layers):
                raise ConfigError(f"value_embed_layers must be distinct layers, got {layers}")
            for i in layers:
                check_range("value_embed_layers", i, lo=0, hi=self.n_layer - 1)
        if self.n_embd % self.n_head:
            raise ConfigError(f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")
        if self.n_kv_head is not None:
            check_int("n_kv_head", self.n_kv_head, lo=1)
            if self.n_head % self.n_kv_head:
                raise ConfigError(
                    f"n_head ({self.n_head}) must be a multiple of n_kv_head ({self.n_kv_head})"
                )
        check_stream_layers(self.stream, self.n_layer)
        check_residual_layers(self.residual, self.n_layer)
        if self.residual.kind == "muddvr":  # its V way (n_embd wide) joins the last values
            if self.n_kv_head not in (None, self.n_head):
                raise ConfigError(
                    "residual 'muddvr' adds an n_embd-wide mixture to the last block's values: "
                    f"it needs n_kv_head = n_head (no GQA), got {self.n_kv_head} of {self.n_head}"
                )
            if self.stream.kind == "value" and self.stream.mix == "shared":
                raise ConfigError(
                    "residual 'muddvr' adds to the last block's value projection, which stream "
                    "'value-shared' removes"
                )

    def to_dict(self) -> dict:
        """JSON-ready, the stream and the residual by their names."""
        d = asdict(self)
        d["stream"] = self.stream.name
        d["residual"] = self.residual.name
        return d

    @property
    def padded_vocab(self) -> int:
        """Embedding rows: the vocabulary rounded up to vocab_multiple."""
        return -(-self.vocab_size // self.vocab_multiple) * self.vocab_multiple

    @property
    def hidden(self) -> int:
        """MLP width: SwiGLU's 8/3 keeps the parameters of GELU's 4x (three matrices, not two)."""
        if self.mlp_hidden is not None:
            return self.mlp_hidden
        return 4 * self.n_embd if self.mlp == "gelu" else -(-8 * self.n_embd // 3 // 64) * 64


MODERN = dict(pos="rope", norm="rmsnorm", mlp="swiglu", bias=False)


PRESETS: dict[str, GPTConfig] = {
    # paper.md section 4: ~6.3M non-embedding parameters, 19.2M with the tied embedding.
    "tinystories-8m": GPTConfig(),
    "gpt2-124m": GPTConfig(block_size=1024, n_layer=12, n_head=12, n_embd=768, dropout=0.0),
    "gpt-1b": GPTConfig(block_size=2048, n_layer=24, n_head=16, n_embd=2048, dropout=0.0),
    # The modern block at the same sizes: RoPE, RMSNorm, SwiGLU, no biases, GQA (4 kv heads).
    "modern-8m": GPTConfig(n_kv_head=4, **MODERN),
    "modern-124m": GPTConfig(
        block_size=1024, n_layer=12, n_head=12, n_kv_head=4, n_embd=768, dropout=0.0, **MODERN
    ),
    "modern-1b": GPTConfig(
        block_size=2048, n_layer=24, n_head=16, n_kv_head=4, n_embd=2048, dropout=0.0, **MODERN
    ),
    # Small enough for CPU tests and the quick demo.
    "tiny": GPTConfig(vocab_size=512, block_size=128, n_layer=4, n_head=4, n_embd=64, dropout=0.0),
    "modern-tiny": GPTConfig(
        vocab_size=512,
        block_size=128,
        n_layer=4,
        n_head=4,
        n_kv_head=2,
        n_embd=64,
        dropout=0.0,
        **MODERN,
    ),
}


def preset(name: str, **overrides) -> GPTConfig:
    """A named configuration with some fields replaced (a stream by its name, say)."""
    check_choice("preset", name, PRESETS)
    if "stream" in overrides:
        overrides["stream"] = StreamConfig.parse(overrides["stream"])
    if "residual" in overrides:
        overrides["residual"] = ResidualConfig.parse(overrides["residual"])
    return replace(PRESETS[name], **overrides)


class MLP(nn.Module):
    """GELU (GPT-2) or SwiGLU: proj(silu(gate) * up), gate and up as one matmul `fc`."""

    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.swiglu = cfg.mlp == "swiglu"
        self.fc = nn.Linear(cfg.n_embd, (2 if self.swiglu else 1) * cfg.hidden, bias=cfg.bias)
        self.proj = nn.Linear(cfg.hidden, cfg.n_embd, bias=cfg.bias)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, n_embd) -> (B, T, n_embd)."""
        h = self.fc(x)
        if self.swiglu:
            gate, up = h.chunk(2, dim=-1)
            return self.drop(self.proj(F.silu(gate) * up))
        return self.drop(self.proj(F.gelu(h)))


def norm(cfg: GPTConfig) -> nn.Module:
    """The block's normalisation: LayerNorm (GPT-2) or RMSNorm."""
    if cfg.norm == "rmsnorm":
        return nn.RMSNorm(cfg.n_embd, eps=1e-5)
    return nn.LayerNorm(cfg.n_embd, bias=cfg.bias)


class Block(nn.Module):
    """Pre-norm transformer block."""

    def __init__(self, cfg: GPTConfig, layer_idx: int, stream: StreamConfig) -> None:
        super().__init__()
        self.ln1 = norm(cfg)
        self.attn = StreamAttention(
            cfg.n_embd,
            cfg.n_head,
            layer_idx,
            stream=stream,
            n_kv_head=cfg.n_kv_head,
            bias=cfg.bias,
            dropout=cfg.dropout,
            rope_theta=cfg.rope_theta if cfg.pos == "rope" else None,
        )
        self.ln2 = norm(cfg)
        self.mlp = MLP(cfg)
        # MUDD: after block 0 the key and value inputs are mixtures of their own, each through
        # its own pre-norm (ln1 serves the query's); block 0 reads the embedding, one input.
        if cfg.residual.kind == "mudd" and layer_idx > 0:
            self.ln1_k, self.ln1_v = norm(cfg), norm(cfg)

    def forward(
        self,
        state,
        carry: torch.Tensor | None = None,
        cache: KVCache | None = None,
        residual: nn.Module = PLAIN,
        i: int = 0,
    ):
        """The residual state through attention (sublayer 2i) and MLP (2i + 1), each read and
        written through `residual` (residual.py; plain: x + update, x the stream); the carry in
        and out (streams.py). One call a block: FSDP gathers the block's weights around it."""
        h, mix = residual.read(state, 2 * i)
        a, carry = self.attend(h, carry, cache)
        h, mix = residual.read(residual.write(mix, 2 * i, a), 2 * i + 1)
        return residual.write(mix, 2 * i + 1, self.feed(h)), carry

    def attend(
        self,
        x: torch.Tensor | tuple[torch.Tensor, torch.Tensor, torch.Tensor],
        carry: torch.Tensor | None = None,
        cache: KVCache | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Attention's update to the stream x (its branch output, no residual add); x may be
        the query, key and value inputs (MUDD), normed by ln1, ln1_k and ln1_v, or a ValueAdd
        (muddvr): the input, normed by ln1, and an addition to its value projection."""
        if isinstance(x, ValueAdd):
            return self.attn(self.ln1(x.x), carry, cache, value_add=x.value)
        if isinstance(x, tuple):
            xq, xk, xv = x
            return self.attn((self.ln1(xq), self.ln1_k(xk), self.ln1_v(xv)), carry, cache)
        return self.attn(self.ln1(x), carry, cache)

    def feed(self, x: torch.Tensor) -> torch.Tensor:
        """The MLP's update to the stream x."""
        return self.mlp(self.ln2(x))


class GPT(nn.Module):
    """Decoder LM: GPT-2's block by default (learned positions, GELU MLP 4x, tied embeddings,
    dropout), or the modern block (GPTConfig). A `value-embed` stream adds its token tables; a
    `denseformer` residual its DWA weights (`residual.weights`), a hyper-connection residual
    its mixing weights (`residual.*`), an `attnres` one its pseudo-queries and key norms, a
    `mudd` one its weight generators (`residual.*`) and key and value pre-norms (`ln1_k`,
    `ln1_v` in every block after the first), a `muddvr` one the two generators of its last
    blocks (`residual.*`)."""

    # Training on CUDA: the output layer and its loss as one autograd function that writes the
    # logits' gradient in the forward pass (fused_loss.py; the same function, fewer passes over
    # the logits). False: nn.Linear, then `cross_entropy` (as on the CPU, and without grad).
    fused_loss: bool = True

    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.wte = nn.Embedding(cfg.padded_vocab, cfg.n_embd)
        self.wpe = nn.Embedding(cfg.block_size, cfg.n_embd) if cfg.pos == "learned" else None
        self.drop = nn.Dropout(cfg.dropout)
        # value-embed: the table each layer reads; a layer without one has no stream
        embed = cfg.stream.source == "embed"
        self.embed_table = embed_layers(cfg.n_layer, cfg.value_embed_layers) if embed else None
        self.blocks = nn.ModuleList(
            Block(cfg, i, StreamConfig() if embed and self.embed_table[i] is None else cfg.stream)
            for i in range(cfg.n_layer)
        )
        # How each sublayer's input is made and its update added (draws no random numbers)
        self.residual = residual_module(cfg.residual, cfg.n_layer, cfg.n_embd)
        self.ln_f = norm(cfg)
        self.lm_head = nn.Linear(cfg.n_embd, cfg.padded_vocab, bias=False)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.wte.weight
        self.value_embeds = None
        if self.embed_table is not None:
            attn = self.blocks[0].attn
            width = attn.n_kv_head * attn.head_dim
            n_tables = max(t for t in self.embed_table if t is not None) + 1
            self.value_embeds = nn.ModuleList(
                nn.Embedding(cfg.padded_vocab, width) for _ in range(n_tables)
            )
        self.apply(self._init_weights)
        for name, p in self.named_parameters():  # GPT-2: scale residual projections by depth
            if name.endswith("attn.proj.weight") or name.endswith("mlp.proj.weight"):
                nn.init.normal_(p, 0.0, 0.02 / math.sqrt(2 * cfg.n_layer))

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, Gate):  # zero-initialised, see streams.Gate
            return
        if isinstance(m, (nn.Linear, nn.Embedding)):
            rows = getattr(m, "rows", None)  # a qkv without its shared projection: drawn whole
            if rows is None:
                nn.init.normal_(m.weight, 0.0, 0.02)
            else:
                full = torch.empty(m.full_width, m.weight.size(1)).normal_(0.0, 0.02)
                m.weight.data.copy_(full[rows])
        if isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)

    def num_params(self, non_embedding: bool = True) -> int:
        """Parameters in use (padding rows of the vocabulary tables are not counted);
        non_embedding leaves out the input lookup tables (token, position, value embeddings)
        but keeps an untied output layer."""
        c = self.cfg
        inputs = [self.wte, *(self.value_embeds or ())]  # tables with padded vocabulary rows
        padded = inputs + ([] if c.tie_embeddings else [self.lm_head])
        n = sum(p.numel() for p in self.parameters())
        n -= sum((c.padded_vocab - c.vocab_size) * t.weight.size(1) for t in padded)
        if non_embedding:
            n -= sum(c.vocab_size * t.weight.size(1) for t in inputs)
            n -= self.wpe.weight.numel() if self.wpe is not None else 0
        return n

    def flops_per_token(self) -> float:
        """Training FLOPs a token, 6 N + 12 L T d (PaLM's formula): N counts the parameters of
        matmuls, the output layer once (tied or not), no lookup table; the second term is
        attention's scores and mixing."""
        c = self.cfg
        n = self.num_params(non_embedding=True)
        n += c.vocab_size * c.n_embd if c.tie_embeddings else 0
        return 6 * n + 12 * c.n_layer * c.block_size * c.n_embd

    def new_cache(self) -> list[KVCache]:
        """An empty KV cache, one per layer, for `forward(..., cache=)` and `generate`."""
        return [KVCache() for _ in self.blocks]

    def forward(
        self,
        idx: torch.Tensor,
        targets: torch.Tensor | None = None,
        cache: list[KVCache] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits (B, T, vocab) and, given targets, the mean cross-entropy (ignore_index -100).

        With targets, the logits come back detached: the loss is the output to differentiate.
        A returned logits tensor that requires grad but is never used makes autograd fill a
        zero (B, T, vocab) gradient for it in every backward pass."""
        B, T = idx.shape
        start = len(cache[0]) if cache else 0
        if start + T > self.cfg.block_size:
            raise ValueError(
                f"sequence of {start + T} tokens exceeds block_size {self.cfg.block_size}"
            )
        x = self.wte(idx)
        if self.wpe is not None:
            x = x + self.wpe(torch.arange(start, start + T, device=idx.device))
        x = self.drop(x)
        carry = None
        embeds = [self.value_embed(t, idx) for t in self.value_embeds or ()]
        state = self.residual.start(x)
        for i, block in enumerate(self.blocks):
            if self.embed_table is not None:  # value-embed: each layer reads its own table
                table = self.embed_table[i]
                carry = None if table is None else embeds[table]
            state, carry = block(state, carry, cache[i] if cache else None, self.residual, i)
        x = self.ln_f(self.residual.end(state))
        V = self.cfg.vocab_size
        if targets is not None and self.fused_loss and x.is_cuda and torch.is_grad_enabled():
            loss, logits = linear_cross_entropy(x, self.lm_head.weight, targets, V)
            return logits[..., :V], loss
        logits = self.lm_head(x)  # padded_vocab columns
        loss = None
        if targets is not None:
            loss = cross_entropy(logits, targets, V)
            logits = logits.detach()
        return logits[..., :V], loss

    def value_embed(self, table: nn.Embedding, idx: torch.Tensor) -> torch.Tensor:
        """(B, T) tokens -> (B, kv heads, T, head_dim) values from one value-embedding table."""
        attn = self.blocks[0].attn
        return table(idx).unflatten(-1, (attn.n_kv_head, attn.head_dim)).transpose(1, 2)

    generate = sample  # with the KV cache while the text fits the context, then a sliding window
