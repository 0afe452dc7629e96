"""Reddy's bursty in-context classification task (paper.md section 3), generated in torch.

A sequence is N (item, label) pairs and a query item; each token is
[one-hot position (2*Nmax+1, placed at a random offset) | content (D)]. K classes map onto L
labels (class c has label c mod L). Everything is drawn on the generator's device in a few
batched ops: no numpy, no host round trip.

The mix is the authors' (`datasets_v2.py`): a sequence is novel with probability p_C, and
novel-class sequences are always bursty; a known-class sequence is bursty with probability p_B,
else i.i.d. (its query class drawn independently of the context, so only memorised weights can
answer it). The training mix is thus ~50% novel and bursty, ~25% known and bursty, ~25% known
and i.i.d. One difference, at a non-default setting only: with alpha > 0 and no_repeats, the
authors' bursty contexts ignore the Zipf weights (their i.i.d. draws use them); ours weight both.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch

from attnstreams.run.config import ConfigError, check_range


@dataclass(frozen=True)
class ICLTaskConfig:
    """The task's settings; the defaults are the authors' (paper.md section 3)."""

    classes: int = 512  # K
    labels: int = 32  # L
    pairs: int = 8  # N
    max_pairs: int = 32  # Nmax: the position block has 2*Nmax+1 slots
    dim: int = 85  # D, content dimension
    eps: float = 0.1  # item noise amplitude
    noise_std: float | None = None  # std of the noise entries; None: 1/sqrt(D)
    burstiness: int = 2  # B: a bursty context holds N/B classes B times each
    p_bursty: float = 0.5  # p_B: bursty share of known-class sequences
    p_novel: float = 0.5  # p_C: share of sequences over novel classes
    novel_classes: int = 128  # drawn fresh for each batch
    alpha: float = 0.0  # Zipf exponent of class frequencies (0: uniform)
    no_repeats: bool = True  # a bursty context's N/B classes have distinct labels

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
        """Tokens a sequence holds: N (item, label) pairs and the query."""
        return 2 * self.pairs + 1

    @property
    def pos_dim(self) -> int:
        """Width of the one-hot position block."""
        return 2 * self.max_pairs + 1

    @property
    def token_dim(self) -> int:
        """Width of a token: position block and content."""
        return self.pos_dim + self.dim

    @property
    def item_noise_std(self) -> float:
        """Std of an item's noise entries (noise_std, or 1/sqrt(D) when unset)."""
        return self.dim**-0.5 if self.noise_std is None else self.noise_std

    def to_dict(self) -> dict:
        """The settings as a plain dict, for configs and checkpoints."""
        return asdict(self)


