"""Attention Residuals (models/residual.py: `attnres`, `attnres-bK`; Kimi Team 2026, arXiv
2603.15031) in GPT: what a new model computes, the paper's equations written out, where the
block boundaries fall, the one-block limit, the KV cache, torch.compile, gradients, DDP/FSDP,
stacks, weight decay and the names."""

from __future__ import annotations

import pytest
import torch
from residual_helpers import (
    autocast_final_norm_input,
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

from attnstreams.experiments.lm.train import _decays
from attnstreams.models.gpt import GPT, GPTConfig, preset
from attnstreams.models.residual import AttentionResiduals, ResidualConfig, residual_module
from attnstreams.run.config import ConfigError

# vmap runs CPU attention one model at a time (PyTorch has no CPU batching rule for it)
pytestmark = pytest.mark.filterwarnings("ignore:There is a performance drop:UserWarning")
# tiny and modern-tiny have 4 layers, 8 sublayers: b1, b2 and b3 (a shorter last block), b4
FORMS = ["attnres", "attnres-b1", "attnres-b2", "attnres-b3", "attnres-b4"]


def sources_of(layer: int, values: list, size: int | None) -> list:
    """The sources the paper's layer l = `layer` (1-based, a sublayer) reads, from
    values = [v_0, v_1, ..., v_{l-1}] (v_0 the embedding, v_j layer j's output). Full (size
    None, Eq. 3-4): all of them. Block (Eq. 5-6): layer l is the i-th of block n = ceil(l / S),
    B_m = layers (m-1)S+1 ... mS; [b_0 = v_0, b_1, ..., b_{n-1}] with b_m = sum_{j in B_m} v_j,
    and for i >= 2 b_n^{i-1} = sum of v_j over the layers of B_n before l."""
    if size is None:
        return values[:layer]
    n = -(-layer // size)
    out = [values[0]] + [sum(values[(m - 1) * size + 1 : m * size + 1]) for m in range(1, n)]
    if layer > (n - 1) * size + 1:
        out.append(sum(values[(n - 1) * size + 1 : layer]))
    return out


def block_size(residual: str) -> int | None:
    """S, sublayers per block: None for the full form."""
    blocks = ResidualConfig.parse(residual).blocks
    return None if blocks is None else 2 * blocks


def reference(model: GPT, idx: torch.Tensor, residual: str, mean: bool = False) -> torch.Tensor:
    """Attention Residuals as the paper writes them: layer l (`layer`, 1-based) reads
    h_l = sum_i alpha_{i->l} V_i, alpha = softmax_i(w_l^T RMSNorm(V_i)), RMSNorm(x) =
    g * x / sqrt(mean(x^2) + eps) with the layer's gain g; v_l = f_l(h_l); after the last layer
    one more such attention over all sources (the final output's own w and g), then the final
    norm. mean=True: the paper's start (w = 0), alpha uniform, written as the plain mean."""
    r, size = model.residual, block_size(residual)
    values = [embed(model, idx)]
    fs = [f for _, f in sublayers(model)]
    L = len(fs)
    for layer in range(1, L + 2):
        if layer <= L:
            V = sources_of(layer, values, size)
        elif size is None:  # the final output: every source
            V = values
        else:
            V = [values[0]] + [sum(values[j : j + size]) for j in range(1, L + 1, size)]
        if mean:
            h = sum(V) / len(V)
        elif len(V) == 1:
            h = V[0]
        else:
            w, g = r.query[layer - 2], r.key_norm[layer - 2]
            keys = [g * v / (v.pow(2).mean(-1, keepdim=True) + 1e-6).sqrt() for v in V]
            alpha = torch.softmax(torch.stack([k @ w for k in keys], -1), -1)
            h = sum(alpha[..., i : i + 1] * v for i, v in enumerate(V))
        if layer > L:
            return model.lm_head(model.ln_f(h))[..., :512]
        values.append(fs[layer - 1](h))


@pytest.mark.parametrize("name", ["tiny", "modern-tiny"])
@pytest.mark.parametrize("residual", FORMS)
def test_a_new_model_is_the_equal_weight_average(name, residual):
    """Same seed: the same other weights (the queries start at 0 and the gains at 1, nothing
    drawn), and every sublayer and the final norm read the plain mean of their sources."""
    plain, model = gpt(name, "plain"), gpt(name, residual)
    state = model.state_dict()
    assert all(torch.equal(v, state[k]) for k, v in plain.state_dict().items())
    assert {k for k in state if k not in plain.state_dict()} == {
        "residual.query",
        "residual.key_norm",
    }
    assert not model.residual.query.any() and (model.residual.key_norm == 1).all()
    x = tokens((2, 24))
    with torch.no_grad():
        got = model(x)[0]
        want = reference(model, x, residual, mean=True)
        assert (got - plain(x)[0]).abs().max() > 1e-3  # not the plain transformer
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", ["tiny", "modern-tiny"])
@pytest.mark.parametrize("residual", FORMS)
def test_weights_are_used_as_the_paper_writes(name, residual):
    """Off the start (queries and gains perturbed): the paper's Eq. 3-4 (full) or 5-6 (block)
    written out source by source."""
    model = gpt(name, residual)
    x = tokens((2, 24))
    start = model(x)[0]
    perturb(model)
    with torch.no_grad():
        got = model(x)[0]
        want = reference(model, x, residual)
    assert (got - start).abs().max() > 1e-3  # the weights are read
    torch.testing.assert_close(got, want, rtol=0, atol=1e-10)


def composition(residual: str, n_layer: int) -> list[list[list[int]]]:
    """What each sublayer k reads, through the module itself: the embedding is basis vector
    e_0 and sublayer k's update e_{k+1}, so each source is a sum of basis vectors; the list of
    sources per reader (sublayers, then the final output), each as the indices it sums."""
    L = 2 * n_layer
    cfg = preset("tiny", n_layer=n_layer, residual=residual)  # the model's checks
    r = residual_module(cfg.residual, n_layer, L + 1).double()
    basis = torch.eye(L + 1, dtype=torch.float64)
    state, seen = r.start(basis[0]), []
    for k in range(L):
        seen.append([torch.nonzero(s).flatten().tolist() for s in r.sources(state)])
        assert all(torch.equal(s, s.round()) for s in r.sources(state))  # sums of 0/1 entries
        _, mix = r.read(state, k)
        state = r.write(mix, k, basis[k + 1])
    seen.append([torch.nonzero(s).flatten().tolist() for s in r.sources(state)])
    return seen


@pytest.mark.parametrize("n_layer", [1, 3, 4, 5])
@pytest.mark.parametrize("K", [None, 1, 2, 3, 4, 5])
def test_every_source_once_and_the_block_boundaries(n_layer, K):
    """Sublayer k (0-based) reads the embedding alone as its first source, every earlier update
    in exactly one source, nothing later; the sources are the blocks of 2K sublayers (one for
    the full form) that end before k, then k's own block so far; the final output reads the
    embedding and every block, the last one shorter where 2K does not divide 2 n_layer."""
    if K is not None and K > n_layer:
        return
    residual = "attnres" if K is None else f"attnres-b{K}"
    S = 1 if K is None else 2 * K
    seen = composition(residual, n_layer)
    L = 2 * n_layer
    for k, sources in enumerate(seen):
        assert sources[0] == [0]
        flat = sorted(i for s in sources for i in s)
        assert flat == list(range(k + 1))  # each of e_0 .. e_k once
        # sublayer j's update is e_{j+1}; blocks: sublayers [bS, (b+1)S)
        want = [[0]] + [[j + 1 for j in range(b, min(b + S, k, L))] for b in range(0, min(k, L), S)]
        assert sources == want, (k, sources, want)
    assert len(seen[-1]) == 1 + -(-L // S)


def test_one_block_is_the_plain_stream_with_the_embedding_isolated():
    """K = n_layer (the paper's N = 1): every sublayer after the first reads two sources, the
    embedding and the sum of every update so far, and so does the final output."""
    seen = composition("attnres-b4", 4)
    assert seen[0] == [[0]]
    assert all(s == [[0], list(range(1, k + 1))] for k, s in enumerate(seen) if k)


def plain_reading_scaled(plain: GPT, idx: torch.Tensor, scale: float) -> torch.Tensor:
    """The plain model whose sublayers but the first, and the final norm, read scale times the
    stream."""
    x = embed(plain, idx)
    for i, block in enumerate(plain.blocks):
        a, _ = block.attend(x if i == 0 else scale * x)
        x = x + a
        x = x + block.feed(scale * x)
    return plain.lm_head(plain.ln_f(scale * x))[..., :512]


@pytest.mark.parametrize("name", ["tiny", "modern-tiny"])
def test_a_new_one_block_model_is_the_plain_one_reading_half(name):
    """With one block (N = 1) and the queries at 0, each sublayer but the first reads
    (b_0 + b_1^i) / 2, half the plain stream: the plain model reading half its stream (to
    rounding: the plain stream adds the updates to the embedding one by one)."""
    plain, model = gpt(name, "plain"), gpt(name, "attnres-b4")
    x = tokens((2, 24))
    with torch.no_grad():
        got = model(x)[0]
        torch.testing.assert_close(got, plain_reading_scaled(plain, x, 0.5), rtol=0, atol=1e-12)
        assert (got - plain_reading_scaled(plain, x, 1.0)).abs().max() > 1e-3


@pytest.mark.parametrize("name", ["tiny", "modern-tiny"])
@pytest.mark.parametrize(
    "residual,stream",
    [("attnres", "none"), ("attnres-b2", "none"), ("attnres-b1", "value-learned")],
)
def test_kv_cache_decoding_equals_full_forward(name, residual, stream):
    """A prefix, a chunk of 2, then token by token through the cache: the full forward."""
    model = gpt(name, residual, stream).eval()
    perturb(model)
    check_cache(model)


@pytest.mark.parametrize("residual", ["attnres", "attnres-b3"])
def test_compiled_equals_eager(residual):
    """torch.compile (aot_eager: the traced graph, no Inductor code) gives eager's loss and
    gradients, the queries' and gains' included."""
    model = gpt("modern-tiny", residual, n_layer=3)  # 3: quicker to trace
    perturb(model)
    check_compiled(model)


@pytest.mark.parametrize("residual", ["attnres", "attnres-b2", "attnres-b4"])
def test_every_weight_gets_a_gradient(residual):
    """At the start the gains get exactly 0 (the logits are w . (g * x) with w = 0) and every
    query entry a nonzero gradient; off the start (perturbed), every entry of both."""
    grads = residual_grads(gpt("tiny", residual))
    assert set(grads) == {"query", "key_norm"}
    assert (grads["query"] != 0).all() and not grads["key_norm"].any()
    model = gpt("tiny", residual)
    perturb(model)
    grads = residual_grads(model)
    assert all((g != 0).all() for g in grads.values()), grads


@pytest.mark.parametrize("name,residual", [("tiny", "attnres"), ("modern-tiny", "attnres-b2")])
def test_a_stack_computes_what_each_model_computes_alone(name, residual):
    check_stack(name, residual, perturb)


@pytest.mark.parametrize("residual", ["attnres", "attnres-b2"])
def test_attnres_weights_are_not_decayed(residual):
    model = gpt("tiny", residual)
    decayed = {n for n, p in model.named_parameters() if _decays(n, p)}
    assert decayed and not any(n.startswith("residual.") for n in decayed)
    assert all(p.dim() >= 2 for p in model.residual.parameters())  # would decay by shape


@pytest.mark.parametrize(
    "spec,name,blocks",
    [("attnres", "attnres", None), ("attnres-b1", "attnres-b1", 1),
     (" attnres-b12 ", "attnres-b12", 12)],
)  # fmt: skip
def test_parse_name_roundtrip(spec, name, blocks):
    cfg = ResidualConfig.parse(spec)
    assert cfg.name == name and ResidualConfig.parse(cfg.name) == cfg and cfg.active
    assert cfg.blocks == blocks
    model_cfg = preset("gpt2-124m", residual=spec)
    saved = model_cfg.to_dict()
    assert saved["residual"] == name and GPTConfig(**saved) == model_cfg


def test_sizes_follow_the_name():
    """attnres: blocks of one sublayer; attnres-bK: of 2K."""
    assert gpt("tiny", "attnres").residual.size == 1
    assert gpt("tiny", "attnres-b3").residual.size == 6
    assert isinstance(gpt("tiny", "attnres-b3").residual, AttentionResiduals)
    assert gpt("tiny", "attnres").residual.query.shape == (8, 64)


def test_blocks_longer_than_the_model_are_refused_in_one_line():
    preset("tiny", residual="attnres-b4")  # n_layer 4: one block
    with pytest.raises(ConfigError) as e:
        preset("tiny", residual="attnres-b5")
    assert "\n" not in str(e.value) and "attnres-b5" in str(e.value)


def test_under_autocast_the_sources_keep_the_streams_dtype():
    """bf16 autocast: the sublayers' updates come out in bfloat16; the sources they join (and
    the block sums) stay in the embedding's float32, as the plain stream does."""
    torch.manual_seed(0)
    model = GPT(preset("modern-tiny", residual="attnres-b2"))
    perturb(model)
    loss, normed = autocast_final_norm_input(model)
    with torch.autocast("cpu", torch.bfloat16):
        r = model.residual
        state = r.write(r.start(torch.zeros(3, 64)), 0, torch.ones(3, 64, dtype=torch.bfloat16))
        state = r.write(state, 1, torch.ones(3, 64, dtype=torch.bfloat16))
    assert torch.isfinite(loss) and normed.dtype == torch.float32
    assert [s.dtype for s in r.sources(state)] == [torch.float32, torch.float32]
