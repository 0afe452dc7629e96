"""The cross-layer value variants (gated, shared, embedded values) and the modern block."""

from __future__ import annotations

import shutil

import pytest
import torch
import torch.nn.functional as F

from attnstreams.experiments.lm.train import _decays
from attnstreams.models.gpt import GPT, PRESETS, GPTConfig, preset
from attnstreams.models.toy import ToyICL, ToyICLConfig
from attnstreams.run.config import ConfigError
from attnstreams.streams import StreamAttention, StreamConfig, embed_layers, rope

MODERN = dict(pos="rope", norm="rmsnorm", mlp="swiglu", bias=False)


def tiny(stream="none", **kw) -> GPTConfig:
    base = dict(vocab_size=97, block_size=32, n_layer=4, n_head=4, n_embd=32, dropout=0.0)
    return GPTConfig(stream=StreamConfig.parse(stream), **(base | kw))


def twin(cfg_a: GPTConfig, cfg_b: GPTConfig) -> tuple[GPT, GPT]:
    """b with a's weights where names and shapes agree (its own extra parameters kept)."""
    torch.manual_seed(0)
    a, b = GPT(cfg_a).eval(), GPT(cfg_b).eval()
    own = b.state_dict()
    b.load_state_dict(
        {k: v for k, v in a.state_dict().items() if k in own and own[k].shape == v.shape}, False
    )
    return a, b


