"""modded-nanogpt's trimmed MUDD (models/residual.py: `muddvr`, `TrimmedDenseConnections`) in
GPT: a new model is the plain one, the equations written out, the value way joining before a
value stream's mix, the KV cache, torch.compile, gradients, stacks, weight decay, the names and
the refusals. The modern block is taken without GQA (modern-tiny has 2 key/value heads of 4,
which muddvr refuses)."""

from __future__ import annotations

import math
import re

import pytest
import torch
import torch.nn.functional as F
from residual_helpers import (
    autocast_final_norm_input,
    check_cache,
    check_compiled,
    check_stack,
    perturb,
    residual_grads,
    tokens,
)
from residual_helpers import gpt as helper_gpt

from attnstreams.experiments.lm.train import _decays
from attnstreams.models.gpt import GPT, preset
from attnstreams.models.residual import TrimmedDenseConnections, ValueAdd
from attnstreams.run.config import ConfigError
from attnstreams.streams import StreamAttention, rope

# vmap runs CPU attention one model at a time (PyTorch has no CPU batching rule for it)
pytestmark = pytest.mark.filterwarnings("ignore:There is a performance drop:UserWarning")

BLOCKS = ["tiny", "modern-tiny"]
NO_GQA = {"tiny": {}, "modern-tiny": {"n_kv_head": None}}


def gpt(name: str, residual: str = "muddvr", stream: str = "none", seed: int = 0, **kw) -> GPT:
    """A float64 preset GPT; the modern block without GQA."""
    return helper_gpt(name, residual, stream, seed, **NO_GQA[name], **kw)


@pytest.mark.parametrize(
    "name,stream", [("tiny", "none"), ("modern-tiny", "none"), ("tiny", "value-embed"),
                    ("modern-tiny", "value-learned")],
)  # fmt: skip
def test_a_new_model_is_the_plain_one(name, stream):
    """The seed gives the plain model's weights (the generators' first layers come from a
    generator of their own) and exactly its logits: every mixture starts at 0."""
    plain, model = gpt(name, "plain", stream), gpt(name, "muddvr", stream)
    weights = dict(plain.named_parameters())
    new = {n for n, _ in model.named_parameters() if n.startswith("residual.")}
    assert {n for n, _ in model.named_parameters()} - new == set(weights)
    for n, p in model.named_parameters():
        if n not in new:
            assert torch.equal(p, weights[n]), n
    x = tokens((2, 16))
    with torch.no_grad():
        assert torch.equal(model(x)[0], plain(x)[0])


def test_the_first_layers_are_drawn_from_the_seed():
    """W1 kaiming-uniform (nn.Linear's default: U(-1/sqrt(d), 1/sqrt(d))) from the seed; W2 and
    the biases 0; each generator holds only what it uses."""
    a, b, c = gpt("tiny", seed=3), gpt("tiny", seed=3), gpt("tiny")
    r = a.residual
    assert isinstance(r, TrimmedDenseConnections)
    assert all(torch.equal(x, y) for x, y in zip(r.w1, b.residual.w1, strict=True))
    assert not torch.equal(r.w1[0], c.residual.w1[0])
    assert not torch.equal(r.w1[0], r.w1[1])
    w1 = torch.cat(list(r.w1))
    bound = 1 / math.sqrt(64)
    assert w1.abs().max() <= bound and w1.abs().max() > 0.99 * bound
    assert abs(w1.std().item() / (bound / math.sqrt(3)) - 1) < 0.05
    assert not any(w.any() for w in [*r.w2, *r.bias])
    assert [tuple(w.shape) for w in r.w1] == [(64, 64), (64, 64)]
    assert [tuple(w.shape) for w in r.w2] == [(6, 64), (2, 64)]
    assert [tuple(w.shape) for w in r.bias] == [(2, 3), (1, 2)]


