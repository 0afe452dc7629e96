"""Reddy's bursty in-context classification task (paper.md section 3), generated in torch.

A sequence is N (item, label) pairs and a query item; each token is
[one-hot position (2*Nmax+1, placed at a random offset) | content (D)]. K classes map onto L
labels (class c has label c mod L). Everything is drawn on the generator's device in a few
batched ops: no numpy, no host round trip.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch

from ..config import ConfigError, check_range


@dataclass(frozen=True)
class ICLTaskConfig:
    classes: int = 512  # K
    labels: int = 32  # L
    pairs: int = 8  # N
    max_pairs: int = 32  # Nmax: the position block has 2*Nmax+1 slots
    dim: int = 85  # D, content dimension
    eps: float = 0.1  # item noise amplitude
    noise_std: float | None = None  # std of the noise entries; None: 1/sqrt(D)
    burstiness: int = 2  # B: a bursty context holds N/B classes B times each
    p_bursty: float = 0.5  # p_B
    p_novel: float = 0.5  # p_C: share of sequences over novel classes
    novel_classes: int = 128  # drawn fresh for each batch
    alpha: float = 0.0  # Zipf exponent of class frequencies (0: uniform)
    no_repeats: bool = True  # a context's classes have distinct labels

    def __post_init__(self) -> None:
        for name in (
            "classes",
            "labels",
            "pairs",
            "max_pairs",
            "dim",
            "burstiness",
            "novel_classes",
        ):
            check_range(name, getattr(self, name), lo=1)
        for name in ("p_bursty", "p_novel"):
            check_range(name, getattr(self, name), lo=0.0, hi=1.0)
        check_range("eps", self.eps, lo=0.0, hi=1e3)
        check_range("alpha", self.alpha, lo=0.0, hi=100.0)
        if self.noise_std is not None:
            check_range("noise_std", self.noise_std, lo=0.0, hi=1e3)
        if self.pairs % self.burstiness:
            raise ConfigError(
                f"pairs ({self.pairs}) must be divisible by burstiness ({self.burstiness})"
            )
        if self.pairs > self.max_pairs:
            raise ConfigError(f"pairs ({self.pairs}) must be <= max_pairs ({self.max_pairs})")
        for name in ("classes", "novel_classes"):
            if getattr(self, name) % self.labels:
                raise ConfigError(f"{name} ({getattr(self, name)}) must be a multiple of labels")
        if self.no_repeats and self.pairs > self.labels:
            raise ConfigError(f"no_repeats needs pairs ({self.pairs}) <= labels ({self.labels})")

    @property
    def seq_len(self) -> int:
        return 2 * self.pairs + 1

    @property
    def pos_dim(self) -> int:
        return 2 * self.max_pairs + 1

    @property
    def token_dim(self) -> int:
        return self.pos_dim + self.dim

    @property
    def item_noise_std(self) -> float:
        return self.dim**-0.5 if self.noise_std is None else self.noise_std

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Split:
    """How one stream of sequences is drawn: the training mix or one of the test sets."""

    p_bursty: float
    p_novel: float
    flip: bool = False  # every label -> label + 1 mod L (context and target)


def splits(cfg: ICLTaskConfig) -> dict[str, Split]:
    """Training mix and the four test sets of paper.md section 3."""
    return {
        "mixed": Split(cfg.p_bursty, cfg.p_novel),
        "icl": Split(1.0, 1.0),  # bursty, novel classes: only in-context reading helps
        "icl_flipped": Split(1.0, 0.0, flip=True),  # known classes, labels flipped
        "iwl": Split(0.0, 0.0),  # i.i.d. context, known classes: only memorised weights help
    }


TEST_SETS = ("mixed", "icl", "icl_flipped", "iwl")


class ICLTask:
    """One seed's task: fixed class means and label vectors, sampled on `device`."""

    def __init__(self, cfg: ICLTaskConfig, generator: torch.Generator) -> None:
        self.cfg = cfg
        self.g = generator
        dev = generator.device
        D = cfg.dim
        self.means = torch.randn(cfg.classes, D, generator=generator, device=dev) * D**-0.5
        self.label_vecs = torch.randn(cfg.labels, D, generator=generator, device=dev) * D**-0.5
        ranks = torch.arange(1, cfg.classes + 1, device=dev, dtype=torch.float32)
        self.log_w = -cfg.alpha * ranks.log()  # Zipf class weights (uniform at alpha = 0)

    @property
    def device(self) -> torch.device:
        return self.g.device

    def _rand(self, *shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=self.g, device=self.device)

    def _randint(self, high: int, *shape: int) -> torch.Tensor:
        return torch.randint(high, shape, generator=self.g, device=self.device)

    def _distinct_label_classes(self, M: int, m: int, pool: int, zipf: bool) -> torch.Tensor:
        """m classes with distinct labels per sequence, drawn without replacement by weight.

        Gumbel-top-k over label groups: each label's best perturbed class is drawn in proportion
        to its weight, and the top m groups are a weighted draw of groups without replacement.
        """
        L = self.cfg.labels
        if not zipf or self.cfg.alpha == 0:
            labels = self._rand(M, L).argsort(-1)[:, :m]
            return labels + L * self._randint(pool // L, M, m)
        gumbel = -(-self._rand(M, pool).clamp_min(1e-20).log()).log()
        scores = (self.log_w[:pool] + gumbel).view(M, pool // L, L)
        best, within = scores.max(1)  # per label: its best class
        labels = best.topk(m, dim=-1).indices
        return labels + L * within.gather(1, labels)

    def _iid_classes(self, M: int, m: int, pool: int, zipf: bool) -> torch.Tensor:
        if not zipf or self.cfg.alpha == 0:
            return self._randint(pool, M, m)
        return torch.multinomial(self.log_w[:pool].exp(), M * m, True, generator=self.g).view(M, m)

    def _classes(
        self, M: int, pool: int, zipf: bool
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Context classes (M, N) for bursty and i.i.d. sequences, and their query classes."""
        N, B = self.cfg.pairs, self.cfg.burstiness
        draw = self._distinct_label_classes if self.cfg.no_repeats else self._iid_classes
        iid = draw(M, N, pool, zipf)
        iid_query = self._iid_classes(M, 1, pool, zipf)[:, 0]
        few = draw(M, N // B, pool, zipf)
        order = self._rand(M, N).argsort(-1)
        bursty = few.repeat_interleave(B, dim=1).gather(1, order)
        bursty_query = few.gather(1, self._randint(N // B, M, 1))[:, 0]
        return torch.cat([iid, bursty], 1), iid_query, bursty_query

    def sample(
        self, n_batches: int, batch: int, split: Split | None = None, with_meta: bool = False
    ) -> tuple:
        """Tokens (n_batches, batch, 2N+1, pos_dim + D) and targets (n_batches, batch); with
        with_meta, also a dict of the flat (M = n_batches * batch) classes, bursty and novel
        flags and position offsets, for tests and analysis."""
        cfg = self.cfg
        split = split or Split(cfg.p_bursty, cfg.p_novel)
        M, N, D, L = n_batches * batch, cfg.pairs, cfg.dim, cfg.labels
        dev = self.device
        bursty = self._rand(M) < split.p_bursty
        novel = self._rand(M) < split.p_novel

        known_ctx, known_iq, known_bq = self._classes(M, cfg.classes, zipf=True)
        novel_ctx, novel_iq, novel_bq = self._classes(M, cfg.novel_classes, zipf=False)
        pick = lambda k, n: torch.where(novel.view(-1, *[1] * (k.dim() - 1)), n, k)  # noqa: E731
        ctx_both, iq, bq = (
            pick(known_ctx, novel_ctx),
            pick(known_iq, novel_iq),
            pick(known_bq, novel_bq),
        )
        ctx = torch.where(bursty[:, None], ctx_both[:, N:], ctx_both[:, :N])  # (M, N)
        query = torch.where(bursty, bq, iq)
        classes = torch.cat([ctx, query[:, None]], 1)  # (M, N+1)

        # Novel classes: fresh means for every batch, indexed as (batch, class).
        Kn = cfg.novel_classes
        novel_means = torch.randn(n_batches * Kn, D, generator=self.g, device=dev).mul_(D**-0.5)
        batch_of = torch.arange(M, device=dev)[:, None] // batch
        novel_mu = novel_means[batch_of * Kn + classes.clamp_max(Kn - 1)]
        mu = torch.where(novel[:, None, None], novel_mu, self.means[classes])
        noise = torch.randn(M, N + 1, D, generator=self.g, device=dev).mul_(cfg.item_noise_std)
        items = (mu + cfg.eps * noise) / math.sqrt(1 + cfg.eps**2)

        label = (classes + int(split.flip)) % L
        content = torch.empty(M, 2 * N + 1, D, device=dev)
        content[:, 0 : 2 * N : 2] = items[:, :N]
        content[:, 1 : 2 * N : 2] = self.label_vecs[label[:, :N]]
        content[:, 2 * N] = items[:, N]

        T, P = cfg.seq_len, cfg.pos_dim
        offset = self._randint(P - T + 1, M)
        pos = torch.zeros(M, T, P, device=dev)
        pos.scatter_(2, (offset[:, None] + torch.arange(T, device=dev))[..., None], 1.0)
        x = torch.cat([pos, content], dim=-1).view(n_batches, batch, T, P + D)
        y = label[:, N].view(n_batches, batch)
        if with_meta:
            meta = {"classes": classes, "bursty": bursty, "novel": novel, "offset": offset}
            return x, y, meta
        return x, y


def make_task(cfg: ICLTaskConfig, seed: int, device: str | torch.device = "cpu") -> ICLTask:
    return ICLTask(cfg, torch.Generator(device=device).manual_seed(seed))


def make_test_sets(
    cfg: ICLTaskConfig, seed: int, size: int = 10_000, device: str | torch.device = "cpu"
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """The four held-out test sets of one seed: fixed by the seed, disjoint from the training
    stream's generator (same class means, separate draws)."""
    task = make_task(cfg, seed, device)
    task.g = torch.Generator(device=device).manual_seed(seed + 7_919_000_003)
    out = {}
    for name in TEST_SETS:
        x, y = task.sample(1, size, splits(cfg)[name])
        out[name] = (x[0], y[0])
    return out
