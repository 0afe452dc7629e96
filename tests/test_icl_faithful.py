"""Experiment 1 is the authors' experiment: task, model, update and accuracy, checked against a
float64 numpy statement of their code's math (`authors-code/toy-Transformer/`:
`transformer_v2_v_residuals_{V,K,Q}1.py`, `datasets_v2.py`) and against statistics measured on
their generator. The reference below is written from the math, not from their code."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from attnstreams.experiments.icl.task import ICLTaskConfig, make_task, splits, token_statistics
from attnstreams.experiments.icl.train import ICLGrid, ICLTrainConfig, init_model
from attnstreams.models.toy import ToyICL, ToyICLConfig

# -- the reference: the authors' model in numpy, float64 ----------------------------------------
# params: q1 k1 v1 q2 k2 v2 (150 x 150: projection = x @ W^T), w1 b1 w2 b2 w3 b3 (ReLU layers,
# b one scalar each), r (32 x 150 read-out, no bias). Attention has no scaling; key i serves
# query j when i <= j; layer 2 adds layer 1's own projection of the streamed kind.


def _softmax(z, axis=-1):
    z = z - z.max(axis, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis, keepdims=True)


def ref_forward(p, x, stream="none"):
    """Logits (B, 32) and the cache for ref_grads."""
    T = x.shape[1]
    mask = np.where(np.arange(T)[:, None] >= np.arange(T)[None, :], 0.0, -np.inf)  # [query, key]
    cache, h, prev = {"x0": x}, x, None
    for n in (1, 2):
        proj = {k: h @ p[f"{k}{n}"].T for k in "qkv"}
        used = dict(proj)
        if n == 2 and stream != "none":
            used[stream[0]] = proj[stream[0]] + prev[stream[0]]
        probs = _softmax(used["q"] @ used["k"].transpose(0, 2, 1) + mask)  # (B, query, key)
        cache[n] = (h, used, probs)
        h = h + probs @ used["v"]
        prev = proj
    z, acts = h[:, -1], []
    for n in (1, 2, 3):
        z = np.maximum(z @ p[f"w{n}"].T + p[f"b{n}"], 0.0)
        acts.append(z)
    cache["acts"], cache["h2"] = acts, h
    return z @ p["r"].T, cache


def ref_loss(p, x, y, stream="none"):
    logits, _ = ref_forward(p, x, stream)
    logz = logits.max(-1) + np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1))
    return float(np.mean(logz - logits[np.arange(len(y)), y]))


def ref_grads(p, x, y, stream="none"):
    """d mean-cross-entropy / d params, by hand."""
    logits, c = ref_forward(p, x, stream)
    B = len(y)
    g = {}
    dz = _softmax(logits)
    dz[np.arange(B), y] -= 1.0
    dz /= B
    acts = c["acts"]
    g["r"] = dz.T @ acts[2]
    d = dz @ p["r"]
    for n in (3, 2, 1):
        d = d * (acts[n - 1] > 0)
        below = acts[n - 2] if n > 1 else c["h2"][:, -1]
        g[f"w{n}"], g[f"b{n}"] = d.T @ below, np.array([d.sum()])
        d = d @ p[f"w{n}"]
    dh = np.zeros_like(c["h2"])
    dh[:, -1] = d
    carry = None  # gradient reaching layer 1's streamed projection through layer 2
    for n in (2, 1):
        h, used, probs = c[n]
        dv = probs.transpose(0, 2, 1) @ dh
        dprobs = dh @ used["v"].transpose(0, 2, 1)
        ds = probs * (dprobs - (dprobs * probs).sum(-1, keepdims=True))
        dused = {"q": ds @ used["k"], "k": ds.transpose(0, 2, 1) @ used["q"], "v": dv}
        if n == 1 and carry is not None:
            dused[stream[0]] = dused[stream[0]] + carry
        if n == 2 and stream != "none":
            carry = dused[stream[0]]
        dx = dh.copy()
        for k in "qkv":
            g[f"{k}{n}"] = np.einsum("bte,btd->ed", dused[k], h)
            dx += dused[k] @ p[f"{k}{n}"]
        dh = dx
    return g


def ref_update(p, g, lr=0.01, wd=1e-6):
    return {k: (1 - wd) * p[k] - lr * g[k] for k in p}


def ref_params(rng, d=150, labels=32):
    s = 85**-0.5
    p = {f"{k}{n}": rng.normal(0, s, (d, d)) for n in (1, 2) for k in "qkv"}
    for n in (1, 2, 3):
        p[f"w{n}"] = rng.normal(0, math.sqrt(2 / d), (d, d))
        p[f"b{n}"] = rng.normal(0, d**-0.5, (1,))
    p["r"] = rng.normal(0, d**-0.5, (labels, d))
    return p


def to_state(p) -> dict[str, torch.Tensor]:
    """The reference's parameters in ToyICL's names."""
    t = lambda a: torch.tensor(a, dtype=torch.float64)  # noqa: E731
    s = {
        f"attn.{n - 1}.qkv.weight": t(np.concatenate([p[f"{k}{n}"] for k in "qkv"])) for n in (1, 2)
    }
    for n in (1, 2, 3):
        s[f"mlp.{n - 1}.weight"], s[f"mlp.{n - 1}.bias"] = t(p[f"w{n}"]), t(p[f"b{n}"])
    s["readout.weight"] = t(p["r"])
    return s


def from_state(s) -> dict[str, np.ndarray]:
    p = {}
    for n in (1, 2):
        for k, w in zip("qkv", s[f"attn.{n - 1}.qkv.weight"].chunk(3), strict=True):
            p[f"{k}{n}"] = w.numpy()
    for n in (1, 2, 3):
        p[f"w{n}"], p[f"b{n}"] = s[f"mlp.{n - 1}.weight"].numpy(), s[f"mlp.{n - 1}.bias"].numpy()
    p["r"] = s["readout.weight"].numpy()
    return p


def authors_batch(seed=0, n=6, split="mixed"):
    task = make_task(ICLTaskConfig(), seed)
    x, y = task.sample(1, n, splits(task.cfg)[split])
    return x[0].double(), y[0]


def test_reference_gradients_match_finite_differences():
    """The hand-written reference backward pass is itself right (central differences)."""
    rng = np.random.default_rng(0)
    p = ref_params(rng)
    x, y = (t.numpy() for t in authors_batch(n=4))
    for stream in ("none", "value", "key", "query"):
        g = ref_grads(p, x, y, stream)
        for name in ("q1", "k1", "v1", "q2", "v2", "k2", "w1", "b2", "w3", "r"):
            idx = tuple(rng.integers(0, s) for s in p[name].shape)
            h = 1e-6
            up, down = {k: v.copy() for k, v in p.items()}, {k: v.copy() for k, v in p.items()}
            up[name][idx] += h
            down[name][idx] -= h
            fd = (ref_loss(up, x, y, stream) - ref_loss(down, x, y, stream)) / (2 * h)
            assert abs(fd - g[name][idx]) <= 1e-6 * max(1.0, abs(fd)), (stream, name)


@pytest.mark.parametrize("stream", ["none", "value", "key", "query"])
def test_forward_equals_the_authors_math(stream):
    p = ref_params(np.random.default_rng(1))
    model = ToyICL(ToyICLConfig(stream=stream)).double()
    model.load_state_dict(to_state(p))
    x, _ = authors_batch(n=16)
    ref, _ = ref_forward(p, x.numpy(), stream)
    np.testing.assert_allclose(model(x).detach().numpy(), ref, rtol=1e-11, atol=1e-12)


def test_one_grid_step_equals_the_authors_update():
    """Same parameters and batch: one step of the grid (the stacked engine, every variant of
    the paper at once) equals (1 - 1e-6) p - 0.01 g of the reference, to float64 rounding."""
    variants = ["none", "value", "key", "query"]
    cfg = ICLTrainConfig(steps=1, eval_size=8)
    grid = ICLGrid(variants, [0], cfg, dtype=torch.float64)
    p = ref_params(np.random.default_rng(2))
    for v in range(len(variants)):
        grid.model.load_run(v, 0, to_state(p))
    x, y = authors_batch(n=128)
    grid.train_step((x[None], y[None]))
    for v, stream in enumerate(variants):
        want = ref_update(p, ref_grads(p, x.numpy(), y.numpy(), stream))
        got = from_state(grid.model.run_state(v, 0))
        for k in want:
            np.testing.assert_allclose(
                got[k], want[k], rtol=1e-12, atol=1e-14, err_msg=f"{stream} {k}"
            )
            assert not np.allclose(got[k], p[k], rtol=0, atol=0), k  # it moved


def test_weight_decay_is_decoupled_per_step():
    """With a zero gradient the update is p <- (1 - wd) p exactly: 1e-6 a step, not lr * 1e-6."""
    cfg = ICLTrainConfig(steps=1, eval_size=8, lr=1e-3, weight_decay=1e-3)
    grid = ICLGrid(["none"], [0], cfg, dtype=torch.float64)
    before = grid.model.run_state(0, 0)
    x, y = authors_batch(n=4)
    with torch.no_grad():  # read-out zero: no gradient reaches any weight
        grid.model.params["readout.weight"].zero_()
    grid.train_step((x[None], y[None]))
    after = grid.model.run_state(0, 0)
    for k in before:
        if k != "readout.weight":
            torch.testing.assert_close(after[k], before[k] * (1 - 1e-3), rtol=1e-15, atol=0)


def test_flipped_accuracy_is_the_authors():
    """ICL-flipped: the authors count argmax == (true label + 1) mod L; ours compares with the
    flipped target. Same number, from our generator's classes."""
    grid = ICLGrid(["value"], [3], ICLTrainConfig(steps=1, eval_size=500), dtype=torch.float64)
    task = make_task(grid.cfg.task, 3)
    x, y, meta = task.sample(1, 500, splits(task.cfg)["icl_flipped"], with_meta=True)
    true_label = meta["classes"][:, -1] % task.cfg.labels
    assert torch.equal(y[0], (true_label + 1) % task.cfg.labels)
    model = grid.run_model("value", 3)
    p = from_state({k: v.detach() for k, v in model.state_dict().items()})
    logits, _ = ref_forward(p, x[0].double().numpy(), "value")
    theirs = int(np.sum(logits.argmax(-1) == (true_label.numpy() + 1) % 32))
    unflipped = int(np.sum(logits.argmax(-1) == true_label.numpy()))
    grid.tests["icl_flipped"] = (grid.model.pad(x).double(), y)
    ours = round(float(grid.evaluate()[0, 0, 2]) * 500)
    assert ours == theirs != unflipped