def attention(block, x, carry, v_add, layer: int):
    """One attention sublayer written out (no GQA): q, k, v from their rows of qkv, v_add
    added to v, then a value-learned stream's w0 v + w1 carry, RoPE where the block has it,
    causal softmax. Returns the update and the value handed on."""
    attn, D = block.attn, x.size(-1)
    H = attn.n_head
    q, k, v = F.linear(block.ln1(x), attn.qkv.weight, attn.qkv.bias).split(D, -1)
    q, k, v = (t.unflatten(-1, (H, D // H)).transpose(1, 2) for t in (q, k, v))
    if v_add is not None:
        v = v + v_add.unflatten(-1, (H, D // H)).transpose(1, 2)
    own = v
    if attn.stream_mix is not None:
        w = attn.stream_mix
        v = w[0] * v + w[1] * carry
    if attn.rope_theta is not None:
        pos = torch.arange(x.size(1))
        q, k = rope(q, pos, attn.rope_theta), rope(k, pos, attn.rope_theta)
    T = q.size(2)
    scores = q @ k.transpose(-1, -2) / math.sqrt(D // H)
    scores = scores.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), float("-inf"))
    y = (scores.softmax(-1) @ v).transpose(1, 2).flatten(-2)
    return attn.proj(y), own


def generator(r: TrimmedDenseConnections, g: int, x: torch.Tensor, ways: int, sources: int):
    """dw = (GELU(x W1^T) W2^T + b) 0.2 / sqrt(S), (..., C, S)."""
    dw = F.gelu(x @ r.w1[g].T) @ r.w2[g].T
    return (dw.reshape(*dw.shape[:-1], ways, sources) + r.bias[g]) * 0.2 / math.sqrt(sources)


def reference(model: GPT, idx: torch.Tensor) -> torch.Tensor:
    """The logits as modded-nanogpt writes its trimmed MUDD: X_0 the embedding output,
    X_{i+1} block i's output; after block L - 2, over (X_0, X_{L-3}, X_{L-1}), the stream is
    X_{L-1} + R and block L - 1's values get 1.15 V; after block L - 1, over (X_0, X_{L-1})
    (block L - 2's output without its R), the final norm reads X_L + R."""
    r, L = model.residual, len(model.blocks)
    x = model.wte(idx)
    if model.wpe is not None:
        x = x + model.wpe(torch.arange(idx.size(1)))
    X, carry, v_add = [x], None, None
    for i, block in enumerate(model.blocks):
        y, carry = attention(block, x, carry, v_add if i == L - 1 else None, i)
        h = x + y
        out = h + block.mlp(block.ln2(h))
        X.append(out)
        x = out
        if i == L - 2:
            src = [X[0], X[L - 3], X[L - 1]]
            dw = generator(r, 0, out, 2, 3)
            v_add = 1.15 * sum(dw[..., 0, j, None] * src[j] for j in range(3))
            x = out + sum(dw[..., 1, j, None] * src[j] for j in range(3))
        if i == L - 1:
            src = [X[0], X[L - 1]]
            dw = generator(r, 1, out, 1, 2)
            x = out + sum(dw[..., 0, j, None] * src[j] for j in range(2))
    return model.lm_head(model.ln_f(x))[..., : model.cfg.vocab_size]


@pytest.mark.parametrize(
    "name,stream,n_layer",
    [("tiny", "none", 4), ("tiny", "none", 3), ("tiny", "value-learned", 6),
     ("modern-tiny", "none", 4), ("modern-tiny", "value-learned", 5)],
)  # fmt: skip
def test_weights_are_used_as_the_equations_write(name, stream, n_layer):
    """Every L from 3 (where X_{L-3} is X_0) on; a value stream mixes the values after the
    value way joined them."""
    model = gpt(name, stream=stream, n_layer=n_layer)
    perturb(model)
    if stream != "none":
        with torch.no_grad():  # off (1, 1): the order of the add and the mix shows
            for block in model.blocks[1:]:
                block.attn.stream_mix.copy_(torch.tensor([0.7, 1.3]))
    x = tokens((2, 16))
    with torch.no_grad():
        got, want = model(x)[0], reference(model, x)
        plain = gpt(name, "plain", stream, n_layer=n_layer)
        for block, other in zip(plain.blocks, model.blocks, strict=True):
            if other.attn.stream_mix is not None:
                block.attn.stream_mix.copy_(other.attn.stream_mix)
        start = plain(x)[0]
    torch.testing.assert_close(got, want, rtol=0, atol=1e-10)
    assert (got - start).abs().max() > 1e-3


@pytest.mark.parametrize(
    "stream,c",  # c: own + add mixed equals own mixed with carry + c add, at the mix below
    [("value", 1.0), ("value-first", 1.0), ("value-first-gated", 1.0),
     ("value-learned", 0.7 / 1.3), ("value-embed", 0.8 / 0.5)],
)  # fmt: skip
def test_the_value_way_joins_the_own_values_before_the_stream_mix(stream, c):
    """StreamAttention(x, carry, value_add=a): the layer's own value projection plus a, then
    the stream's mix: w0 (v + a) + w1 carry = w0 v + w1 (carry + (w0 / w1) a). Adding after
    the mix would give c = 1 / w1 (2 for the half mixes). GQA at this level: a is
    n_kv_head * head_dim wide. What the layer hands on is v + a (source previous), or the
    carry as it came (source first)."""
    torch.manual_seed(0)
    attn = StreamAttention(32, 4, 1, stream=stream, n_kv_head=2, bias=True).double()
    with torch.no_grad():
        if attn.stream_mix is not None:
            w = (0.7, 1.3) if stream == "value-learned" else (0.8, 0.5)
            attn.stream_mix[0].fill_(w[0])
            attn.stream_mix[1].fill_(w[1])
    x = torch.randn(2, 8, 32, dtype=torch.float64)
    carry, a = torch.randn(2, 2, 8, 8, dtype=torch.float64), torch.randn(2, 8, 16).double()
    heads = a.unflatten(-1, (2, 8)).transpose(1, 2)
    y, handed = attn(x, carry, value_add=a)
    want, own = attn(x, carry + c * heads)
    torch.testing.assert_close(y, want, rtol=0, atol=1e-12)
    assert (y - attn(x, carry)[0]).abs().max() > 1e-3
    if attn.stream.source == "previous":
        torch.testing.assert_close(handed, own + heads, rtol=0, atol=1e-12)
    elif attn.stream.source == "first":
        assert handed is carry


def test_a_layer_without_values_refuses_an_addition():
    attn = StreamAttention(32, 4, 1, stream="value-shared").double()
    x = torch.randn(2, 8, 32, dtype=torch.float64)
    with pytest.raises(ValueError, match="no value projection"):
        attn(x, torch.randn(2, 4, 8, 8, dtype=torch.float64), value_add=torch.randn_like(x))


def test_the_block_reads_a_value_add_through_its_pre_norm():
    """Block.attend(ValueAdd(x, 0)) is Block.attend(x), exactly."""
    block = gpt("tiny").blocks[3]
    x = torch.randn(2, 8, 64, dtype=torch.float64)
    with torch.no_grad():
        assert torch.equal(block.attend(ValueAdd(x, torch.zeros_like(x)))[0], block.attend(x)[0])


@pytest.mark.parametrize("name", BLOCKS)
@pytest.mark.parametrize("stream", ["none", "value-embed", "value-first-gated"])
def test_kv_cache_decoding_equals_full_forward(name, stream):
    """A prefix, a chunk of 2, then token by token through the cache: the full forward."""
    model = gpt(name, stream=stream).eval()
    perturb(model)
    check_cache(model)


def test_compiled_equals_eager():
    """torch.compile (aot_eager: the traced graph, no Inductor code) gives eager's loss and
    every gradient, the generators' included."""
    model = gpt("modern-tiny", stream="value-embed")
    perturb(model)
    check_compiled(model)


@pytest.mark.parametrize("name", BLOCKS)
def test_every_weight_gets_a_gradient(name):
    """At the start the first layers W1 get exactly 0 (W2 = 0 stands between them and the
    loss); W2 and the biases get a gradient in every entry. Off the start, every entry of
    all."""
    grads = residual_grads(gpt(name))
    assert len(grads) == 6
    for n, g in grads.items():
        assert not g.any() if n.startswith("w1.") else (g != 0).all(), n
    model = gpt(name)
    perturb(model)
    assert all((g != 0).all() for g in residual_grads(model).values())


@pytest.mark.parametrize("name", BLOCKS)
def test_a_stack_computes_what_each_model_computes_alone(name):
    check_stack(name, "muddvr", perturb, **NO_GQA[name])


def test_generators_are_not_decayed():
    """As every residual module's weights: left out by name (W1 and W2 are matrices)."""
    model = gpt("tiny")
    decayed = {n for n, p in model.named_parameters() if _decays(n, p)}
    assert decayed and not any(n.startswith("residual.") for n in decayed)
    assert any(p.dim() == 2 for p in model.residual.parameters())  # would decay by shape


def test_under_autocast_the_stream_keeps_its_dtype():
    """bf16 autocast: the value way joins the bfloat16 values in their dtype; the stream the
    final norm reads stays float32."""
    torch.manual_seed(0)
    model = GPT(preset("modern-tiny", residual="muddvr", n_kv_head=None))
    perturb(model)
    loss, normed = autocast_final_norm_input(model)
    assert torch.isfinite(loss) and normed.dtype == torch.float32


@pytest.mark.parametrize(
    "name,overrides,says",
    [
        ("tiny", dict(n_layer=2), "needs at least 3 blocks, got 2"),
        ("tiny", dict(n_layer=1), "needs at least 3 blocks, got 1"),
        ("modern-tiny", {}, "no GQA), got 2 of 4"),
        ("tiny", dict(n_kv_head=1), "no GQA), got 1 of 4"),
        ("tiny", dict(stream="value-shared"), "which stream 'value-shared' removes"),
    ],
)
def test_models_it_cannot_join_are_refused_in_one_line(name, overrides, says):
    with pytest.raises(ConfigError, match=re.escape(says)) as e:
        preset(name, residual="muddvr", **overrides)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize(
    "stream", ["value", "value-first", "value-first-gated", "value-learned-per-head", "key",
               "query-first", "key-smear"],
)  # fmt: skip
def test_other_streams_combine(stream):
    """Any stream but value-shared: a value stream mixes the values after the value way joined
    them; key and query streams do not touch the values."""
    model = gpt("modern-tiny", stream=stream, n_layer=3)
    perturb(model)
    _, loss = model(tokens((2, 8)), tokens((2, 8), 1))
    assert torch.isfinite(loss)