IDX = torch.randint(97, (2, 16), generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("spec", ["value-gated", "value-first-gated", "key-gated"])
def test_a_closed_gate_is_the_baseline(spec):
    base, gated = twin(tiny(), tiny(spec))
    with torch.no_grad():
        for block in gated.blocks[1:]:
            block.attn.stream_gate.bias.fill_(-1e4)  # sigmoid: exactly 0
    torch.testing.assert_close(gated(IDX)[0], base(IDX)[0], rtol=0, atol=1e-6)


def test_the_gate_starts_half_open_and_a_full_gate_is_svformer():
    """value-first-gated starts as ResFormer's 0.5/0.5 (W = 0, b = 0); fully open it takes
    layer 1's values only: SVFormer's value-shared."""
    half, gated = twin(tiny("value-first"), tiny("value-first-gated"))
    torch.testing.assert_close(gated(IDX)[0], half(IDX)[0], rtol=0, atol=1e-6)
    gated, shared = twin(tiny("value-first-gated"), tiny("value-shared"))
    with torch.no_grad():
        for block in gated.blocks[1:]:
            block.attn.stream_gate.bias.fill_(1e4)
    for g, s in zip(gated.blocks[1:], shared.blocks[1:], strict=True):  # Q, K rows of each
        with torch.no_grad():
            s.attn.qkv.weight.copy_(g.attn.qkv.weight[s.attn.full_rows()])
            s.attn.qkv.bias.copy_(g.attn.qkv.bias[s.attn.full_rows()])
    torch.testing.assert_close(shared(IDX)[0], gated(IDX)[0], rtol=0, atol=1e-6)


@pytest.mark.parametrize("bias", [True, False])
def test_an_open_gate_mixes_each_token_and_head_by_its_own_sigmoid(bias):
    """The gated layer (its gate's rows riding on the qkv matmul) against the formula written
    out: (1 - g) V_own + g V_carry, g = sigmoid(x W + b) per token and key/value head, fed as
    the values of a shared-value layer with the same query and key weights. float64, GQA."""
    torch.manual_seed(3)
    B, T, C, H, Hkv, hd = 2, 7, 32, 4, 2, 8
    gated = StreamAttention(C, H, 1, "value-gated", n_kv_head=Hkv, bias=bias).double()
    shared = StreamAttention(C, H, 1, "value-shared", n_kv_head=Hkv, bias=bias).double()
    with torch.no_grad():
        gated.stream_gate.weight.normal_()
        gated.stream_gate.bias.normal_()
        rows = shared.full_rows()
        shared.qkv.weight.copy_(gated.qkv.weight[rows])
        if bias:
            shared.qkv.bias.copy_(gated.qkv.bias[rows])
        shared.proj.load_state_dict(gated.proj.state_dict())
    x = torch.randn(B, T, C, dtype=torch.float64)
    carry = torch.randn(B, Hkv, T, hd, dtype=torch.float64)
    own = F.linear(x, gated.qkv.weight, gated.qkv.bias)[..., (H + Hkv) * hd :]
    own = own.view(B, T, Hkv, hd).transpose(1, 2)
    g = torch.sigmoid(x @ gated.stream_gate.weight.T + gated.stream_gate.bias)  # (B, T, Hkv)
    assert g.std(dim=1).min() > 0.05  # it varies over the tokens
    g = g.transpose(1, 2).unsqueeze(-1)
    want, _ = shared(x, (1 - g) * own + g * carry)
    got, handed_on = gated(x, carry)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
    torch.testing.assert_close(handed_on, own, rtol=0, atol=1e-12)  # its own values, unmixed


def test_the_gate_is_per_token_and_key_value_head_and_learns():
    torch.manual_seed(0)
    model = GPT(tiny("value-first-gated", n_kv_head=2))
    assert model.blocks[0].attn.stream_gate is None  # layer 1 receives nothing
    gate = model.blocks[1].attn.stream_gate
    assert (gate.out_features, gate.in_features) == (2, 32)
    with torch.no_grad():
        gate.weight.normal_()
    x = torch.randn(2, 5, 32)
    g = torch.sigmoid(gate(x))
    assert g.std(dim=1).min() > 0 and (g[..., 0] - g[..., 1]).abs().max() > 0
    _, loss = model(IDX, targets=IDX)
    loss.backward()
    for block in model.blocks[1:]:
        assert block.attn.stream_gate.weight.grad.abs().sum() > 0
        assert block.attn.stream_gate.bias.grad.abs().sum() > 0


def test_value_shared_has_no_value_projection_after_layer_1():
    torch.manual_seed(0)
    base, shared = GPT(tiny(n_kv_head=2)), GPT(tiny("value-shared", n_kv_head=2))
    a = shared.blocks[1].attn
    assert a.qkv.weight.shape == ((4 + 2) * 8, 32) and a.projections == ["query", "key"]
    assert shared.blocks[0].attn.qkv.weight.shape == ((4 + 2 + 2) * 8, 32)
    fewer = sum(p.numel() for p in base.parameters()) - sum(p.numel() for p in shared.parameters())
    assert fewer == 3 * (2 * 8) * (32 + 1)  # 3 layers x value rows x (weights + bias)


def test_value_shared_keeps_a_seeds_other_weights():
    """Its layers draw their projections at full width, so a seed gives the baseline's query
    and key weights and every later tensor (the draws shifted before)."""
    torch.manual_seed(0)
    base = GPT(tiny(n_kv_head=2)).state_dict()
    torch.manual_seed(0)
    shared = GPT(tiny("value-shared", n_kv_head=2)).state_dict()
    for k, v in shared.items():
        if "attn.qkv" in k and v.shape != base[k].shape:
            torch.testing.assert_close(v, base[k][: v.size(0)], rtol=0, atol=0)  # Q, K rows
        else:
            torch.testing.assert_close(v, base[k], rtol=0, atol=0)


def test_value_shared_attends_over_layer_1_values():
    """Hand-written: every later layer attends over V_1."""
    torch.manual_seed(0)
    layers = [StreamAttention(16, 2, i, "value-shared") for i in range(3)]
    x = torch.randn(2, 5, 16)
    y0, v1 = layers[0](x)
    out, carry = layers[1](x, v1)
    assert carry is v1
    q, k = layers[1].qkv(x).split([16, 16], -1)
    q, k = (t.unflatten(-1, (2, 8)).transpose(1, 2) for t in (q, k))
    ref = torch.nn.functional.scaled_dot_product_attention(q, k, v1, is_causal=True)
    torch.testing.assert_close(out, layers[1].proj(ref.transpose(1, 2).flatten(-2)))


def test_embed_layers_follow_modded_nanogpt():
    assert embed_layers(12) == [0, 1, 2, None, None, None, None, None, None, 0, 1, 2]
    assert embed_layers(4) == [0, 1, 0, 1]
    assert embed_layers(2) == [0, 0]


def test_value_embed_at_chosen_layers():
    model = GPT(tiny("value-embed", value_embed_layers=[1, 3]))
    assert len(model.value_embeds) == 2 and model.embed_table == [None, 0, None, 1]
    assert model.blocks[0].attn.stream_mix is None and model.blocks[1].attn.stream_mix is not None
    _, loss = model(IDX, targets=IDX)
    loss.backward()
    assert all(t.weight.grad.abs().sum() > 0 for t in model.value_embeds)
    for bad in ([], [1, 1], [4]):
        with pytest.raises(ConfigError):
            tiny("value-embed", value_embed_layers=bad)
    with pytest.raises(ConfigError, match="value-embed stream"):
        tiny("value", value_embed_layers=[1])


def test_value_embed_at_zero_weight_is_the_baseline_and_learns():
    base, emb = twin(tiny(n_kv_head=2), tiny("value-embed", n_kv_head=2))
    assert len(emb.value_embeds) == 2 and emb.value_embeds[0].embedding_dim == 2 * 8
    mixes = [b.attn.stream_mix for b in emb.blocks]
    assert all(m.shape == (2, 2, 1, 1) for m in mixes)  # per key/value head, every layer
    assert mixes[0][1].mean().item() == 0.5 and mixes[0][0].mean().item() == 1.0
    assert (emb(IDX)[0] - base(IDX)[0]).abs().max() > 1e-4
    with torch.no_grad():
        for m in mixes:
            m[1] = 0.0
    torch.testing.assert_close(emb(IDX)[0], base(IDX)[0], rtol=0, atol=1e-6)
    with torch.no_grad():
        for m in mixes:
            m[1] = 0.5
    _, loss = emb(IDX, targets=IDX)
    loss.backward()
    assert all(t.weight.grad[IDX.unique()].abs().sum() > 0 for t in emb.value_embeds)
    assert all(m.grad.abs().sum() > 0 for m in mixes)


def test_value_embed_counts_as_an_embedding():
    base, emb = GPT(tiny()), GPT(tiny("value-embed"))
    mixes = 4 * 2 * 4  # 4 layers x (2, heads)
    assert emb.num_params() == base.num_params() + mixes
    assert emb.flops_per_token() == base.flops_per_token() + 6 * mixes


# -- the smeared key -------------------------------------------------------------------------
@pytest.mark.parametrize("rope_theta", [None, 10000.0])
def test_a_smeared_key_is_its_formula_written_out(rope_theta):
    """k_t + a_h k_{t-1} (position 0 as it is), a per key/value head, over the raw keys, which
    are then rotated (RoPE), against attention written out: float64, GQA, biases."""
    torch.manual_seed(4)
    B, T, C, H, Hkv, hd = 2, 6, 32, 4, 2, 8
    layer = StreamAttention(C, H, 1, "key-smear", n_kv_head=Hkv, bias=True, rope_theta=rope_theta)
    layer = layer.double()
    a = torch.tensor([0.7, -1.3], dtype=torch.float64)
    with torch.no_grad():
        layer.stream_smear.copy_(a.view(Hkv, 1, 1))
    x = torch.randn(B, T, C, dtype=torch.float64)
    qkv = F.linear(x, layer.qkv.weight, layer.qkv.bias).split([H * hd, Hkv * hd, Hkv * hd], -1)
    q, k, v = (t.unflatten(-1, (-1, hd)).transpose(1, 2) for t in qkv)
    smeared = k.clone()
    for h in range(Hkv):
        for t in range(1, T):
            smeared[:, h, t] = k[:, h, t] + a[h] * k[:, h, t - 1]

    def attend(q, k):
        if rope_theta is not None:
            q, k = rope(q, torch.arange(T), rope_theta), rope(k, torch.arange(T), rope_theta)
        k, vv = k.repeat_interleave(H // Hkv, 1), v.repeat_interleave(H // Hkv, 1)
        s = (q @ k.mT) * hd**-0.5
        s = s.masked_fill(~torch.ones(T, T, dtype=torch.bool).tril(), float("-inf"))
        return layer.proj((s.softmax(-1) @ vv).transpose(1, 2).flatten(-2))

    got, carry = layer(x)
    assert carry is None  # nothing is handed on to the next layer
    torch.testing.assert_close(got, attend(q, smeared), rtol=0, atol=1e-12)
    assert (got - attend(q, k)).abs().max() > 1e-3  # not the unsmeared keys
    if rope_theta is not None:  # rotated, then smeared: another model
        pos = torch.arange(T)
        kr = rope(k, pos, rope_theta)
        after = kr + a.view(Hkv, 1, 1) * F.pad(kr[:, :, :-1], (0, 0, 1, 0))
        k_back = rope(after, -pos, rope_theta)  # attend() rotates it again
        assert (got - attend(q, k_back)).abs().max() > 1e-3


@pytest.mark.parametrize("spec", ["key-smear", "key-smear-learned"])
@pytest.mark.parametrize("block", [{}, MODERN])
def test_a_smear_at_zero_is_the_baseline_exactly(spec, block):
    """Zero-initialised and drawing no random numbers: a seed gives the baseline's weights and
    its logits, bit for bit; a nonzero coefficient changes them."""
    torch.manual_seed(0)
    base = GPT(tiny(n_kv_head=2, **block)).eval()
    torch.manual_seed(0)
    smear = GPT(tiny(spec, n_kv_head=2, **block)).eval()
    own = smear.state_dict()
    assert {k for k in own if k not in base.state_dict()} == {
        f"blocks.{i}.attn.stream_smear" for i in range(4)
    }
    for k, v in base.state_dict().items():
        assert torch.equal(own[k], v), k
    assert torch.equal(smear(IDX)[0], base(IDX)[0])
    torch.manual_seed(0)
    toy_base, toy = ToyICL(ToyICLConfig()), ToyICL(ToyICLConfig(stream=spec))
    toy.load_state_dict(toy_base.state_dict(), strict=False)
    x = torch.randn(3, 9, 150)
    assert torch.equal(toy(x), toy_base(x))
    with torch.no_grad():
        for block in smear.blocks:
            block.attn.stream_smear.fill_(0.5)
    assert (smear(IDX)[0] - base(IDX)[0]).abs().max() > 1e-4


@pytest.mark.parametrize(
    "spec,shape", [("key-smear", (2, 1, 1)), ("key-smear-learned", (1,)), ("key-smear-sum", None)]
)
def test_the_smear_coefficient_learns_and_is_not_decayed(spec, shape):
    """A per key/value head, one a layer, or none (a = 1); every layer's gets a gradient and
    none is weight-decayed."""
    torch.manual_seed(0)
    model = GPT(tiny(spec, n_kv_head=2))
    coefs = [b.attn.stream_smear for b in model.blocks]
    if shape is None:
        assert coefs == [None] * 4 and model.num_params() == GPT(tiny(n_kv_head=2)).num_params()
        return
    assert all(c.shape == shape for c in coefs)
    _, loss = model(IDX, targets=IDX)
    loss.backward()
    assert all((c.grad != 0).all() for c in coefs)
    assert not any(_decays(n, p) for n, p in model.named_parameters() if "stream_smear" in n)


def test_a_smear_needs_one_layer_and_skips_padding():
    """One layer is enough (nothing is handed on). Left padding: the first token's key does not
    take the padding key before it, so the row gives, at its tokens, what it gives alone."""
    GPT(tiny("key-smear", n_layer=1))
    ToyICLConfig(n_attn_layers=1, stream="key-smear-sum")
    torch.manual_seed(0)
    layer = StreamAttention(32, 4, 0, "key-smear-sum").eval()
    x = torch.randn(1, 4, 32)
    padded = torch.cat([torch.randn(1, 2, 32) * 100, x], 1)
    keep = torch.tensor([[False] * 2 + [True] * 4])
    got, _ = layer(padded, key_padding_mask=keep)
    torch.testing.assert_close(got[:, 2:], layer(x)[0], rtol=0, atol=1e-5)


@pytest.mark.parametrize(
    "bad",
    [
        "key-embed",
        "value-embed-shared",
        "query-embed-learned",
        "value-last-gated",
        "value-smear",
        "key-smear-half",
        "key-smear-gated",
        "key-first-smear",
        "value+key-smear",
    ],
)
def test_bad_variants_are_refused(bad):
    with pytest.raises(ConfigError):
        StreamConfig.parse(bad)


def test_the_toy_model_refuses_a_value_embedding():
    with pytest.raises(ConfigError, match="token ids"):
        ToyICLConfig(stream="value-embed")


def test_a_carry_into_layer_0_is_an_error():
    """It was mixed in with unit weights, silently, whatever the stream's mix."""
    layer = StreamAttention(32, 4, 0, "value-learned")
    assert layer.stream_mix is None
    x = torch.randn(2, 5, 32)
    with pytest.raises(ValueError, match="receives no carry"):
        layer(x, torch.randn(2, 4, 5, 8))
    with pytest.raises(ValueError, match="value embedding"):
        StreamAttention(32, 4, 0, "value-embed")(x)


@pytest.mark.parametrize("spec", ["value-first-gated", "value-embed", "value-shared", "key-smear"])
def test_every_parameter_is_made_on_the_default_device(spec):
    """As `with torch.device("cuda"):` builds a model (the benchmarks do): the gate was left
    on the CPU, and the compiled GPU step failed."""
    with torch.device("meta"):
        model = GPT(tiny(spec))
    assert {p.device.type for p in model.parameters()} == {"meta"}


def test_no_stream_parameter_is_decayed():
    model = GPT(tiny("value-first-gated"))
    gates = [(n, p) for n, p in model.named_parameters() if "stream_gate" in n]
    assert gates and not any(_decays(n, p) for n, p in gates)


@pytest.mark.skipif(
    shutil.which("cc") is None and shutil.which("gcc") is None, reason="no C compiler"
)
@pytest.mark.parametrize(
    "spec,block,backend",
    [("value-embed", MODERN, "inductor"), ("value-first-gated", MODERN, "aot_eager"),
     ("value-shared", {}, "aot_eager"), ("key-smear", MODERN, "aot_eager")],
)  # fmt: skip
def test_compile_matches_eager(spec, block, backend):
    """A whole GPT (GQA) compiled, against eager: logits, loss and every gradient. Inductor
    for one stream: its C++ kernels cost minutes to build with an empty cache, and the other
    streams' graphs (the compiled-only loss included) are Dynamo's and AOTAutograd's, which
    aot_eager runs without Inductor's code. (The value-learned stream traced under FSDP: the
    compiled 2-process run of tests/test_parallel.py.)"""
    torch.manual_seed(5)
    model = GPT(tiny(spec, n_kv_head=2, n_layer=3, **block)).eval()
    with torch.no_grad():  # zero-initialised gates and smears moved, so that their paths count
        for name, p in model.named_parameters():
            if "stream_gate" in name or name.endswith("stream_smear"):
                p.normal_()
    targets = IDX.roll(-1, 1)
    targets[:, -1] = -100  # ignored: the compiled-only form of the loss handles them too
    eager, loss = model(IDX, targets)
    grads = torch.autograd.grad(loss, [p for p in model.parameters() if p.requires_grad])
    out, c_loss = torch.compile(model, backend=backend)(IDX, targets)
    c_grads = torch.autograd.grad(c_loss, [p for p in model.parameters() if p.requires_grad])
    torch.testing.assert_close(out, eager, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(c_loss, loss, rtol=1e-5, atol=1e-5)
    for g, c in zip(grads, c_grads, strict=True):
        torch.testing.assert_close(c, g, rtol=1e-4, atol=1e-5)


# -- the modern block ------------------------------------------------------------------------
def test_rope_scores_depend_on_relative_position_only():
    torch.manual_seed(0)
    q, k = (
        torch.randn(1, 2, 6, 8, dtype=torch.float64),
        torch.randn(1, 2, 6, 8, dtype=torch.float64),
    )
    pos = torch.arange(6)
    s0 = rope(q, pos, 10000.0) @ rope(k, pos, 10000.0).mT
    s7 = rope(q, pos + 7, 10000.0) @ rope(k, pos + 7, 10000.0).mT
    torch.testing.assert_close(s7, s0)
    assert not torch.allclose(rope(q, pos + 7, 10000.0), rope(q, pos, 10000.0))
    torch.testing.assert_close(rope(q, pos, 10000.0).norm(dim=-1), q.norm(dim=-1))  # a rotation


def test_modern_block_is_what_it_says():
    model = GPT(preset("modern-tiny"))
    assert model.wpe is None
    assert all(m.bias is None for m in model.modules() if isinstance(m, torch.nn.Linear))
    assert all(
        isinstance(b.ln1, torch.nn.RMSNorm) and b.mlp.swiglu and b.attn.rope_theta == 10000.0
        for b in model.blocks
    )
    assert model.blocks[0].attn.n_kv_head == 2
    idx = torch.randint(512, (2, 10))
    _, loss = model(idx, targets=torch.randint(512, (2, 10)))
    assert 5.7 < loss.item() < 6.8  # ~ln(512) at initialisation


@pytest.mark.parametrize("size", ["8m", "124m", "1b"])
def test_modern_presets_are_the_same_sizes(size):
    """SwiGLU's 8/3 width keeps the MLP's parameters; GQA (4 key/value heads) trims K and V."""
    old = {"8m": "tinystories-8m", "124m": "gpt2-124m", "1b": "gpt-1b"}[size]
    with torch.device("meta"):  # sizes only: no memory, no initialisation
        a = GPT(preset(old, vocab_size=512)).num_params()
        b = GPT(preset(f"modern-{size}", vocab_size=512)).num_params()
    assert 0.8 < b / a < 1.0
    c = PRESETS[f"modern-{size}"]
    assert (c.n_layer, c.n_embd, c.block_size) == (
        PRESETS[old].n_layer,
        PRESETS[old].n_embd,
        PRESETS[old].block_size,
    )


def test_untied_embeddings_have_their_own_output_layer():
    tied, untied = GPT(tiny()), GPT(tiny(tie_embeddings=False))
    assert untied.lm_head.weight is not untied.wte.weight
    assert untied.num_params() == tied.num_params() + 97 * 32
    assert untied.flops_per_token() == tied.flops_per_token()


def test_checkpoint_tensors_keep_an_untied_output_layer():
    from attnstreams.experiments.lm.weights import load_model_state

    torch.manual_seed(0)
    a, b = GPT(tiny(tie_embeddings=False)), GPT(tiny(tie_embeddings=False))
    load_model_state(b, {f"model/{k}": v for k, v in a.state_dict().items()})
    torch.testing.assert_close(b.lm_head.weight, a.lm_head.weight)
    assert not torch.equal(b.lm_head.weight, b.wte.weight)


@pytest.mark.parametrize(
    "bad",
    [
        dict(pos="alibi"),
        dict(norm="batch"),
        dict(mlp="relu"),
        dict(pos="rope", n_embd=36, n_head=4),
    ],
)
def test_bad_block_settings_are_refused(bad):
    with pytest.raises(ConfigError):
        tiny(**bad)
