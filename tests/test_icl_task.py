"""The bursty in-context classification task: distributions, not just shapes."""

from __future__ import annotations

import pytest
import torch

from attnstreams.experiments.icl.task import (
    ICLTaskConfig,
    Split,
    make_task,
    make_test_sets,
    splits,
)
from attnstreams.run.config import ConfigError

CFG = ICLTaskConfig()
N, L, D, P = CFG.pairs, CFG.labels, CFG.dim, CFG.pos_dim


def draw(split: Split, n=2000, seed=0, cfg=CFG):
    task = make_task(cfg, seed)
    x, y, meta = task.sample(1, n, split, with_meta=True)
    return task, x[0], y[0], meta


def test_shapes_and_position_block():
    _, x, y, meta = draw(splits(CFG)["mixed"])
    assert x.shape == (2000, 17, 150) and y.shape == (2000,) and CFG.token_dim == 150
    pos = x[..., :P]
    assert torch.all(pos.sum(-1) == 1)  # one-hot
    expected = meta["offset"][:, None] + torch.arange(17)
    assert torch.equal(pos.argmax(-1), expected)  # contiguous block at the sequence's offset
    assert meta["offset"].min() == 0 and meta["offset"].max() == P - 17  # the whole range is used


def test_bursty_contexts_and_query_in_context():
    _, x, y, meta = draw(Split(1.0, 0.0))
    ctx, query = meta["classes"][:, :N], meta["classes"][:, N]
    counts = (ctx[:, :, None] == ctx[:, None, :]).sum(-1)
    assert torch.all(counts == CFG.burstiness)  # N/B classes, B times each
    assert torch.all((ctx == query[:, None]).any(-1))
    labels = ctx % L
    assert torch.all((labels[:, :, None] == labels[:, None, :]).sum(-1) == CFG.burstiness)


def test_iid_contexts_allow_repeats_and_query_rarely_in_context():
    """no_repeats is for bursty contexts only: i.i.d. labels repeat (the authors' generator)."""
    _, _, _, meta = draw(Split(0.0, 0.0))
    ctx, query = meta["classes"][:, :N], meta["classes"][:, N]
    labels = ctx % L
    assert ((labels[:, :, None] == labels[:, None, :]).sum(-1) > 1).any()
    share = (ctx == query[:, None]).any(-1).float().mean()
    assert share < 0.05  # ~N/K = 1.6%


def test_mixed_split_probabilities():
    _, _, _, meta = draw(splits(CFG)["mixed"], n=8000)
    assert abs(meta["novel"].float().mean() - 0.5) < 0.03
    assert meta["bursty"][meta["novel"]].all()  # novel-class sequences are always bursty
    assert abs(meta["bursty"][~meta["novel"]].float().mean() - 0.5) < 0.03


def test_labels_are_noise_free_and_targets_match():
    task, x, y, meta = draw(splits(CFG)["mixed"])
    classes = meta["classes"]
    torch.testing.assert_close(
        x[:, 1:16:2, P:], task.label_vecs[classes[:, :N] % L], rtol=0, atol=0
    )
    assert torch.equal(y, classes[:, N] % L)


def test_flipped_labels():
    task, x, y, meta = draw(splits(CFG)["icl_flipped"])
    classes = meta["classes"]
    assert not meta["novel"].any() and meta["bursty"].all()
    assert torch.equal(y, (classes[:, N] + 1) % L)
    torch.testing.assert_close(x[:, 1:16:2, P:], task.label_vecs[(classes[:, :N] + 1) % L])


def test_item_noise_scale_and_known_means():
    task, x, _, meta = draw(Split(0.5, 0.0))
    items = x[:, 0:16:2, P:]
    mu = task.means[meta["classes"][:, :N]]
    eps = CFG.eps
    noise = items * (1 + eps**2) ** 0.5 - mu  # = eps * eta
    assert abs(noise.std().item() / eps - D**-0.5) < 0.003  # eta entries N(0, 1/D)
    assert abs(task.means.std().item() - D**-0.5) < 0.003


def test_novel_classes_are_unseen_and_fresh_per_batch():
    task = make_task(CFG, 0)
    x, _, meta = task.sample(2, 500, Split(1.0, 1.0), with_meta=True)
    assert meta["novel"].all()
    items = x[:, :, 0:16:2, P:].reshape(-1, D)
    # An item of a known class lies within ~eps of its mean; novel items are far from every mean.
    nearest = torch.cdist(items, task.means).min(-1).values
    assert nearest.min() > 0.5
    # Same novel class id in two batches: different vectors (drawn fresh for each batch).
    cls = meta["classes"].view(2, 500, N + 1)
    a, b = cls[0, 0, 0], cls[1]
    where = (b[:, :N] == a).nonzero()
    assert len(where) > 0
    i, j = where[0]
    assert (x[0, 0, 0, P:] - x[1, i, 2 * j, P:]).norm() > 0.5


def test_zipf_alpha_skews_class_frequencies():
    cfg = ICLTaskConfig(alpha=1.0)
    for split in (Split(0.0, 0.0), Split(1.0, 0.0)):
        _, _, _, meta = draw(split, n=4000, cfg=cfg)
        counts = torch.bincount(meta["classes"].flatten(), minlength=cfg.classes)
        assert counts[:16].sum() > 5 * counts[-16:].sum()
    labels = meta["classes"][:, :N] % L  # bursty: still N/B distinct labels
    assert torch.all((labels[:, :, None] == labels[:, None, :]).sum(-1) == CFG.burstiness)


def test_with_repeats_allowed():
    cfg = ICLTaskConfig(no_repeats=False, classes=32)
    _, _, _, meta = draw(Split(0.0, 0.0), n=2000, cfg=cfg)
    ctx = meta["classes"][:, :N]
    assert ((ctx[:, :, None] == ctx[:, None, :]).sum(-1) > 1).any()


def test_determinism_and_fixed_test_sets():
    a, b = make_task(CFG, 3), make_task(CFG, 3)
    assert torch.equal(a.sample(1, 64)[0], b.sample(1, 64)[0])
    assert not torch.equal(make_task(CFG, 4).means, a.means)
    t1, t2 = make_test_sets(CFG, 5, size=100), make_test_sets(CFG, 5, size=100)
    assert all(torch.equal(t1[k][0], t2[k][0]) for k in t1)
    assert set(t1) == {"mixed", "icl", "icl_flipped", "iwl"}
    assert not torch.equal(t1["mixed"][0], make_test_sets(CFG, 6, size=100)["mixed"][0])


@pytest.mark.parametrize(
    "kw",
    [
        {"pairs": 7},
        {"pairs": 40},
        {"classes": 500},
        {"p_bursty": 1.5},
        {"dim": 0},
        {"labels": 4, "pairs": 8},
    ],
)
def test_bad_task_config(kw):
    with pytest.raises(ConfigError):
        ICLTaskConfig(**kw)
