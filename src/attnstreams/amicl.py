"""AMICL: an associative memory that does in-context learning (paper.md section 1).

A trial is T tokens alternating item and label; the final label is hidden (zero). Keys and
queries mix the previous and the current token, k_t = q_t = (a x_{t-1} + x_t) / (a + 1), values
are the raw tokens, and the read-out retrieves the value whose key best matches the final query.
Everything is vectorised over trials: one call handles a whole batch of trials.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, fields, replace
from typing import TYPE_CHECKING

import numpy as np
import torch

from attnstreams.run.config import ConfigError, check_choice, check_range
from attnstreams.run.logs import progress_bar

if TYPE_CHECKING:
    from typing import Any

SIMILARITIES = ("dot", "pearson", "euclidean", "manhattan")
MAX_SIZE = 10_000_000  # dim, length and dim x length: one trial must fit in memory
READOUTS = ("argmax", "softmax")


@dataclass(frozen=True)
class AMICLConfig:
    """One AMICL setting. Defaults are the paper's table setting (D=100, K=512, T=20, a=2)."""

    a: float = 2.0
    dim: int = 100
    classes: int = 512
    length: int = 20
    eps: float = 0.1
    noise_std: float | None = (
        None  # None: 1/dim, as in the authors' code (1/sqrt(dim) is section 3's)
    )
    similarity: str = "dot"
    readout: str = "argmax"
    beta: float = 1.0  # inverse temperature of the softmax read-out

    def __post_init__(self) -> None:
        check_range("a", self.a, lo=0.0, hi=1e6)
        check_range("dim", self.dim, lo=1, hi=MAX_SIZE)
        check_range("classes", self.classes, lo=1, hi=2**62)
        check_range("length", self.length, lo=4, hi=MAX_SIZE)
        if self.dim * self.length > MAX_SIZE:
            raise ConfigError(f"dim x length must be <= {MAX_SIZE:,} (one trial's tokens)")
        if self.length % 2:
            raise ConfigError(f"length must be even (item/label pairs), got {self.length}")
        check_range("eps", self.eps, lo=0.0, hi=1e3)
        if self.noise_std is not None:
            check_range("noise_std", self.noise_std, lo=0.0, hi=1e3)
        check_choice("similarity", self.similarity, SIMILARITIES)
        check_choice("readout", self.readout, READOUTS)
        check_range("beta", self.beta, lo=0.0, hi=1e9, lo_open=True)

    @property
    def item_noise_std(self) -> float:
        """The items' noise standard deviation: noise_std, or 1/dim when it is None."""
        return 1.0 / self.dim if self.noise_std is None else self.noise_std

    def to_dict(self) -> dict:
        """The settings as a plain dict, for JSON and CSV rows."""
        return asdict(self)

    def with_(self, **changes: Any) -> AMICLConfig:
        """A copy with some settings changed (validated again), for sweeps."""
        return replace(self, **changes)


FIELD_NAMES = tuple(f.name for f in fields(AMICLConfig))


@dataclass
class Trials:
    """A batch of N trials: tokens (N, T, D), keys (N, T, D) and what the answer is."""

    tokens: torch.Tensor
    keys: torch.Tensor
    query: torch.Tensor  # (N, D): the query at the final position
    context_classes: torch.Tensor  # (N, C) class id of each context pair
    context_labels: torch.Tensor  # (N, C, D) label vector of each context pair
    query_class: torch.Tensor  # (N,)

    @property
    def target(self) -> torch.Tensor:
        """The query's label vector, (N, D)."""
        idx = (self.context_classes == self.query_class[:, None]).int().argmax(-1)
        return self.context_labels[torch.arange(len(idx)), idx]


def sample_trials(cfg: AMICLConfig, n: int, generator: torch.Generator) -> Trials:
    """Draw n trials. Only the classes present in a trial get vectors (repeats reuse them)."""
    D, T = cfg.dim, cfg.length
    C = T // 2 - 1  # context pairs; the last pair is the query and its hidden label
    g = generator
    cls = torch.randint(cfg.classes, (n, C), generator=g)
    # First slot holding the same class: a class repeated within a trial reuses its vectors.
    first = (cls[:, :, None] == cls[:, None, :]).int().argmax(-1)
    idx = first[..., None].expand(n, C, D)
    mu = torch.randn(n, C, D, generator=g).mul_(D**-0.5).gather(1, idx)
    labels = torch.randn(n, C, D, generator=g).mul_(D**-0.5).gather(1, idx)
    qslot = torch.randint(C, (n,), generator=g)
    rows = torch.arange(n)
    item_means = torch.cat([mu, mu[rows, qslot][:, None]], dim=1)  # (n, C+1, D)
    noise = torch.randn(n, C + 1, D, generator=g).mul_(cfg.item_noise_std)
    items = (item_means + cfg.eps * noise) / math.sqrt(1.0 + cfg.eps**2)

    tokens = torch.zeros(n, T, D)
    tokens[:, 0 : 2 * C : 2] = items[:, :C]
    tokens[:, 1 : 2 * C : 2] = labels
    tokens[:, T - 2] = items[:, C]  # the query item; position T-1 (its label) stays zero

    prev = torch.cat([torch.zeros(n, 1, D), tokens[:, :-1]], dim=1)
    mixed = (cfg.a * prev + tokens) / (cfg.a + 1.0)
    keys = mixed.clone()
    keys[:, -1] = torch.randn(n, D, generator=g).mul_(D**-0.5)  # so the query cannot find itself
    return Trials(tokens, keys, mixed[:, -1], cls, labels, cls[rows, qslot])


