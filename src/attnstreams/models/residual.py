"""How `GPT`'s blocks pass the residual stream on: the plain sum, DenseFormer's depth-weighted
average (Pagliardini et al. 2024, arXiv 2402.02622), or hyper-connections: n parallel copies of
the stream with learned mixing (Zhu et al. 2024, arXiv 2409.19606), their manifold-constrained
form (mHC, DeepSeek-AI 2025, arXiv 2512.24880), Attention Residuals: each sublayer reads a
softmax over depth of the embedding and the earlier sublayer outputs (Kimi Team 2026, arXiv
2603.15031), or MUDDFormer's multiway dynamic dense connections: each block's query, key, value
and residual inputs are per-position mixtures of the embedding and every earlier block output
(Xiao et al. 2025, arXiv 2502.12170); `muddvr` is modded-nanogpt's trimmed form of it, value
and residual ways after the last two blocks only.

Each block is two sublayers, attention and MLP, numbered k = 2i and 2i + 1 in block i. A
residual module talks to them through four calls: `start(x)` takes the embedding output and
returns a state; `read(state, k)` returns sublayer k's input and what `write` needs;
`write(mix, k, update)` takes that and the sublayer's update (its branch output, without the
residual add) and returns the new state; `end(state)` is what the final norm reads. An
attention sublayer's input may be a tuple (query, key, value inputs; MUDD), each through its
own pre-norm, or a `ValueAdd`: the input and an addition to the values after their projection
(muddvr).
Everything is per position, so cached decoding needs no extra state. The states that pass
between blocks are tensors or tuples of them, which FSDP's hooks see through.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from attnstreams.run.config import ConfigError, check_choice, check_int

RESIDUALS = ("plain", "denseformer", "hc", "dhc", "mhc", "attnres", "mudd", "muddvr")
HYPER = ("hc", "dhc", "mhc")
#: Expansion rate of the hyper-connection kinds when the name gives none (both papers' n).
DEFAULT_N = 4
NAMES = "plain, denseformer[-dK][-pP], hc[-nN], dhc[-nN], mhc[-nN], attnres[-bK], mudd, muddvr"
#: Options each kind takes in its name: d(ilation), p(eriod), n (expansion rate), b (transformer
#: blocks per Attention Residuals block).
OPTIONS = {
    "plain": "",
    "denseformer": "dp",
    "hc": "n",
    "dhc": "n",
    "mhc": "n",
    "attnres": "b",
    "mudd": "",
    "muddvr": "",
}
#: Sinkhorn-Knopp iterations of mHC's residual matrix (the paper's t_max).
SINKHORN_ITERS = 20


@dataclass(frozen=True)
class ResidualConfig:
    """The stream between sublayers: `plain` (x + update), `denseformer` with dilation k (a DWA
    mixes every k-th earlier block output) and period p (a DWA after every p-th block), or a
    hyper-connection kind with expansion rate n: `hc` (static), `dhc` (dynamic), `mhc`
    (manifold-constrained), or Attention Residuals, `attnres` (full: every earlier sublayer
    output is a source) or with `blocks` = K transformer blocks (2K sublayers) per AttnRes
    block, or MUDDFormer's `mudd` (query, key, value and residual ways), or modded-nanogpt's
    trimmed `muddvr` (value and residual ways from the last two blocks). `parse` reads names
    such as 'denseformer-d2-p2', 'dhc-n2', 'attnres-b2', 'mudd' or 'muddvr'."""

    kind: str = "plain"
    dilation: int = 1
    period: int = 1
    n: int | None = None  # hyper-connection kinds only; None there: DEFAULT_N
    blocks: int | None = None  # attnres only: transformer blocks per AttnRes block; None: full

    def __post_init__(self) -> None:
        check_choice("residual", self.kind, RESIDUALS)
        check_int("residual dilation", self.dilation, lo=1)
        check_int("residual period", self.period, lo=1)
        if self.kind != "denseformer" and (self.dilation, self.period) != (1, 1):
            raise ConfigError(f"the {self.kind} residual takes no dilation or period")
        if self.kind in HYPER:
            if self.n is None:
                object.__setattr__(self, "n", DEFAULT_N)
            check_int("residual expansion rate n", self.n, lo=1)
        elif self.n is not None:
            raise ConfigError(f"the {self.kind} residual takes no expansion rate")
        if self.blocks is not None:
            if self.kind != "attnres":
                raise ConfigError(f"the {self.kind} residual takes no block size")
            check_int("residual blocks per AttnRes block", self.blocks, lo=1)

    @classmethod
    def parse(cls, spec: str | ResidualConfig) -> ResidualConfig:
        """'plain', 'denseformer', 'denseformer-d2' (dilation 2), 'denseformer-p2' (period 2),
        'denseformer-d2-p2'; 'hc', 'dhc', 'mhc' (expansion rate 4), 'hc-n2' (rate 2); 'attnres'
        (full), 'attnres-b2' (2 transformer blocks, 4 sublayers, per AttnRes block)."""
        if isinstance(spec, ResidualConfig):
            return spec
        if not isinstance(spec, str):
            raise ConfigError(f"residual must be a name like 'denseformer', got {spec!r}")
        kind, *options = spec.strip().split("-")
        if kind not in RESIDUALS:
            raise ConfigError(f"unknown residual {spec!r}: one of {NAMES}")
        found: dict[str, int] = {}
        for opt in options:
            key, digits = opt[:1], opt[1:]
            number = digits.isascii() and digits.isdigit()
            if not key or key not in OPTIONS[kind] or key in found or not number:
                raise ConfigError(f"unknown residual {spec!r}: one of {NAMES}")
            found[key] = int(digits)
        return cls(kind, found.get("d", 1), found.get("p", 1), found.get("n"), found.get("b"))

    @property
    def name(self) -> str:
        """Canonical short name, the inverse of parse()."""
        parts = [self.kind]
        if self.dilation != 1:
            parts.append(f"d{self.dilation}")
        if self.period != 1:
            parts.append(f"p{self.period}")
        if self.n is not None and self.n != DEFAULT_N:
            parts.append(f"n{self.n}")
        if self.blocks is not None:
            parts.append(f"b{self.blocks}")
        return "-".join(parts)

    @property
    def active(self) -> bool:
        """Whether the stream differs from the plain residual sum."""
        return self.kind != "plain"


def check_residual_layers(cfg: ResidualConfig, n_layer: int) -> None:
    """A DenseFormer needs at least one DWA: period at most n_layer; an AttnRes block at most
    n_layer transformer blocks; muddvr at least 3 blocks (`TrimmedDenseConnections`)."""
    if cfg.kind == "denseformer" and cfg.period > n_layer:
        raise ConfigError(
            f"residual {cfg.name!r} has period {cfg.period}: no DWA in {n_layer} layers"
        )
    if cfg.kind == "attnres" and cfg.blocks is not None and cfg.blocks > n_layer:
        raise ConfigError(
            f"residual {cfg.name!r} has AttnRes blocks of {cfg.blocks} layers: more than "
            f"the model's {n_layer}"
        )
    if cfg.kind == "muddvr" and n_layer < 3:
        raise ConfigError(f"residual 'muddvr' needs at least 3 blocks, got {n_layer}")


def residual_module(cfg: ResidualConfig, n_layer: int, width: int) -> nn.Module:
    """The module GPT's sublayers read and write through (width: n_embd)."""
    if cfg.kind == "denseformer":
        return DepthWeightedAverage(n_layer, cfg.dilation, cfg.period)
    if cfg.kind in ("hc", "dhc"):
        return HyperConnections(2 * n_layer, width, cfg.n, dynamic=cfg.kind == "dhc")
    if cfg.kind == "mhc":
        return ManifoldHyperConnections(2 * n_layer, width, cfg.n)
    if cfg.kind == "attnres":
        size = 1 if cfg.blocks is None else 2 * cfg.blocks
        return AttentionResiduals(2 * n_layer, width, size)
    if cfg.kind == "mudd":
        return MultiwayDenseConnections(n_layer, width)
    if cfg.kind == "muddvr":
        return TrimmedDenseConnections(n_layer, width)
    return PlainResidual()