@dataclass(frozen=True)
class Split:
    """How one stream of sequences is drawn: the training mix or one of the test sets.
    p_novel: share of novel-class sequences (always bursty); p_bursty: share of bursty ones
    among the known-class rest."""

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
        """Where the task draws its tensors: its generator's device."""
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

    def _bursty(self, M: int, pool: int, zipf: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Bursty contexts (M, N): N/B classes B times each, shuffled, with distinct labels when
        no_repeats; the query's class is one of them."""
        N, B = self.cfg.pairs, self.cfg.burstiness
        draw = self._distinct_label_classes if self.cfg.no_repeats else self._iid_classes
        few = draw(M, N // B, pool, zipf)
        order = self._rand(M, N).argsort(-1)
        ctx = few.repeat_interleave(B, dim=1).gather(1, order)
        return ctx, few.gather(1, self._randint(N // B, M, 1))[:, 0]

    def _iid(self, M: int, pool: int) -> tuple[torch.Tensor, torch.Tensor]:
        """i.i.d. contexts (M, N), repeats allowed (no_repeats is for bursty contexts only, as in
        the authors' generator), and a query class drawn independently of the context."""
        N = self.cfg.pairs
        return self._iid_classes(M, N, pool, True), self._iid_classes(M, 1, pool, True)[:, 0]

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
        bursty |= novel  # the authors' novel-class sequences are always bursty

        known_b, known_bq = self._bursty(M, cfg.classes, zipf=True)
        known_i, known_iq = self._iid(M, cfg.classes)
        novel_b, novel_bq = self._bursty(M, cfg.novel_classes, zipf=False)
        ctx = torch.where(novel[:, None], novel_b, torch.where(bursty[:, None], known_b, known_i))
        query = torch.where(novel, novel_bq, torch.where(bursty, known_bq, known_iq))
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
    """The task of one seed: its class means, label vectors and training stream."""
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


def token_statistics(
    x: torch.Tensor,
    means: torch.Tensor,
    label_vecs: torch.Tensor,
    pairs: int = 8,
    eps: float = 0.1,
    same: float = 0.5,
) -> dict[str, float]:
    """Statistics of a batch of sequences read off the tokens alone, so that any generator of
    this task (ours, the authors' `datasets_v2.py`) can be measured the same way.

    x: (M, 2N+1, P+D) tokens; means: the (K, D) known class means; label_vecs: (L, D). Two items
    are of one class when closer than `same` (same-class items differ by ~eps * sqrt(2), other
    classes by ~sqrt(2)); a sequence is novel when its query is farther than `same` from every
    known mean; bursty when its context holds N/B classes B times each (B = 2)."""
    x = torch.as_tensor(x, dtype=torch.float64)
    means = torch.as_tensor(means, dtype=torch.float64)
    label_vecs = torch.as_tensor(label_vecs, dtype=torch.float64)
    N, D = pairs, means.size(1)
    P = x.size(-1) - D
    pos, content = x[..., :P], x[..., P:]
    items, labels, query = content[:, 0 : 2 * N : 2], content[:, 1 : 2 * N : 2], content[:, 2 * N]
    M = len(x)
    label_id = torch.cdist(labels.flatten(0, 1), label_vecs).argmin(-1).view(M, N)
    tokens = torch.cat([items, query[:, None]], 1)  # (M, N+1, D)
    near = torch.cdist(tokens.flatten(0, 1), means).view(M, N + 1, -1)
    novel = near[:, N].min(-1).values > same
    partners = (torch.cdist(items, items) < same).sum(-1) - 1  # same-class items in context
    bursty = (partners == 1).all(-1)  # B = 2: every class twice
    in_ctx = ((items - query[:, None]).norm(dim=-1) < same).any(-1)
    distinct = (label_id.sort(-1).values.diff(dim=-1) != 0).sum(-1).double() + 1
    known_item = near[:, :N].min(-1)  # nearest known mean of each context item
    k = ~novel[:, None] & (known_item.values < same)
    noise = (items * math.sqrt(1 + eps**2) - means[known_item.indices]) / eps
    offsets = pos[:, 0].argmax(-1).double()
    kinds = {"novel": novel, "known_bursty": ~novel & bursty, "known_iid": ~novel & ~bursty}
    out = {f"share_{n}": float(m.double().mean()) for n, m in kinds.items()}
    for n, m in kinds.items():
        out[f"query_in_context_{n}"] = float(in_ctx[m].double().mean()) if m.any() else math.nan
        out[f"distinct_labels_{n}"] = float(distinct[m].mean()) if m.any() else math.nan
    out.update(
        novel_bursty=float(bursty[novel].double().mean()) if novel.any() else math.nan,
        label_noise_max=float((labels - label_vecs[label_id]).abs().max()),
        item_norm_mean=float(tokens.norm(dim=-1).mean()),
        noise_std=float(noise[k].std()) if k.any() else math.nan,
        known_label_matches_class=float(
            (label_id[k] == known_item.indices[k] % len(label_vecs)).double().mean()
        )
        if k.any()
        else math.nan,
        offset_min=float(offsets.min()),
        offset_max=float(offsets.max()),
        offset_mean=float(offsets.mean()),
        position_one_hot=float(
            (pos.sum(-1) == 1).all() and (pos.argmax(-1).diff(dim=-1) == 1).all()
        ),
    )
    return out