def similarity(q: torch.Tensor, k: torch.Tensor, kind: str) -> torch.Tensor:
    """Pairwise similarity of queries (..., Tq, D) and keys (..., Tk, D) -> (..., Tq, Tk)."""
    if kind == "dot":
        return q @ k.transpose(-1, -2)
    if kind == "pearson":
        qc = q - q.mean(-1, keepdim=True)
        kc = k - k.mean(-1, keepdim=True)
        s = (qc @ kc.transpose(-1, -2)) / (
            qc.norm(dim=-1)[..., :, None] * kc.norm(dim=-1)[..., None, :]
        )
        return s.nan_to_num(nan=-math.inf)  # a constant (e.g. zero) vector has no correlation
    if kind == "euclidean":
        return -torch.cdist(q, k, p=2.0)
    if kind == "manhattan":
        return -torch.cdist(q, k, p=1.0)
    raise ConfigError(f"similarity must be one of {', '.join(SIMILARITIES)}, got {kind!r}")


def readout(cfg: AMICLConfig, trials: Trials) -> torch.Tensor:
    """The memory's output for the final query, (N, D): the best-matching value (argmax) or
    the softmax-weighted mix of values."""
    scores = similarity(trials.query[:, None], trials.keys, cfg.similarity)[:, 0]  # (N, T)
    if cfg.readout == "argmax":
        return trials.tokens[torch.arange(len(scores)), scores.argmax(-1)]
    weights = torch.softmax(cfg.beta * scores, dim=-1).nan_to_num(0.0)
    return torch.einsum("nt,ntd->nd", weights, trials.tokens)


def correct(cfg: AMICLConfig, trials: Trials) -> torch.Tensor:
    """Boolean (N,): whether each trial's read-out is the query's label."""
    out = readout(cfg, trials)
    if cfg.readout == "argmax":
        return (out == trials.target).all(-1)
    # Softmax output counts as correct when the nearest label vector (of the trial's classes)
    # to it is the query's label.
    nearest = torch.cdist(out[:, None], trials.context_labels)[:, 0].argmin(-1)
    picked = trials.context_classes[torch.arange(len(nearest)), nearest]
    return picked == trials.query_class


@dataclass
class AMICLResult:
    """The accuracy of one `run`: how many of its trials were answered correctly, and how."""

    accuracy: float
    trials: int
    correct: int
    seed: int
    config: AMICLConfig
    method: str = "vectors"

    @property
    def stderr(self) -> float:
        """Binomial standard error of the accuracy."""
        p = self.accuracy
        return math.sqrt(max(p * (1 - p), 0.0) / max(self.trials, 1))

    def to_dict(self) -> dict:
        """One flat row: the result, its standard error and every config setting."""
        return {
            "accuracy": self.accuracy,
            "stderr": self.stderr,
            "trials": self.trials,
            "correct": self.correct,
            "seed": self.seed,
            "method": self.method,
            **self.config.to_dict(),
        }


