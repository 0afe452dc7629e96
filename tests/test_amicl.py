"""AMICL: the paper's table, the data's structure, and the read-outs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial.distance import cdist

from attnstreams import amicl
from attnstreams.amicl import (
    AMICLConfig,
    Trials,
    correct,
    readout,
    run,
    sample_trials,
    similarity,
)
from attnstreams.run.config import ConfigError


@pytest.mark.parametrize("method", ["vectors", "projections"])
@pytest.mark.parametrize("override,reported", amicl.PAPER_TABLE, ids=lambda v: str(v))
def test_paper_table_row_within_three_standard_errors(override, reported, method):
    cfg = AMICLConfig(**override)
    trials = 20_000 if method == "projections" or cfg.dim * cfg.length <= 2000 else 5_000
    res = run(cfg, trials, seed=123, method=method)
    assert res.method == method
    assert amicl.paper_z(res, reported) < 3, (res.accuracy, reported)


@pytest.mark.parametrize(
    "kw",
    [
        {"a": 1.0},
        {"a": 1.15, "dim": 10},
        {"a": 1.25, "length": 8, "classes": 4},
        {"a": 1.1, "eps": 1.0, "noise_std": 0.1},
        {"a": 0.9, "dim": 3, "classes": 2, "length": 40},
    ],
)
def test_projections_match_vectors(kw):
    """The fast sampler draws the same distribution as the full vectors."""
    cfg = AMICLConfig(**kw)
    fast = run(cfg, 40_000, seed=1, method="projections")
    full = run(cfg, 20_000, seed=2, method="vectors")
    se = (fast.stderr**2 + full.stderr**2) ** 0.5
    assert abs(fast.accuracy - full.accuracy) < 4 * max(se, 1e-3), (fast.accuracy, full.accuracy)


def test_projections_do_not_depend_on_threads():
    cfg = AMICLConfig(a=1.2)
    one = run(cfg, 200_000, seed=3, threads=1)
    two = run(cfg, 200_000, seed=3, threads=2)
    assert one.correct == two.correct and one.method == "projections"


def test_projections_only_for_dot_argmax():
    with pytest.raises(ConfigError, match="projections"):
        run(AMICLConfig(similarity="pearson"), 10, method="projections")
    assert run(AMICLConfig(similarity="pearson"), 10).method == "vectors"


def test_paper_z_discriminates():
    """The statistic used above would flag a wrong model: a=1 is far from the a=1.25 row."""
    res = run(AMICLConfig(a=1.0), 5000, seed=0)
    assert amicl.paper_z(res, (0.907, 0.907)) > 10


def test_label_beats_item_only_when_a_above_one():
    """paper.md: label key scores ~a^2/(a+1)^2, item key ~a/(a+1)^2."""
    assert run(AMICLConfig(a=0.5), 2000).accuracy < 0.02
    assert run(AMICLConfig(a=3.0), 2000).accuracy > 0.99


def slice_trials(t: Trials, i: int) -> Trials:
    return Trials(*(getattr(t, f)[i : i + 1] for f in Trials.__dataclass_fields__))


@pytest.mark.parametrize("sim", amicl.SIMILARITIES)
@pytest.mark.parametrize("read", amicl.READOUTS)
def test_batched_equals_looped(sim, read):
    cfg = AMICLConfig(a=1.2, classes=5, similarity=sim, readout=read, beta=5.0)
    t = sample_trials(cfg, 64, torch.Generator().manual_seed(0))
    batched = correct(cfg, t)
    looped = torch.cat([correct(cfg, slice_trials(t, i)) for i in range(64)])
    assert torch.equal(batched, looped)
    assert 0 < batched.sum() < 64  # a setting where both outcomes occur


def test_trial_structure():
    cfg = AMICLConfig(dim=16, classes=3, length=12, eps=0.0)
    t = sample_trials(cfg, 200, torch.Generator().manual_seed(1))
    C = cfg.length // 2 - 1
    assert t.tokens.shape == (200, 12, 16) and t.keys.shape == (200, 12, 16)
    assert torch.all(t.tokens[:, -1] == 0)  # hidden label
    # Query class comes from the context, and (eps=0) the query item equals its class's items.
    assert torch.all((t.context_classes == t.query_class[:, None]).any(-1))
    items = t.tokens[:, 0 : 2 * C : 2]
    same = t.context_classes[:, :, None] == t.context_classes[:, None, :]
    # Repeated classes reuse the same item mean and label vector.
    d_items = (items[:, :, None] - items[:, None, :]).abs().amax(-1)
    d_labels = (t.context_labels[:, :, None] - t.context_labels[:, None, :]).abs().amax(-1)
    assert torch.all(d_items[same] < 1e-6) and torch.all(d_labels[same] < 1e-6)
    assert torch.all(d_labels[~same] > 1e-3)
    # Keys mix the previous token: k_t = (a x_{t-1} + x_t)/(a + 1), except the final one.
    k3 = (cfg.a * t.tokens[:, 2] + t.tokens[:, 3]) / (cfg.a + 1)
    torch.testing.assert_close(t.keys[:, 3], k3)
    torch.testing.assert_close(t.query, cfg.a * t.tokens[:, -2] / (cfg.a + 1))
    assert (t.keys[:, -1] - t.query).abs().amax() > 1e-3


@pytest.mark.parametrize("a", [2.0, 1.0])
def test_attention_maps_are_what_the_report_caption_says(a):
    """reproduce's caption: all three panels blank (NaN) above the diagonal; below it, rows
    before the last score their own key as |q_t|^2 (k_t = q_t), the query row's own cell is
    the random last key's chance match, and the picked key is the last row's argmax."""
    cfg = AMICLConfig(a=a)
    maps, answer = amicl.attention_trial(cfg, seed=3)
    above = torch.ones(cfg.length, cfg.length, dtype=torch.bool).triu(1)
    for name, m in maps.items():
        assert m[above].isnan().all() and m[~above].isfinite().all(), name
    torch.testing.assert_close(maps["softmax"].nansum(-1), torch.ones(cfg.length))
    assert torch.equal(maps["argmax"].nansum(-1), torch.ones(cfg.length))
    t = sample_trials(cfg, 1, torch.Generator().manual_seed(3))
    prev = torch.cat([torch.zeros(1, 1, cfg.dim), t.tokens[:, :-1]], dim=1)
    q = ((cfg.a * prev + t.tokens) / (cfg.a + 1))[0]
    own = maps["scores"].diagonal()
    torch.testing.assert_close(own[:-1], (q[:-1] ** 2).sum(-1))
    torch.testing.assert_close(own[-1], q[-1] @ t.keys[0, -1])
    assert own[-1] < (q[-1] ** 2).sum() / 3  # dark: far below a self-match
    assert answer["picked"] == int(maps["argmax"][-1].nan_to_num(0).argmax())


def test_noise_scale_default_is_one_over_dim():
    cfg = AMICLConfig(dim=50, classes=1, eps=1.0)
    t = sample_trials(cfg, 2000, torch.Generator().manual_seed(2))
    # classes=1: every item is (mu + eta)/sqrt(2) around one mean: the spread is eta's.
    # Two items differ by (eta1 - eta2)/sqrt(2): std sqrt(2) * sigma / sqrt(2) = sigma.
    diff = t.tokens[:, 0] - t.tokens[:, 2]
    assert abs(diff.std().item() - 1 / 50) < 0.002
    t2 = sample_trials(cfg.with_(noise_std=50**-0.5), 2000, torch.Generator().manual_seed(2))
    assert abs((t2.tokens[:, 0] - t2.tokens[:, 2]).std().item() - 50**-0.5) < 0.01


def test_similarities_match_scipy():
    g = torch.Generator().manual_seed(3)
    q, k = torch.randn(1, 3, 7, generator=g), torch.randn(1, 5, 7, generator=g)
    qn, kn = q[0].double().numpy(), k[0].double().numpy()
    ref = {
        "dot": qn @ kn.T,
        "pearson": 1 - cdist(qn, kn, "correlation"),
        "euclidean": -cdist(qn, kn, "euclidean"),
        "manhattan": -cdist(qn, kn, "cityblock"),
    }
    for kind, expected in ref.items():
        np.testing.assert_allclose(
            similarity(q, k, kind)[0].numpy(), expected, rtol=1e-5, atol=1e-5
        )


def test_sharp_softmax_equals_argmax():
    base = AMICLConfig(a=1.1, classes=20)
    t = sample_trials(base, 500, torch.Generator().manual_seed(4))
    hard = correct(base, t)
    sharp = base.with_(readout="softmax", beta=1e5)
    top2 = similarity(t.query[:, None], t.keys, "dot")[:, 0].topk(2).values
    clear = top2[:, 0] - top2[:, 1] > 1e-3  # no near-tie: softmax at beta 1e5 is one-hot
    assert clear.float().mean() > 0.5  # repeated classes (K=20) tie exactly
    torch.testing.assert_close(readout(sharp, t)[clear], readout(base, t)[clear], rtol=0, atol=1e-5)
    on_label = (readout(base, t)[:, None] == t.context_labels).all(-1).any(-1) & clear
    assert torch.equal(correct(sharp, t)[on_label], hard[on_label])
    assert correct(base.with_(readout="softmax", beta=1e-6), t).float().mean() < hard.float().mean()


def test_pearson_plateau_below_dot():
    cfg = AMICLConfig(a=2.0, classes=50)
    dot, pearson = run(cfg, 5000).accuracy, run(cfg.with_(similarity="pearson"), 5000).accuracy
    assert dot > 0.99 and 0.8 < pearson < 0.93  # paper: plateau near 0.87


def test_seed_determinism():
    cfg = AMICLConfig(a=1.1)
    assert run(cfg, 3000, seed=5).correct == run(cfg, 3000, seed=5).correct
    assert run(cfg, 3000, seed=5).correct != run(cfg, 3000, seed=6).correct


def test_chunked_run_is_consistent():
    """Chunking changes the draw but not the estimate."""
    cfg = AMICLConfig(a=1.25)
    big = run(cfg, 8000, seed=1, method="vectors")
    small = run(cfg, 8000, seed=1, chunk=333, method="vectors")
    assert abs(big.accuracy - small.accuracy) < 4 * (big.stderr**2 + small.stderr**2) ** 0.5


@pytest.mark.parametrize(
    "kw",
    [
        {"length": 21},
        {"length": 2},
        {"dim": 0},
        {"classes": -1},
        {"a": -1.0},
        {"similarity": "cos"},
        {"readout": "mean"},
        {"beta": 0.0},
        {"eps": float("nan")},
        {"noise_std": -1.0},
    ],
)
def test_bad_config_raises(kw):
    with pytest.raises(ConfigError):
        AMICLConfig(**kw)


@settings(max_examples=40, deadline=None)
@given(
    dim=st.integers(1, 12),
    classes=st.integers(1, 8),
    pairs=st.integers(2, 8),
    a=st.floats(0, 4),
    sim=st.sampled_from(amicl.SIMILARITIES),
    read=st.sampled_from(amicl.READOUTS),
)
def test_any_valid_config_runs(dim, classes, pairs, a, sim, read):
    cfg = AMICLConfig(a=a, dim=dim, classes=classes, length=2 * pairs, similarity=sim, readout=read)
    res = run(cfg, 50, seed=0)
    assert 0.0 <= res.accuracy <= 1.0 and res.trials == 50


def test_many_trials_stream_in_bounded_memory(monkeypatch):
    """`amicl run --trials 100000000000` grew memory for minutes: every chunk's task was
    queued at once. Chunks now go to the threads a window at a time (here: tiny chunks, so
    that many are queued)."""
    import tracemalloc

    from attnstreams import amicl

    monkeypatch.setattr(amicl, "PROJECTED_CHUNK", 64)
    cfg = amicl.AMICLConfig(length=4)
    peaks = []
    for trials in (40_000, 160_000):
        tracemalloc.start()
        res = amicl.run(cfg, trials, seed=0, threads=2)
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
        assert res.trials == trials
    assert peaks[1] < 1.5 * peaks[0], peaks
    one = amicl.run(cfg, 160_000, seed=0, threads=1)
    assert one.correct == res.correct  # the count does not depend on the threads