# -- initialisation -------------------------------------------------------------------------------


def test_initialisation_is_the_authors():
    """Attention N(0, 1/85); ReLU layers He-normal with one scalar bias N(0, 1/150); read-out
    without bias, N(0, 1/150). Shared keys (ToyICLConfig docstring), as measured on their
    init_network_params under JAX 0.10 (partitionable threefry): b2 == b3 == W3[0, 0] / sqrt(2)
    and read-out == W3[:32] / sqrt(2); under the legacy threefry only b2 == b3."""
    cfg = ICLTrainConfig()
    torch.manual_seed(0)
    m = init_model(cfg, "value", 0)
    shapes = {n: tuple(p.shape) for n, p in m.named_parameters()}
    assert shapes["mlp.0.bias"] == shapes["mlp.2.bias"] == (1,)
    assert "readout.bias" not in shapes and shapes["readout.weight"] == (32, 150)
    for layer in m.attn:
        assert abs(layer.qkv.weight.std().item() - 85**-0.5) < 0.002
    for layer in m.mlp:
        assert abs(layer.weight.std().item() - math.sqrt(2 / 150)) < 0.002
    w3, r = m.mlp[2].weight.detach(), m.readout.weight.detach()
    assert m.mlp[1].bias.item() == m.mlp[2].bias.item()
    assert m.mlp[2].bias.item() == pytest.approx(w3[0, 0].item() / math.sqrt(2), rel=1e-6)
    torch.testing.assert_close(r, w3[:32] / math.sqrt(2))
    legacy = ToyICL(ToyICLConfig(init="jax-legacy"))
    assert legacy.mlp[1].bias.item() == legacy.mlp[2].bias.item()
    assert (legacy.readout.weight - legacy.mlp[2].weight[:32] / math.sqrt(2)).abs().max() > 0.1
    assert abs(legacy.readout.weight.std().item() - 150**-0.5) < 0.004
    free = ToyICL(ToyICLConfig(init="independent"))
    assert free.mlp[1].bias.item() != free.mlp[2].bias.item()
    b = torch.stack([ToyICL(ToyICLConfig()).mlp[0].bias.detach() for _ in range(400)])
    assert abs(b.std().item() - 150**-0.5) < 0.012  # scalar biases N(0, 1/150)