def chunk_size(cfg: AMICLConfig, budget_floats: int = 1 << 23) -> int:
    """Trials per chunk so one chunk's tensors stay ~tens of MB."""
    return max(1, budget_floats // (cfg.length * cfg.dim))


def correct_projected(cfg: AMICLConfig, n: int, rng: np.random.Generator) -> np.ndarray:
    """Dot-product + argmax trials sampled exactly through the inner products they need.

    The read-out only sees s_i = q . k_i = a/(a+1)^2 (a g_{i-1} + g_i) with g_j = x_q . x_j.
    Given the query item x_q, the projection of any independent isotropic Gaussian vector
    (another class's mean, a label, an item's noise, the random final key) onto x_q is
    N(0, var |x_q|^2); the query class's own mean enters through |mu|^2 ~ chi2_D / D and the
    query noise's components along and across mu. So a trial needs ~3T normals instead of ~3TD
    vector entries, with the same distribution as `sample_trials` + `correct`.
    """
    D, T, a, eps = cfg.dim, cfg.length, cfg.a, cfg.eps
    C, sn, s = T // 2 - 1, cfg.item_noise_std, math.sqrt(1 + eps**2)
    rows = np.arange(n)
    cls = rng.integers(cfg.classes, size=(n, C))
    first = (cls[:, :, None] == cls[:, None, :]).argmax(-1)  # repeated classes share vectors
    cq = cls[rows, rng.integers(C, size=n)]
    mu2 = rng.chisquare(D, n) / D  # |mu_cq|^2
    along = rng.standard_normal(n) * sn  # query noise along mu_cq
    across2 = rng.chisquare(D - 1, n) * sn**2 if D > 1 else np.zeros(n)
    mun = np.sqrt(mu2)
    xq2 = (mu2 + 2 * eps * mun * along + eps**2 * (along**2 + across2)) / s**2  # |x_q|^2
    xq_mu = (mu2 + eps * mun * along) / s  # x_q . mu_cq
    scale = np.sqrt(xq2)[:, None] / math.sqrt(D)
    g_mu = np.take_along_axis(rng.standard_normal((n, C)), first, 1) * scale
    g_mu = np.where(cls == cq[:, None], xq_mu[:, None], g_mu)
    g_label = np.take_along_axis(rng.standard_normal((n, C)), first, 1) * scale
    g_noise = rng.standard_normal((n, C)) * (np.sqrt(xq2)[:, None] * sn)
    g = np.zeros((n, T))
    g[:, 0 : 2 * C : 2] = (g_mu + eps * g_noise) / s
    g[:, 1 : 2 * C : 2] = g_label
    g[:, T - 2] = xq2  # the query item itself; position T-1 (hidden label) stays 0
    scores = np.empty((n, T))
    scores[:, 0] = g[:, 0]
    scores[:, 1:] = a * g[:, :-1] + g[:, 1:]
    scores *= a / (a + 1) ** 2
    scores[:, T - 1] = a / (a + 1) * scale[:, 0] * rng.standard_normal(n)  # q . random key
    pick = scores.argmax(-1)
    slot = np.minimum(pick // 2, C - 1)
    return (pick % 2 == 1) & (pick < 2 * C) & (cls[rows, slot] == cq)


METHODS = ("auto", "vectors", "projections")
PROJECTED_CHUNK = 1 << 16


def _run_projected(cfg: AMICLConfig, trials: int, seed: int, threads: int, bar) -> int:
    """Chunk i draws from its own stream (seed, i): the count does not depend on threads.
    Chunks are handed to the threads a window at a time, so memory stays bounded however
    many trials are asked for."""
    C = cfg.length // 2 - 1
    size = max(1, min(PROJECTED_CHUNK, (1 << 26) // (C * C + cfg.length)))  # ~64M cells a chunk
    starts = range(0, trials, size)

    def chunk(i: int) -> int:
        """Correct trials of chunk i, counted on the progress bar as they finish."""
        n = min(size, trials - starts[i])
        hits = int(correct_projected(cfg, n, np.random.default_rng([seed, i])).sum())
        bar.update(n)
        return hits

    if threads <= 1 or len(starts) == 1:
        return sum(map(chunk, range(len(starts))))
    window = 4 * threads
    with ThreadPoolExecutor(threads) as pool:  # numpy releases the GIL on these arrays
        return sum(
            sum(pool.map(chunk, range(lo, min(lo + window, len(starts)))))
            for lo in range(0, len(starts), window)
        )


def run(
    cfg: AMICLConfig,
    trials: int,
    seed: int = 0,
    chunk: int | None = None,
    method: str = "auto",
    threads: int | None = None,
    progress: bool = False,
) -> AMICLResult:
    """Accuracy of the AMICL model over `trials` independent trials, drawn in chunks (memory
    does not grow with `trials`); progress: a bar (or a line every 30 s) of trials done.

    method: `vectors` draws every D-dimensional token; `projections` (dot + argmax only) draws
    just the inner products the read-out uses, ~30x faster with the same distribution; `auto`
    picks projections where they apply."""
    check_range("trials", trials, lo=1)
    check_range("seed", seed, lo=0, hi=2**63 - 1)
    check_choice("method", method, METHODS)
    fast = cfg.similarity == "dot" and cfg.readout == "argmax"
    if method == "projections" and not fast:
        raise ConfigError("method 'projections' needs similarity dot and readout argmax")
    with progress_bar(trials, "amicl", "trial", progress) as bar:
        if method != "vectors" and fast:
            hits = _run_projected(cfg, trials, seed, threads or torch.get_num_threads(), bar)
            return AMICLResult(hits / trials, trials, hits, seed, cfg, "projections")
        g = torch.Generator().manual_seed(seed)
        chunk = chunk or chunk_size(cfg)
        hits = 0
        with torch.no_grad():
            for start in range(0, trials, chunk):
                n = min(chunk, trials - start)
                hits += int(correct(cfg, sample_trials(cfg, n, g)).sum())
                bar.update(n)
    return AMICLResult(hits / trials, trials, hits, seed, cfg, "vectors")


def attention_maps(cfg: AMICLConfig, seed: int = 0) -> dict[str, torch.Tensor]:
    """Score, softmax and argmax maps (T x T, causal) of one trial, for figures."""
    return attention_trial(cfg, seed)[0]


def attention_trial(cfg: AMICLConfig, seed: int = 0) -> tuple[dict[str, torch.Tensor], dict]:
    """The maps of one trial, and what the query's row does: the key position its argmax
    picks, the positions holding the right label, and whether the read-out is right. Row t
    attends to keys i <= t; every map is NaN above the diagonal, so a figure leaves those
    cells blank in each panel alike (a weight of 0 drawn there would look like a key the row
    could attend to)."""
    check_range("seed", seed, lo=0, hi=2**63 - 1)
    g = torch.Generator().manual_seed(seed)
    t = sample_trials(cfg, 1, g)
    prev = torch.cat([torch.zeros(1, 1, cfg.dim), t.tokens[:, :-1]], dim=1)
    queries = (cfg.a * prev + t.tokens) / (cfg.a + 1.0)
    scores = similarity(queries, t.keys, cfg.similarity)[0]
    T = cfg.length
    causal = torch.ones(T, T, dtype=torch.bool).tril()
    scores = scores.masked_fill(~causal, -math.inf)
    soft = torch.softmax(cfg.beta * scores, dim=-1).nan_to_num(0.0)
    hard = torch.zeros_like(soft).scatter_(1, scores.argmax(-1, keepdim=True), 1.0)
    picked = int(scores[-1].argmax())
    labels = [i for i in range(1, T - 1, 2) if torch.equal(t.tokens[0, i], t.target[0])]
    maps = {"scores": scores, "softmax": soft, "argmax": hard}
    maps = {name: m.masked_fill(~causal, math.nan) for name, m in maps.items()}
    return maps, {"picked": picked, "labels": labels, "right": picked in labels}


SWEEPABLE = {"a": float, "length": int, "dim": int, "classes": int, "eps": float, "beta": float}


def sweep_configs(base: AMICLConfig, over: str, values: list) -> list[AMICLConfig]:
    """One validated config per value of one parameter."""
    check_choice("over", over, SWEEPABLE)
    out = []
    for v in values:
        try:
            value = SWEEPABLE[over](v)
        except (TypeError, ValueError):
            raise ConfigError(
                f"{over} value must be {SWEEPABLE[over].__name__}, got {v!r}"
            ) from None
        out.append(base.with_(**{over: value}))
    return out


def sweep(
    configs: list[AMICLConfig], trials: int, seed: int = 0, method: str = "auto"
) -> Iterator[AMICLResult]:
    """Accuracy at each config; every point reuses the seed (common random numbers), so
    neighbouring points differ by the parameter, not by the draw."""
    for cfg in configs:
        yield run(cfg, trials, seed, method=method)


# paper.md section 1: (setting, reported accuracy range), 1,000 trials each, dot + argmax.
PAPER_TABLE: list[tuple[dict, tuple[float, float]]] = [
    ({"a": 2.0}, (1.000, 1.000)),
    ({"a": 1.75}, (1.000, 1.000)),
    ({"a": 1.5}, (0.994, 0.994)),
    ({"a": 1.25}, (0.907, 0.907)),
    ({"a": 1.0}, (0.325, 0.325)),
    ({"a": 1.0, "dim": 1000}, (0.31, 0.34)),
    ({"a": 1.0, "dim": 1000, "classes": 1024}, (0.31, 0.34)),
    ({"a": 1.0, "classes": 1024}, (0.31, 0.34)),
    ({"a": 1.0, "length": 100}, (0.31, 0.34)),
]
PAPER_TRIALS = 1000


def paper_z(result: AMICLResult, reported: tuple[float, float]) -> float:
    """Distance of our accuracy from the reported one (or range) in standard errors of the
    difference: both ours and the paper's 1,000-trial estimate carry sampling error."""
    lo, hi = reported
    p = min(max(result.accuracy, lo), hi)
    var = p * (1 - p) / PAPER_TRIALS + result.accuracy * (1 - result.accuracy) / result.trials
    gap = result.accuracy - p
    if gap == 0:
        return 0.0
    # A reported 1.000 has zero binomial variance; floor it at one error in the paper's trials.
    p_min = 1.0 / PAPER_TRIALS
    floor = p_min * (1 - p_min) / PAPER_TRIALS
    return abs(gap) / math.sqrt(max(var, floor))