class PlainResidual(nn.Module):
    """x + update after each sublayer (no parameters: checkpoints unchanged)."""

    def start(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def read(self, state: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        return state, state

    def write(self, state: torch.Tensor, k: int, update: torch.Tensor) -> torch.Tensor:
        return state + update

    def end(self, state: torch.Tensor) -> torch.Tensor:
        return state


#: The residual of a Block called on its own.
PLAIN = PlainResidual()


def weighted_sum(weights: torch.Tensor, sources) -> torch.Tensor:
    """sum_j weights[..., j] sources[j] (weights (..., S), S sources), written term by term so
    that autograd keeps no stacked copy of the sources."""
    out = None
    for j, v in enumerate(sources):
        term = weights[..., j : j + 1] * v
        out = term if out is None else out + term
    return out


class DepthWeightedAverage(nn.Module):
    """DenseFormer's DWA: after block i (0-based; its MLP, sublayer 2i + 1) with
    (i + 1) % period == 0, the stream passed on is sum_m alpha_{i,m} X_m over the outputs X_m
    with m = i + 1, i + 1 - k, ... >= 0 (k the dilation; X_0 the embedding output, X_m block
    m-1's output before any DWA). After other blocks the block output is passed on as it is;
    inside a block, attention's update is added as usual.

    `weights[str(i)]` holds alpha_i, oldest output first. It starts as (0, ..., 0, 1): the model
    starts as the plain transformer, and no random number is drawn (a seed gives the other
    weights of the plain model). The sum is written term by term so that autograd keeps no
    stacked copy of the outputs (it keeps the outputs themselves, which it keeps anyway).

    The state is (stream, outputs so far)."""

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

    def start(self, x: torch.Tensor) -> tuple:
        return x, (x,)

    def read(self, state: tuple, k: int) -> tuple[torch.Tensor, tuple]:
        return state[0], state

    def write(self, state: tuple, k: int, update: torch.Tensor) -> tuple:
        x, outputs = state
        out = x + update
        if k % 2 == 0:  # after attention: inside the block
            return out, outputs
        i = k // 2
        outputs = (*outputs, out)
        if str(i) not in self.weights:
            return out, outputs
        w = self.weights[str(i)].to(out.dtype)  # under autocast: the stream's dtype
        return weighted_sum(w, [outputs[j] for j in self.sources(i)]), outputs

    def end(self, state: tuple) -> torch.Tensor:
        return state[0]


class HyperConnections(nn.Module):
    """Hyper-connections (Zhu et al. 2024) around every sublayer, expansion rate n.

    The state is the hyper hidden matrix H, n copies of the stream a position, (..., n, d);
    `start` copies the embedding output into all n, `end` sums them (what the final norm reads).
    Sublayer k reads h = sum_s A_m[s] H_s (width connections) and writes
    H'_j = B_j T(h) + sum_s A_r[s, j] H_s (depth connections). Static (`hc`): A_m, A_r, B are
    learned, stored as `static_alpha[k]` = [A_m | A_r] (n x (1 + n)) and `static_beta[k]` = B.
    Dynamic (`dhc`): each also gets a per-position term, [A_m | A_r] + s_a tanh(norm(H) W_a) and
    B + s_b tanh(norm(H) W_b), norm a LayerNorm over d without weights, W_a (d x (1 + n)) and
    W_b (d) starting at 0 and s_a, s_b at 0.01 (`dynamic_alpha`, `dynamic_beta`,
    `alpha_scale`, `beta_scale`).

    The paper's start: A_m = e_{k mod n}, A_r = I, B = 1. Then every copy is the plain model's
    stream, exactly (each product is by 0 or 1), and the final norm reads n times it (the sum of
    the copies). No random number is drawn."""

    def __init__(self, n_sublayers: int, width: int, n: int, dynamic: bool = False) -> None:
        super().__init__()
        self.n, self.dynamic = n, dynamic
        alpha = torch.zeros(n_sublayers, n, 1 + n)
        for k in range(n_sublayers):
            alpha[k, k % n, 0] = 1.0
            alpha[k, :, 1:] = torch.eye(n)
        self.static_alpha = nn.Parameter(alpha)
        self.static_beta = nn.Parameter(torch.ones(n_sublayers, n))
        if dynamic:
            self.dynamic_alpha = nn.Parameter(torch.zeros(n_sublayers, width, 1 + n))
            self.dynamic_beta = nn.Parameter(torch.zeros(n_sublayers, width))
            self.alpha_scale = nn.Parameter(torch.full((n_sublayers,), 0.01))
            self.beta_scale = nn.Parameter(torch.full((n_sublayers,), 0.01))

    def start(self, x: torch.Tensor) -> torch.Tensor:
        return x.unsqueeze(-2).expand(*x.shape[:-1], self.n, x.size(-1))

    def read(self, H: torch.Tensor, k: int) -> tuple[torch.Tensor, tuple]:
        alpha = self.static_alpha[k].to(H.dtype)  # under autocast: the stream's dtype
        beta = self.static_beta[k].to(H.dtype)
        if self.dynamic:
            normed = F.layer_norm(H, H.shape[-1:])
            w_a, w_b = self.dynamic_alpha[k].to(H.dtype), self.dynamic_beta[k].to(H.dtype)
            alpha = alpha + self.alpha_scale[k].to(H.dtype) * torch.tanh(normed @ w_a)
            beta = beta + self.beta_scale[k].to(H.dtype) * torch.tanh(normed @ w_b)
        else:  # weights a position, as in dhc: each weight's gradient is then summed over the
            # width at each position first, not in one reduction over the whole batch and width
            # (which made hc slower than dhc: BENCHMARKS)
            alpha = alpha.expand(*H.shape[:-2], *alpha.shape)
            beta = beta.expand(*H.shape[:-2], *beta.shape)
        mixed = mix_copies(alpha.transpose(-2, -1), H)  # (..., 1 + n, d)
        return mixed[..., 0, :], (mixed[..., 1:, :], beta)

    def write(self, mix: tuple, k: int, update: torch.Tensor) -> torch.Tensor:
        kept, beta = mix
        return kept + beta.unsqueeze(-1) * update.unsqueeze(-2)

    def end(self, H: torch.Tensor) -> torch.Tensor:
        return H.sum(-2)


def mix_copies(weights: torch.Tensor, X: torch.Tensor) -> torch.Tensor:
    """sum_s weights[..., t, s] X[..., s, :] for n copies X (..., n, d) and weights (..., m, n):
    a broadcast product summed over the n copies, not a matmul, so that the compiler fuses it
    with the ops around it in one pass over X (a batched matmul of n x n matrices a position is
    a kernel of its own, and under autocast a bf16 copy of X first). Under autocast the result
    keeps X's dtype, as the plain stream's sum does."""
    return (weights.unsqueeze(-1) * X.unsqueeze(-3)).sum(-2)


def sinkhorn(logits: torch.Tensor, iters: int = SINKHORN_ITERS) -> torch.Tensor:
    """Sinkhorn-Knopp on exp(logits) over the last two dimensions: each iteration scales the
    rows, then the columns, to sum 1 (the columns sum to 1 exactly, the rows nearly). The
    largest logit of each matrix is subtracted first (the result is the same)."""
    m = torch.exp(logits - logits.amax((-2, -1), keepdim=True).detach())
    for _ in range(iters):
        m = m / m.sum(-1, keepdim=True)
        m = m / m.sum(-2, keepdim=True)
    return m


def _mhc_maps(
    X: torch.Tensor,
    phi: torch.Tensor,
    gates: torch.Tensor,
    b_pre: torch.Tensor,
    b_post: torch.Tensor,
    b_res: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """mHC's H_pre, H_post and H_res at state X, from one sublayer's weights."""
    n, dt = X.size(-2), X.dtype
    flat = F.rms_norm(X.flatten(-2), (X.size(-2) * X.size(-1),), eps=1e-6)
    z = flat @ phi.to(dt)
    a = gates.to(dt)
    pre = torch.sigmoid(a[0] * z[..., :n] + b_pre.to(dt))
    post = 2 * torch.sigmoid(a[1] * z[..., n : 2 * n] + b_post.to(dt))
    res = a[2] * z[..., 2 * n :].unflatten(-1, (n, n)) + b_res.to(dt)
    return pre, post, sinkhorn(res)


#: The same, compiled once for every sublayer: torch.compile otherwise traces the 20 Sinkhorn
#: iterations of each sublayer anew (benchmarks/compile_time.py). Before torch 2.8 (no nested
#: compile regions) it is traced anew.
_region = getattr(torch.compiler, "nested_compile_region", None)
_mhc_maps_once = _mhc_maps if _region is None else _region(_mhc_maps)


class ManifoldHyperConnections(nn.Module):
    """mHC (DeepSeek-AI 2025): hyper-connections whose residual matrix is doubly stochastic and
    whose read and write weights are non-negative, all per position.

    Sublayer k with X the state (n x d a position): x' = RMSNorm(vec(X)) over all n d numbers
    (no weight: it folds into phi), then with phi = `phi[k]` (n d x (2n + n^2)) and gates
    a = `gates[k]` (3 numbers), H_pre = sigmoid(a_0 x' phi_pre + b_pre),
    H_post = 2 sigmoid(a_1 x' phi_post + b_post), H_res = SinkhornKnopp(a_2 mat(x' phi_res) +
    b_res) (20 iterations); the sublayer reads h = sum_j H_pre[j] X_j and writes
    X'_i = sum_j H_res[i, j] X_j + H_post[i] T(h). `start` copies, `end` sums, as in
    `HyperConnections`.

    Start (draws no random number): phi = 0, gates 0.01, and the biases are hyper-connections'
    start in logits: b_pre = e_{k mod n}, b_res = I, b_post = 0. Then H_pre = sigmoid(e_{k mod
    n}), H_post = 1 and H_res = ((e - 1) I + J) / (e + n - 1), which is doubly stochastic: every
    copy is the stream of the plain model whose sublayers read c = sigmoid(1) + (n - 1) / 2
    times their input (before their norm; to rounding), and the final norm reads n times it.
    Not the plain model: a sigmoid is never 0 or 1. Biases all 0 would keep the n copies equal
    for ever (every copy gets the same gradient); the one-hot b_pre breaks that symmetry, as
    A_m does in hyper-connections.
    """

    #: compile the maps once for all sublayers (a nested compile region); a model stack's
    #: vmapped copy turns it off, since vmap cannot batch such a region (torch 2.13)
    compile_once = True

    def __init__(self, n_sublayers: int, width: int, n: int) -> None:
        super().__init__()
        self.n = n
        self.phi = nn.Parameter(torch.zeros(n_sublayers, n * width, 2 * n + n * n))
        self.gates = nn.Parameter(torch.full((n_sublayers, 3), 0.01))
        b_pre = torch.zeros(n_sublayers, n)
        for k in range(n_sublayers):
            b_pre[k, k % n] = 1.0
        self.b_pre = nn.Parameter(b_pre)
        self.b_post = nn.Parameter(torch.zeros(n_sublayers, n))
        self.b_res = nn.Parameter(torch.eye(n).repeat(n_sublayers, 1, 1))

    def start(self, x: torch.Tensor) -> torch.Tensor:
        return x.unsqueeze(-2).expand(*x.shape[:-1], self.n, x.size(-1))

    def maps(self, X: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """H_pre (..., n), H_post (..., n), H_res (..., n, n) of sublayer k at state X."""
        maps = _mhc_maps_once if self.compile_once else _mhc_maps
        return maps(X, self.phi[k], self.gates[k], self.b_pre[k], self.b_post[k], self.b_res[k])

    def read(self, X: torch.Tensor, k: int) -> tuple[torch.Tensor, tuple]:
        pre, post, res = self.maps(X, k)
        h = mix_copies(pre.unsqueeze(-2), X).squeeze(-2)
        return h, (mix_copies(res, X), post)

    def write(self, mix: tuple, k: int, update: torch.Tensor) -> torch.Tensor:
        kept, post = mix
        return kept + post.unsqueeze(-1) * update.unsqueeze(-2)

    def end(self, X: torch.Tensor) -> torch.Tensor:
        return X.sum(-2)


class AttentionResiduals(nn.Module):
    """Attention Residuals (Kimi Team 2026, "Attention Residuals", arXiv 2603.15031): there is
    no residual sum; sublayer l (0-based k = l - 1) reads h_l = sum_i alpha_i V_i, a softmax
    over depth of its sources V_i, alpha = softmax_i(w_l . RMSNorm_l(V_i)), with w_l a learned
    pseudo-query (d numbers, not input-dependent) and RMSNorm_l a gain of d numbers (eps 1e-6);
    no temperature. What joins the sources is the sublayer's update f(h) (its branch output),
    not an accumulated stream.

    Sources, with the L = 2 n_layer sublayers cut into blocks of `size` consecutive sublayers
    (the last one shorter if `size` does not divide L) and b_0 the embedding output: the i-th
    sublayer (1-based) of block n reads [b_0, ..., b_{n-1}] and, for i >= 2, the partial sum
    b_n^{i-1} of its own block's updates so far; a finished block's source is the sum of its
    sublayers' updates (Eq. 5-6). The embedding is only ever b_0 and every update is in exactly
    one source. `size` 1 (the name `attnres`) is the paper's Full AttnRes (N = L: the sources
    are the embedding and every earlier update, Eq. 3-4); `attnres-bK` has blocks of K
    transformer blocks, size 2K (the paper's S; Megatron's block-layers option counts the same
    way), so it cannot reach N = L. With K = n_layer (N = 1) every sublayer after the first
    reads two sources, the embedding and the sum of every update so far: the plain stream with
    the embedding isolated, mixed by a softmax of two logits (a new model: the plain one whose
    sublayers and final norm read half the stream). After the last sublayer one more depth
    attention over every source, with its own pseudo-query and gain, makes what the final norm
    reads.

    `query[k - 1]` and `key_norm[k - 1]` belong to sublayer k = 1, ..., L - 1 and row L - 1 to
    the final output. Sublayer 0 has none: its only source is the embedding (a softmax of one
    logit is 1), so a weight there would never get a gradient. The queries start at 0 and the
    gains at 1, as the paper says (no random number is drawn): every source then weighs the
    same, so a new model is an equal-weight average of its sources, not the plain transformer,
    and the gains get no gradient until the queries move (the logits are w . (g * x)).

    The state is the sources (the last one the open block's partial sum while a block is open)
    followed by each source's logits for every row, (..., L): a flat tuple of tensors, which
    FSDP's hooks see through (`sources(state)` gives the first half). A source's logits are
    computed once, when it is written, as (v . (g_r * w_r)) / rms(v) for all rows r in one
    product with a (d x L) matrix: a sublayer then reads its sources only for the weighted sum,
    and the backward pass goes through each source's logits once, not once a reader. No
    normalised copy of a source is kept, and the weighted sum is written term by term for the
    same reason. Under autocast the updates are kept in the embedding output's dtype, so block
    sums add up as the plain stream does."""

    eps = 1e-6

    def __init__(self, n_sublayers: int, width: int, size: int = 1) -> None:
        super().__init__()
        self.size = size
        self.query = nn.Parameter(torch.zeros(n_sublayers, width))
        self.key_norm = nn.Parameter(torch.ones(n_sublayers, width))

    def logits(self, v: torch.Tensor) -> torch.Tensor:
        """Source v's logit for every row r, query[r] . RMSNorm_r(v), on the last axis."""
        u = (self.key_norm * self.query).to(v.dtype)  # (rows, d)
        return (v @ u.t()) * torch.rsqrt(v.pow(2).mean(-1, keepdim=True) + self.eps)

    @staticmethod
    def split(state: tuple) -> tuple[tuple, tuple]:
        """The state's sources and their logits."""
        n = len(state) // 2
        return state[:n], state[n:]

    @classmethod
    def sources(cls, state: tuple) -> tuple:
        return cls.split(state)[0]

    def start(self, x: torch.Tensor) -> tuple:
        return (x, self.logits(x))

    def attend(self, state: tuple, row: int) -> torch.Tensor:
        """sum_i alpha_i sources[i], alpha = softmax(query[row] . RMSNorm(sources[i]))."""
        sources, logits = self.split(state)
        if len(sources) == 1:
            return sources[0]
        dt = sources[0].dtype
        scores = torch.stack([g[..., row] for g in logits], dim=-1)
        alpha = torch.softmax(scores, -1, dtype=torch.promote_types(dt, torch.float32)).to(dt)
        return weighted_sum(alpha, sources)

    def read(self, state: tuple, k: int) -> tuple[torch.Tensor, tuple]:
        return self.attend(state, k - 1), state

    def write(self, state: tuple, k: int, update: torch.Tensor) -> tuple:
        sources, logits = self.split(state)
        update = update.to(sources[0].dtype)  # under autocast: the stream's dtype, as x + update
        if k % self.size == 0:  # the first sublayer of a block: the previous block is done
            return (*sources, update, *logits, self.logits(update))
        last = sources[-1] + update
        return (*sources[:-1], last, *logits[:-1], self.logits(last))

    def end(self, state: tuple) -> torch.Tensor:
        return self.attend(state, self.query.size(0) - 1)


def mudd_hidden(sources: int) -> int:
    """Width of a MUDD generator's hidden layer with `sources` inputs to mix: 4 sources, rounded
    up as the released model does, (n // 64 + 1) * 64, which adds 64 even to a multiple of 64
    (its round64; 4 also after the last block, where one way is made: its expand_last)."""
    return (4 * sources // 64 + 1) * 64


class MultiwayDenseConnections(nn.Module):
    """MUDDFormer's multiway dynamic dense connections (Xiao et al. 2025, "MUDDFormer: Breaking
    Residual Bottlenecks in Transformers via Multiway Dynamic Dense Connections", arXiv
    2502.12170), in the dense_type 'qkvr' form of the released model.

    X_0 is the embedding output and X_{i+1} block i's whole output. After block i (its MLP,
    sublayer 2i + 1) a generator on that output alone makes, per position,
    A = W2_i GELU(W1_i RMSNorm(X_{i+1})) + a_i, C x (i + 2) weights (RMSNorm without gain,
    eps 1e-6), and the C ways X^c = sum_j A[c, j] X_j over X_0, ..., X_{i+1}. Block i + 1's
    attention reads its query, key and value inputs from ways Q, K and V (each through its own
    pre-norm: the block's `ln1`, `ln1_k` and `ln1_v`), and its residual is way R:
    h = X^R + attn(...); the MLP is the plain pre-norm residual, X_{i+2} = h + mlp(h). C = 4
    but after the last block, where C = 1 makes what the final norm reads. Block 0 reads the
    embedding as the plain model does (one input, one pre-norm).

    Parameters of block i's generator: `w1[i]` (hidden x d, `mudd_hidden`), `w2[i]`
    (C (i + 2) x hidden, its rows C-major: way c's weights on the sources are rows
    c (i + 2), ..., c (i + 2) + i + 1) and `bias[i]` (C x (i + 2)). Start: w2 = 0 and every
    bias row one-hot on the newest output, so every way is X_{i+1} and a new model is the plain
    transformer exactly; w1 is drawn N(0, 1/d) (the paper's fan-in normal), from a generator of
    its own seeded from `torch.initial_seed()`, so the model's other weights are those the seed
    gives the plain model. Without a random w1, w2's gradient (through GELU(0) = 0) would be 0
    for ever.

    The state is (outputs so far, ways): tuples of tensors. The ways are written term by term,
    so autograd keeps no stacked copy of the outputs."""

    eps = 1e-6

    def __init__(self, n_layer: int, width: int) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(torch.initial_seed() + 1)
        self.ways = [4] * (n_layer - 1) + [1]
        w1, w2, bias = [], [], []
        for i, c in enumerate(self.ways):
            n, hidden = i + 2, mudd_hidden(i + 2)
            w = torch.randn(hidden, width, generator=g, device="cpu") / math.sqrt(width)
            w1.append(nn.Parameter(w.to(torch.get_default_device())))
            w2.append(nn.Parameter(torch.zeros(c * n, hidden)))
            b = torch.zeros(c, n)
            b[:, -1] = 1.0
            bias.append(nn.Parameter(b))
        self.w1, self.w2, self.bias = (
            nn.ParameterList(w1),
            nn.ParameterList(w2),
            nn.ParameterList(bias),
        )

    def weights(self, x: torch.Tensor, i: int) -> torch.Tensor:
        """Generator i's weights at block i's output x: (..., C, i + 2)."""
        dt = x.dtype
        h = F.gelu(F.rms_norm(x, x.shape[-1:], eps=self.eps) @ self.w1[i].to(dt).t())
        a = h @ self.w2[i].to(dt).t()
        return a.unflatten(-1, (self.ways[i], i + 2)) + self.bias[i].to(dt)

    def start(self, x: torch.Tensor) -> tuple:
        return (x,), (x,)

    def read(self, state: tuple, k: int) -> tuple:
        if k % 2:  # the MLP: the plain residual
            return state[1], state
        ways = state[1]
        if len(ways) == 1:  # block 0: the embedding, as the plain model reads it
            return ways[0], (state[0], ways[0])
        return ways[:3], (state[0], ways[3])

    def write(self, mix: tuple, k: int, update: torch.Tensor) -> tuple:
        outputs, x = mix
        out = x + update
        if k % 2 == 0:  # after attention: inside the block
            return outputs, out
        outputs = (*outputs, out)
        a = self.weights(out, k // 2)
        return outputs, tuple(weighted_sum(a[..., c, :], outputs) for c in range(a.size(-2)))

    def end(self, state: tuple) -> torch.Tensor:
        return state[1][0]


class ValueAdd(NamedTuple):
    """An attention sublayer's input with an addition to its values: `x` is read as the plain
    block reads its input (through ln1) and `value` (..., n_embd) is added to the value
    projection of x, before any value stream mixes it (muddvr)."""

    x: torch.Tensor
    value: torch.Tensor


#: Width of a muddvr generator's hidden layer (modded-nanogpt's 2 ways x 3 sources rounded up
#: to the next multiple of 64, for both of its generators).
MUDDVR_HIDDEN = 64
#: The factor on the value way (modded-nanogpt's; the residual ways have none).
MUDDVR_VALUE_SCALE = 1.15


class TrimmedDenseConnections(nn.Module):
    """modded-nanogpt's trimmed MUDD (KellerJordan/modded-nanogpt, track-1 record
    2026-04-22_MuddFormer, PR #259, its v1: train_gpt.py at commit af2a7d14 "Add mudd"): MUDD's
    value (V) and residual (R) ways only, made after the last two blocks only. Every block
    before is plain.

    With L blocks, X_0 the embedding output and X_{i+1} block i's output (before any delta
    below): after block L - 2 (its MLP) a generator on X_{L-1} makes, per position, weights
    dw[c, j] for the ways c = V, R over S = 3 sources s = (X_0, X_{L-3}, X_{L-1}); the stream
    passed on is X_{L-1} + sum_j dw[R, j] s_j, and block L - 1's attention adds
    1.15 sum_j dw[V, j] s_j to its value projection (heads split as the values are; no extra
    matmul). After block L - 1 a generator on X_L makes dw[R, j] over S = 2 sources
    (X_0, X_{L-1}), and the final norm reads X_L + sum_j dw[R, j] s_j. A generator is
    dw = (GELU(x W1^T) W2^T + b) * 0.2 / sqrt(S), on the block output x as it is (no norm),
    W1 (64 x d), W2 (C S x 64, rows C-major: way c's are rows c S, ..., c S + S - 1), b (C x S):
    `w1[g]`, `w2[g]`, `bias[g]`, g = 0 after block L - 2 (C = 2: V then R), g = 1 after the
    last block (C = 1: R).

    Checked against that code: the ways, sources and order above; the V way is added to V right
    after the qkv projection, before the value embedding is (so here before any value stream's
    mix: the block's own value projection with the V way added is what a value stream mixes
    with the one handed on; the last block's own projection is handed on to no later layer);
    the generator reads the un-normalised block output; the 0.2 / sqrt(S) after the bias and
    the 1.15 on V alone; W1 kaiming-uniform (a = sqrt(5), nn.Linear's default), W2 and b 0; the
    last block's X_{L-1} is block L - 2's output before the R delta was added (the tensor kept
    before the stream is rebound), not the stream block L - 1 read; the R way of the last block
    is added before the final norm. The record's README later (v2) calls the last block's v1
    sources x0, h7, h9; the v1 code mixes x0 and h9, as here.

    Chosen here: X_0 is the embedding output, the stream block 0 reads (as `mudd`'s); there it
    is the stream entering layer 0, a normalised (token-smeared) embedding with a bigram
    embedding added, none of which this GPT has. modded-nanogpt's L is 11 (the sources x0, h7,
    h9 of block 9): X_{L-3} is its h7, the output of the block two before. With 3 blocks that
    is X_0 again (its code keys the embedding as block -1): the embedding is then weighted
    twice, by two weights that add; fewer blocks are refused. In its baseline every attention
    after layer 7 reads h7 rather than the stream; here each block reads its own input. There
    both generators have the first one's shape (2 ways, 3 sources) and the last block reads
    the slice it needs, the rest never getting a gradient; here each has only what it uses.
    Its backout (subtracting a learned multiple of h7 before the final norm) and its optimizer
    settings are not part of the connections and are not taken; as every residual module's
    weights, these are not weight-decayed.

    Start: W2 = 0 and b = 0, so every dw is 0 and a new model is the plain transformer
    exactly; W1 is drawn from a generator of its own seeded from `torch.initial_seed()`, as
    `mudd`'s is, so the model's other weights are those the seed gives the plain model.

    The state is (stream, kept) between blocks, kept the outputs still to be mixed: (X_0,),
    (X_0, X_{L-3}) after block L - 4, (X_0, X_{L-1}) after block L - 2; from block L - 2 to the
    last block's attention also the V way: (stream, kept, v). Tuples of tensors; the ways are
    written term by term, so autograd keeps no stacked copy of the sources."""

    def __init__(self, n_layer: int, width: int) -> None:
        super().__init__()
        self.n_layer = n_layer
        self.ways = (2, 1)
        self.sources = (3, 2)
        g = torch.Generator().manual_seed(torch.initial_seed() + 1)
        w1, w2, bias = [], [], []
        for c, n in zip(self.ways, self.sources, strict=True):
            w = torch.empty(MUDDVR_HIDDEN, width, device="cpu")
            nn.init.kaiming_uniform_(w, a=math.sqrt(5), generator=g)
            w1.append(nn.Parameter(w.to(torch.get_default_device())))
            w2.append(nn.Parameter(torch.zeros(c * n, MUDDVR_HIDDEN)))
            bias.append(nn.Parameter(torch.zeros(c, n)))
        self.w1, self.w2, self.bias = (
            nn.ParameterList(w1),
            nn.ParameterList(w2),
            nn.ParameterList(bias),
        )

    def weights(self, x: torch.Tensor, g: int) -> torch.Tensor:
        """Generator g's weights dw at the block output x: (..., C, S)."""
        dt, c, n = x.dtype, self.ways[g], self.sources[g]
        h = F.gelu(x @ self.w1[g].to(dt).t())
        dw = (h @ self.w2[g].to(dt).t()).unflatten(-1, (c, n)) + self.bias[g].to(dt)
        return dw * (0.2 / math.sqrt(n))

    def start(self, x: torch.Tensor) -> tuple:
        return x, (x,)

    def read(self, state: tuple, k: int) -> tuple:
        if len(state) == 3:  # the last block's attention: the V way joins its values
            x, kept, v = state
            return ValueAdd(x, v), (x, kept)
        return state[0], state

    def write(self, mix: tuple, k: int, update: torch.Tensor) -> tuple:
        x, kept = mix
        out = x + update
        i, L = k // 2, self.n_layer
        if k % 2 == 0 or i < L - 4 or i == L - 3:  # inside a block, or a block not mixed
            return out, kept
        if i == L - 4:  # keep X_{L-3}
            return out, (*kept, out)
        if i == L - 2:
            x0 = kept[0]
            sources = (x0, kept[1] if L > 3 else x0, out)
            dw = self.weights(out, 0)
            v = MUDDVR_VALUE_SCALE * weighted_sum(dw[..., 0, :], sources)
            return out + weighted_sum(dw[..., 1, :], sources), (x0, out), v
        dw = self.weights(out, 1)  # the last block
        return out + weighted_sum(dw[..., 0, :], kept), kept

    def end(self, state: tuple) -> torch.Tensor:
        return state[0]
