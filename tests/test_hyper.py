"""Hyper-connections (models/residual.py: `hc`, `dhc`, `mhc`) in GPT: what a new model computes,
the papers' equations written out, the KV cache, torch.compile, gradients, DDP/FSDP, stacks,
weight decay and the names."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from residual_helpers import (
    check_cache,
    check_compiled,
    check_stack,
    embed,
    gpt,
    perturb,
    residual_grads,
    sublayers,
    tokens,
)

from attnstreams.experiments.lm.train import (
    LMTrainConfig,
    _decays,
)
from attnstreams.models.gpt import GPT, GPTConfig, preset
from attnstreams.models.residual import ResidualConfig
from attnstreams.models.stack import ModelStack
from attnstreams.run.config import ConfigError

# vmap runs CPU attention one model at a time (PyTorch has no CPU batching rule for it)
pytestmark = pytest.mark.filterwarnings("ignore:There is a performance drop:UserWarning")
HYPER = ["hc", "hc-n1", "hc-n2", "dhc", "dhc-n1", "dhc-n2", "mhc", "mhc-n1", "mhc-n2"]


def final_norm_input(model: GPT, idx: torch.Tensor) -> torch.Tensor:
    """What the final norm reads in model(idx)."""
    seen = []
    handle = model.ln_f.register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    try:
        model(idx)
    finally:
        handle.remove()
    return seen[0]


@pytest.mark.parametrize("name", ["tiny", "modern-tiny"])
@pytest.mark.parametrize(
    "residual,stream",
    [(r, "none") for r in ["hc", "hc-n1", "hc-n2", "dhc", "dhc-n1", "dhc-n2"]]
    + [("dhc-n2", "value-learned")],
)
def test_a_new_hyper_connection_is_the_plain_model(name, residual, stream):
    """Same seed: the same other weights (nothing drawn), and at the paper's start
    (A_m = e_{k mod n}, A_r = I, B = 1; DHC's W = 0) every copy is the plain stream exactly, so
    the final norm reads the sum of n copies of the plain model's last stream: the plain model's
    logits for n = 1, the plain head on that sum otherwise."""
    plain, hyper = gpt(name, "plain", stream), gpt(name, residual, stream)
    state = hyper.state_dict()
    assert all(torch.equal(v, state[k]) for k, v in plain.state_dict().items())
    assert {k for k in state if k not in plain.state_dict()} and all(
        k.startswith("residual.") for k in state if k not in plain.state_dict()
    )
    n = ResidualConfig.parse(residual).n
    x = tokens((2, 24))
    last = final_norm_input(plain, x)
    summed = torch.stack([last] * n, dim=-2).sum(-2)
    assert torch.equal(final_norm_input(hyper, x), summed)
    want = plain.lm_head(plain.ln_f(summed))[..., :512]
    got = hyper(x)[0]
    assert torch.equal(got, want)
    if n == 1:
        assert torch.equal(got, plain(x)[0])
    else:  # the final norm's eps: LN(n x) is not LN(x)
        assert not torch.equal(got, plain(x)[0])


def plain_reading_scaled(plain: GPT, idx: torch.Tensor, scale: float, n: int) -> torch.Tensor:
    """The plain model whose sublayers read scale times the stream, the final norm n times it."""
    x = plain.wte(idx)
    if plain.wpe is not None:
        x = x + plain.wpe(torch.arange(idx.size(1)))
    for block in plain.blocks:
        a, _ = block.attend(scale * x)
        x = x + a
        x = x + block.feed(scale * x)
    return plain.lm_head(plain.ln_f(n * x))[..., :512]


@pytest.mark.parametrize("name", ["tiny", "modern-tiny"])
@pytest.mark.parametrize("n", [1, 2, 4])
def test_a_new_mhc_is_the_plain_model_reading_a_multiple(name, n):
    """mHC's start (phi = 0; b_pre = e_{k mod n}, b_res = I, b_post = 0) gives
    H_pre = sigmoid(e_{k mod n}), H_post = 1, H_res = ((e - 1) I + J) / (e + n - 1): every copy
    is the stream of the plain model whose sublayers read sigmoid(1) + (n - 1) / 2 times it,
    and the final norm reads n times it."""
    plain, hyper = gpt(name, "plain"), gpt(name, f"mhc-n{n}")
    state = hyper.state_dict()
    assert all(torch.equal(v, state[k]) for k, v in plain.state_dict().items())
    X = torch.randn(2, 5, n, 64, dtype=torch.float64)
    e = torch.e
    for k in (0, 3):
        pre, post, res = hyper.residual.maps(X, k)
        one_hot = torch.nn.functional.one_hot(torch.tensor(k % n), n).double()
        assert torch.equal(pre, torch.sigmoid(one_hot).expand_as(pre))
        assert torch.equal(post, torch.ones_like(post))
        want = ((e - 1) * torch.eye(n, dtype=torch.float64) + 1) / (e + n - 1)
        torch.testing.assert_close(res, want.expand_as(res), rtol=0, atol=1e-15)
    x = tokens((2, 24))
    c = torch.sigmoid(torch.tensor(1.0, dtype=torch.float64)).item() + (n - 1) / 2
    got = hyper(x)[0]
    torch.testing.assert_close(got, plain_reading_scaled(plain, x, c, n), rtol=0, atol=1e-12)
    assert (got - plain_reading_scaled(plain, x, 1.0, n)).abs().max() > 1e-6


def reference_hc(model: GPT, idx: torch.Tensor) -> torch.Tensor:
    """Hyper-connections as Zhu et al. write them, stream by stream: H = n copies of the
    embedding output; sublayer k: A_m, A_r, B its static matrices, plus for DHC
    s_a tanh(norm(H) W_a) and s_b tanh(norm(H) W_b) per position (norm: LayerNorm over d, no
    weights); h = sum_s A_m[s] H_s, H'_j = B_j T(h) + sum_s A_r[s, j] H_s; the final norm reads
    sum_j H_j."""
    r = model.residual
    n = r.n
    H = [embed(model, idx) for _ in range(n)]
    for k, f in sublayers(model):
        a_m = [r.static_alpha[k, s, 0] for s in range(n)]
        a_r = [[r.static_alpha[k, s, 1 + j] for j in range(n)] for s in range(n)]
        b = [r.static_beta[k, j] for j in range(n)]
        if r.dynamic:
            normed = [F.layer_norm(h, h.shape[-1:]) for h in H]
            wa, wb, sa, sb = (
                r.dynamic_alpha[k],
                r.dynamic_beta[k],
                r.alpha_scale[k],
                r.beta_scale[k],
            )
            a_m = [a_m[s] + sa * torch.tanh(normed[s] @ wa[:, 0]) for s in range(n)]
            a_r = [[a_r[s][j] + sa * torch.tanh(normed[s] @ wa[:, 1 + j]) for j in range(n)]
                   for s in range(n)]  # fmt: skip
            b = [b[j] + sb * torch.tanh(normed[j] @ wb) for j in range(n)]
        scalar = (lambda c: c) if not r.dynamic else (lambda c: c.unsqueeze(-1))
        h = sum(scalar(a_m[s]) * H[s] for s in range(n))
        out = f(h)
        H = [scalar(b[j]) * out + sum(scalar(a_r[s][j]) * H[s] for s in range(n)) for j in range(n)]
    return model.lm_head(model.ln_f(sum(H)))[..., :512]


def reference_mhc(model: GPT, idx: torch.Tensor) -> torch.Tensor:
    """mHC as its paper writes it: x' = RMSNorm(vec(X)); H_pre = sigmoid(a_pre x' phi_pre +
    b_pre), H_post = 2 sigmoid(a_post x' phi_post + b_post), H_res = Sinkhorn-Knopp of
    exp(a_res mat(x' phi_res) + b_res) (20 times rows then columns to sum 1);
    X' = H_res X + H_post^T T(H_pre X); the final norm reads the sum of the rows of X."""
    r = model.residual
    n = r.n
    X = [embed(model, idx) for _ in range(n)]
    for k, f in sublayers(model):
        flat = torch.cat(X, dim=-1)
        flat = flat / (flat.pow(2).mean(-1, keepdim=True) + 1e-6).sqrt()
        z = flat @ r.phi[k]
        a = r.gates[k]
        pre = [torch.sigmoid(a[0] * z[..., j] + r.b_pre[k, j]) for j in range(n)]
        post = [2 * torch.sigmoid(a[1] * z[..., n + j] + r.b_post[k, j]) for j in range(n)]
        m = [[torch.exp(a[2] * z[..., 2 * n + i * n + j] + r.b_res[k, i, j]) for j in range(n)]
             for i in range(n)]  # fmt: skip
        for _ in range(20):
            m = [[m[i][j] / sum(m[i]) for j in range(n)] for i in range(n)]
            cols = [sum(m[i][j] for i in range(n)) for j in range(n)]
            m = [[m[i][j] / cols[j] for j in range(n)] for i in range(n)]
        out = f(sum(pre[j].unsqueeze(-1) * X[j] for j in range(n)))
        X = [sum(m[i][j].unsqueeze(-1) * X[j] for j in range(n)) + post[i].unsqueeze(-1) * out
             for i in range(n)]  # fmt: skip
    return model.lm_head(model.ln_f(sum(X)))[..., :512]


@pytest.mark.parametrize("name", ["tiny", "modern-tiny"])
@pytest.mark.parametrize("residual", ["hc", "hc-n2", "dhc", "dhc-n1", "mhc", "mhc-n2", "mhc-n1"])
def test_weights_are_used_as_the_papers_write(name, residual):
    model = gpt(name, residual)
    x = tokens((2, 24))
    start = model(x)[0]
    perturb(model)
    with torch.no_grad():
        got = model(x)[0]
        want = (reference_mhc if residual.startswith("mhc") else reference_hc)(model, x)
    assert (got - start).abs().max() > 1e-3  # the weights are read
    torch.testing.assert_close(got, want, rtol=0, atol=1e-10)


def test_sinkhorn_gives_a_doubly_stochastic_residual_matrix():
    model = gpt("tiny", "mhc")
    perturb(model)
    X = torch.randn(3, 7, 4, 64, dtype=torch.float64)
    pre, post, res = model.residual.maps(X, 5)
    assert (pre > 0).all() and (pre < 1).all() and (post > 0).all() and (post < 2).all()
    assert (res > 0).all()
    torch.testing.assert_close(res.sum(-2), torch.ones(3, 7, 4, dtype=torch.float64))
    torch.testing.assert_close(res.sum(-1), torch.ones(3, 7, 4, dtype=torch.float64))


@pytest.mark.parametrize("name", ["tiny", "modern-tiny"])
@pytest.mark.parametrize(
    "residual,stream", [("dhc", "none"), ("mhc-n2", "none"), ("hc-n2", "value-learned")]
)
def test_kv_cache_decoding_equals_full_forward(name, residual, stream):
    """A prefix, a chunk of 2, then token by token through the cache: the full forward."""
    model = gpt(name, residual, stream).eval()
    perturb(model)
    check_cache(model)


@pytest.mark.parametrize("residual", ["dhc-n2", "mhc-n2"])
def test_compiled_equals_eager(residual):
    """torch.compile (aot_eager: the traced graph, no Inductor code) gives eager's loss and
    gradients, the hyper-connection weights' included."""
    model = gpt("modern-tiny", residual, n_layer=2)  # 2: quicker to trace
    perturb(model)
    check_compiled(model)


def zero_at_start(model: GPT) -> dict[str, torch.Tensor]:
    """The gradient entries that are zero at the start by construction (True where zero): DHC's
    scales multiply tanh(norm(H) W) with W = 0; mHC's gates multiply x' phi with phi = 0, and
    with every copy equal, a change of H_res's logits moves no copy (a doubly stochastic matrix
    applied to n equal rows gives them back): b_res and the columns of phi that feed H_res get
    0 up to rounding (Sinkhorn's result is doubly stochastic to rounding)."""
    r, cfg = model.residual, model.cfg.residual
    zero = {n: torch.zeros_like(p, dtype=torch.bool) for n, p in r.named_parameters()}
    if cfg.kind == "dhc":
        zero["alpha_scale"][:] = zero["beta_scale"][:] = True
    if cfg.kind == "mhc":
        zero["gates"][:] = zero["b_res"][:] = True
        zero["phi"][..., 2 * cfg.n :] = True
    return zero


@pytest.mark.parametrize("residual", ["hc", "hc-n2", "dhc", "dhc-n1", "mhc", "mhc-n2"])
def test_every_weight_gets_a_gradient(residual):
    """From the start every gradient entry but those zero_at_start (0 up to rounding: below
    1e-15, where the others are above) is nonzero; off the start (perturbed), every entry is."""
    model = gpt("tiny", residual)
    zero = zero_at_start(model)
    grads = residual_grads(model)
    assert grads and all(torch.equal(g.abs() < 1e-15, zero[n]) for n, g in grads.items()), grads
    model = gpt("tiny", residual)
    perturb(model)
    grads = residual_grads(model)
    assert all((g != 0).all() for g in grads.values()), grads


@pytest.mark.parametrize("name,residual", [("tiny", "dhc-n2"), ("modern-tiny", "mhc-n2")])
def test_a_stack_computes_what_each_model_computes_alone(name, residual):
    check_stack(name, residual, perturb)


def test_a_compiled_stack_of_mhc_models_computes_the_eager_stack():
    """Compiled, mHC's maps are a nested compile region (traced once for all sublayers), which
    vmap cannot batch; a stack's vmapped copy of the model turns it off (models/stack.py), so a
    compiled stack traces, and computes what the eager stack does."""
    alone = [gpt("tiny", "mhc-n2", n_layer=2, seed=s) for s in range(2)]
    for i, m in enumerate(alone):
        perturb(m, 10 + i)
    stacked = ModelStack(alone)
    x, y = tokens((2, 2, 16), 1), tokens((2, 2, 16), 2)
    _, want = stacked(x, y)
    _, got = torch.compile(stacked, backend="aot_eager", fullgraph=True)(x, y)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    assert alone[0].residual.compile_once and not stacked._base[0].residual.compile_once


@pytest.mark.parametrize("residual", ["hc", "dhc", "mhc"])
def test_hyper_connection_weights_are_not_decayed(residual):
    model = gpt("tiny", residual)
    decayed = {n for n, p in model.named_parameters() if _decays(n, p)}
    assert decayed and not any(n.startswith("residual.") for n in decayed)
    assert any(p.dim() >= 2 for p in model.residual.parameters())  # would decay by shape


@pytest.mark.parametrize(
    "spec,name",
    [("hc", "hc"), ("hc-n4", "hc"), ("hc-n2", "hc-n2"), ("dhc-n1", "dhc-n1"), ("mhc", "mhc"),
     ("mhc-n8", "mhc-n8"), (" dhc-n3 ", "dhc-n3")],
)  # fmt: skip
def test_parse_name_roundtrip(spec, name):
    cfg = ResidualConfig.parse(spec)
    assert cfg.name == name and ResidualConfig.parse(cfg.name) == cfg and cfg.active
    model_cfg = preset("tiny", residual=spec)
    saved = model_cfg.to_dict()
    assert saved["residual"] == name and GPTConfig(**saved) == model_cfg


def test_init_from_takes_no_hyper_connection():
    with pytest.raises(ConfigError, match="no --residual"):
        LMTrainConfig(residual="dhc", init_from="some/folder")