# -- the generator, against statistics of the authors' -------------------------------------------

# sidebyside/task_stats.py on the authors' datasets_v2.py (numpy seed 0, 20,000 sequences a mix;
# numpy 2.x, jax 0.10.2, 2026-12-01).
AUTHORS = {
    "train": {
        "share_novel": 0.494,
        "share_known_bursty": 0.2543,
        "share_known_iid": 0.2517,
        "query_in_context_novel": 1.0,
        "query_in_context_known_bursty": 1.0,
        "query_in_context_known_iid": 0.0147,
        "distinct_labels_novel": 4.0,
        "distinct_labels_known_bursty": 4.0,
        "distinct_labels_known_iid": 7.1774,
        "novel_bursty": 1.0,
        "item_norm_mean": 0.9975,
        "noise_std": 0.10846,
        "known_label_matches_class": 1.0,
        "offset_min": 0,
        "offset_max": 48,
        "offset_mean": 24.01,
        "position_one_hot": 1.0,
    },
    "icl": {
        "share_novel": 1.0,
        "novel_bursty": 1.0,
        "query_in_context_novel": 1.0,
        "distinct_labels_novel": 4.0,
        "offset_max": 48,
    },
    "icl_flipped": {
        "share_known_bursty": 1.0,
        "query_in_context_known_bursty": 1.0,
        "known_label_matches_class": 0.0,
        "noise_std": 0.10844,
    },
    "iwl": {
        "share_known_iid": 1.0,
        "query_in_context_known_iid": 0.0146,
        "distinct_labels_known_iid": 7.1911,
        "known_label_matches_class": 1.0,
    },
}
TOLERANCE = {  # ~4 standard errors at 20,000 sequences (class means differ between seeds)
    "share": 0.02,
    "query_in_context_known_iid": 0.007,
    "distinct_labels_known_iid": 0.05,
    "item_norm_mean": 0.015,
    "noise_std": 0.001,
    "offset_mean": 0.5,
}
SPLIT = {"train": "mixed", "icl": "icl", "icl_flipped": "icl_flipped", "iwl": "iwl"}


@pytest.mark.parametrize("mix", list(AUTHORS))
def test_generator_statistics_equal_the_authors(mix):
    task = make_task(ICLTaskConfig(), 11)
    x, _ = task.sample(1, 20_000, splits(task.cfg)[SPLIT[mix]])
    ours = token_statistics(x[0], task.means, task.label_vecs)
    assert ours["label_noise_max"] < 1e-6  # labels carry no noise
    for name, theirs in AUTHORS[mix].items():
        tol = TOLERANCE.get(name, TOLERANCE["share"] if name.startswith("share") else 1e-9)
        assert abs(ours[name] - theirs) <= tol, (mix, name, ours[name], theirs)


def test_defaults_are_the_authors_and_deviations_are_named():
    from dataclasses import replace

    assert ICLTrainConfig().deviations() == {}
    assert ICLTrainConfig(precision="tf32").deviations() == {}  # JAX's GPU default
    cfg = ICLTrainConfig(init="independent", scaled=True, precision="bf16")
    cfg = replace(cfg, task=replace(cfg.task, no_repeats=False))
    assert cfg.deviations() == {
        "init": ("independent", "jax"),
        "scaled": (True, False),
        "precision": ("bf16", "float32"),
        "task.no_repeats": (False, True),
    }
