"""MUDDFormer's multiway dynamic dense connections (models/residual.py: `mudd`; Xiao et al.
2025, arXiv 2502.12170) in GPT: what a new model computes, the equations written out, separate
query/key/value inputs to attention, the KV cache, torch.compile, gradients, stacks, weight
decay and the names."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from residual_helpers import (
    autocast_final_norm_input,
    check_cache,
    check_compiled,
    check_stack,
    gpt,
    residual_grads,
    tokens,
)
from residual_helpers import perturb as helpers_perturb

from attnstreams.experiments.lm.train import _decays
from attnstreams.models.gpt import GPT, GPTConfig, preset
from attnstreams.models.residual import MultiwayDenseConnections, ResidualConfig, mudd_hidden
from attnstreams.streams import StreamAttention

# vmap runs CPU attention one model at a time (PyTorch has no CPU batching rule for it)
pytestmark = pytest.mark.filterwarnings("ignore:There is a performance drop:UserWarning")


def mudd_parameters(model: GPT):
    """The generators and the key and value pre-norms."""
    for n, p in model.named_parameters():
        if n.startswith("residual.") or ".ln1_k." in n or ".ln1_v." in n:
            yield n, p


def perturb(model: GPT, seed: int = 1) -> None:
    """Every MUDD parameter off its start (the pre-norms too)."""
    helpers_perturb(model, seed, [p for _, p in mudd_parameters(model)])


@pytest.mark.parametrize("name", ["tiny", "modern-tiny"])
def test_a_new_model_is_the_plain_one(name):
    """The seed gives the plain model's weights (the generators' first layers come from a
    generator of their own), every way after every block is exactly that block's output, and
    the logits are the plain model's to rounding (the query, key and value projections are
    three matmuls over rows of the fused qkv weight, not one)."""
    plain, model = gpt(name, "plain"), gpt(name, "mudd")
    weights = dict(plain.named_parameters())
    new = {n for n, _ in mudd_parameters(model)}
    assert {n for n, _ in model.named_parameters()} - new == set(weights)
    for n, p in model.named_parameters():
        if n not in new:
            assert torch.equal(p, weights[n]), n
    x = tokens((2, 16))
    r = model.residual
    with torch.no_grad():
        torch.testing.assert_close(model(x)[0], plain(x)[0], rtol=0, atol=1e-13)
        state = r.start(model.wte(x))
        for i, block in enumerate(model.blocks):
            state, _ = block(state, None, None, r, i)
            outputs, ways = state
            assert len(outputs) == i + 2 and len(ways) == (4 if i < 3 else 1)
            assert all(torch.equal(w, outputs[-1]) for w in ways)
        assert torch.equal(r.end(state), outputs[-1])


def test_the_first_layers_are_drawn_from_the_seed():
    a, b, c = gpt("tiny", "mudd", seed=3), gpt("tiny", "mudd", seed=3), gpt("tiny", "mudd")
    assert torch.equal(a.residual.w1[2], b.residual.w1[2])
    assert not torch.equal(a.residual.w1[2], c.residual.w1[2])
    w1 = torch.cat(list(a.residual.w1))
    assert abs(w1.std().item() * math.sqrt(64) - 1) < 0.05  # N(0, 1/d)
    assert not any(w.any() for w in a.residual.w2)


def attention(attn: StreamAttention, xq, xk, xv) -> torch.Tensor:
    """GPT-2's block (no GQA, no RoPE): q, k, v from their rows of qkv, causal softmax."""
    D, H = xq.size(-1), attn.n_head
    W, b = attn.qkv.weight, attn.qkv.bias
    q, k, v = (F.linear(x, W[s * D : (s + 1) * D], b[s * D : (s + 1) * D]) for s, x in
               enumerate((xq, xk, xv)))  # fmt: skip
    q, k, v = (t.unflatten(-1, (H, D // H)).transpose(1, 2) for t in (q, k, v))
    T = q.size(2)
    scores = q @ k.transpose(-1, -2) / math.sqrt(D // H)
    scores = scores.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), float("-inf"))
    y = (scores.softmax(-1) @ v).transpose(1, 2).flatten(-2)
    return attn.proj(y)


def reference(model: GPT, idx: torch.Tensor) -> torch.Tensor:
    """The logits, as the notes write MUDD: X_0 the embedding; block i + 1 reads
    q = Wq ln1(X^Q), k = Wk ln1_k(X^K), v = Wv ln1_v(X^V), h = X^R + Wo attn, X = h + mlp(ln2 h);
    after block i, A = W2 GELU(W1 RMSNorm(X_{i+1})) + a (C x (i + 2)), X^c = sum_j A[c, j] X_j;
    the final norm reads the one way after the last block."""
    r = model.residual
    X = [model.wte(idx) + model.wpe(torch.arange(idx.size(1)))]
    ways = [X[0]] * 4
    for i, block in enumerate(model.blocks):
        if i == 0:
            xq = xk = xv = block.ln1(X[0])
        else:
            xq, xk, xv = block.ln1(ways[0]), block.ln1_k(ways[1]), block.ln1_v(ways[2])
        h = ways[3] + attention(block.attn, xq, xk, xv)
        out = h + block.mlp(block.ln2(h))
        X.append(out)
        n, C = i + 2, 4 if i < len(model.blocks) - 1 else 1
        normed = out / torch.sqrt(out.pow(2).mean(-1, keepdim=True) + 1e-6)
        A = F.gelu(normed @ r.w1[i].T) @ r.w2[i].T
        A = A.reshape(*A.shape[:-1], C, n) + r.bias[i]
        ways = [sum(A[..., c, j, None] * X[j] for j in range(n)) for c in range(C)]
    return model.lm_head(model.ln_f(ways[0]))[..., : model.cfg.vocab_size]


def test_weights_are_used_as_the_equations_write():
    model = gpt("tiny", "mudd")
    perturb(model)
    x = tokens((2, 16))
    with torch.no_grad():
        got, want = model(x)[0], reference(model, x)
        plain = gpt("tiny", "plain")(x)[0]
    torch.testing.assert_close(got, want, rtol=0, atol=1e-10)
    assert (got - plain).abs().max() > 1e-3


@pytest.mark.parametrize("stream", ["none", "value-learned", "value-first-gated"])
def test_three_inputs_project_each_through_its_rows(stream):
    """StreamAttention((xq, xk, xv)) takes q from xq, k from xk, v from xv (a gate from the
    input of its stream's projection); all three the same: the one-input layer."""
    torch.manual_seed(0)
    attn = StreamAttention(32, 4, 1, stream=stream, n_kv_head=2, bias=True).double()
    with torch.no_grad():
        for p in attn.parameters():
            p.add_(0.1 * torch.randn_like(p))
    x, other = torch.randn(2, 2, 8, 32, dtype=torch.float64)
    carry = torch.randn(2, 2, 8, 8, dtype=torch.float64) if attn.receives else None
    one = attn(x, carry)[0]
    torch.testing.assert_close(attn((x, x, x), carry)[0], one, rtol=0, atol=1e-13)
    for s in range(3):  # each input moves the output, and only through its own rows
        inputs = [x, x, x]
        inputs[s] = other
        assert (attn(tuple(inputs), carry)[0] - one).abs().max() > 1e-3
    with pytest.raises(ValueError):
        attn((x, x), carry)


@pytest.mark.parametrize("name", ["tiny", "modern-tiny"])
@pytest.mark.parametrize("stream", ["none", "value-learned", "value-first-gated"])
def test_kv_cache_decoding_equals_full_forward(name, stream):
    """A prefix, a chunk of 2, then token by token through the cache: the full forward."""
    model = gpt(name, "mudd", stream).eval()
    perturb(model)
    check_cache(model)


def test_compiled_equals_eager():
    """torch.compile (aot_eager: the traced graph, no Inductor code) gives eager's loss and
    every gradient, the generators' and the pre-norms' included."""
    model = gpt("modern-tiny", "mudd", "value-learned")
    perturb(model)
    check_compiled(model)


@pytest.mark.parametrize("name", ["tiny", "modern-tiny"])
def test_every_weight_gets_a_gradient(name):
    """At the start the first layers w1 get exactly 0 (w2 = 0 stands between them and the
    loss); the second layers, the biases and the pre-norms get a gradient in every entry.
    Off the start (perturbed), every entry of all. The key pre-norm's LayerNorm bias (GPT-2's
    block) gets 0 to rounding either way, as the key projection's bias does: it shifts every
    key of a query's scores alike, which the softmax ignores."""
    model = gpt(name, "mudd")
    grads = residual_grads(model, mudd_parameters(model))
    assert len(grads) == 3 * 4 + 2 * 3 * (2 if name == "tiny" else 1)
    for n, g in grads.items():
        if ".w1." in n:
            assert not g.any(), n
        elif n.endswith("ln1_k.bias"):
            assert g.abs().max() < 1e-15, n
        else:
            assert (g != 0).all(), n
    model = gpt(name, "mudd")
    perturb(model)
    grads = residual_grads(model, mudd_parameters(model))
    moving = {n: g for n, g in grads.items() if not n.endswith("ln1_k.bias")}
    assert all((g != 0).all() for g in moving.values())
    assert all(g.abs().max() < 1e-15 for n, g in grads.items() if n not in moving)


@pytest.mark.parametrize("name", ["tiny", "modern-tiny"])
def test_a_stack_computes_what_each_model_computes_alone(name):
    check_stack(name, "mudd", perturb)


def test_generators_and_norms_are_not_decayed():
    """As every residual module's weights: the generators' matrices (2-D) are left out by name,
    the pre-norms by shape."""
    model = gpt("tiny", "mudd")
    decayed = {n for n, p in model.named_parameters() if _decays(n, p)}
    assert decayed and not any(n in decayed for n, _ in mudd_parameters(model))
    assert all(p.dim() == 2 for p in model.residual.parameters())  # would decay by shape


def test_shapes_follow_the_released_model():
    """4 ways but after the last block (1), sources X_0..X_{i+1}, hidden width rounded up to
    the next multiple of 64 (always adding one)."""
    r = gpt("tiny", "mudd").residual
    assert isinstance(r, MultiwayDenseConnections)
    assert [tuple(b.shape) for b in r.bias] == [(4, 2), (4, 3), (4, 4), (1, 5)]
    assert [tuple(w.shape) for w in r.w2] == [(8, 64), (12, 64), (16, 64), (5, 64)]
    assert [mudd_hidden(n) for n in (2, 15, 16, 17)] == [64, 64, 128, 128]
    assert all(tuple(w.shape) == (64, 64) for w in r.w1)
    one = gpt("tiny", "mudd").residual  # the same seed: the same draws
    assert all(torch.equal(a, b) for a, b in zip(r.w1, one.w1, strict=True))


def test_one_layer():
    """One block: no Q/K/V ways, only the final one over the embedding and the block."""
    torch.manual_seed(0)
    model = GPT(preset("tiny", n_layer=1, residual="mudd")).double()
    assert [tuple(b.shape) for b in model.residual.bias] == [(1, 2)]
    assert not hasattr(model.blocks[0], "ln1_k")
    perturb(model)
    _, loss = model(tokens((2, 8)), tokens((2, 8), 1))
    loss.backward()
    assert all(p.grad.any() for p in model.residual.parameters())


@pytest.mark.parametrize("name", ["mudd", "muddvr"])  # muddvr: tests/test_muddvr.py
def test_parse_name_roundtrip(name):
    cfg = ResidualConfig.parse(f" {name} ")
    assert cfg.name == name and ResidualConfig.parse(cfg.name) == cfg and cfg.active
    model_cfg = preset("gpt2-124m", residual=name)
    saved = model_cfg.to_dict()
    assert saved["residual"] == name and GPTConfig(**saved) == model_cfg


def test_under_autocast_the_ways_keep_the_streams_dtype():
    """bf16 autocast: the updates come out in bfloat16; the outputs and ways stay float32."""
    torch.manual_seed(0)
    model = GPT(preset("modern-tiny", residual="mudd"))
    perturb(model)
    loss, normed = autocast_final_norm_input(model)
    assert torch.isfinite(loss) and normed.dtype == torch.float32
