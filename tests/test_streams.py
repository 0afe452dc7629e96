"""The residual attention stream: equivalences that can fail."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from attnstreams.models.gpt import (
    GPT,
    PRESETS,
    GPTConfig,
    _cross_entropy_lse,
    cross_entropy,
    preset,
)
from attnstreams.models.toy import ToyICL, ToyICLConfig
from attnstreams.run.config import ConfigError
from attnstreams.streams import StreamAttention, StreamConfig

VARIANTS = [
    "none",
    "value",
    "key",
    "query",
    "value-first",
    "value-first-sum",
    "value-half",
    "value-learned",
    "key-first-learned",
    "value-first-learned-per-head",
    "query-learned-per-head",
    "value-gated",
    "value-first-gated",
    "key-gated",
    "value-shared",
    "key-shared",
    "value-embed",
    "value-embed-learned",
    "key-smear",
    "key-smear-learned",
    "key-smear-sum",
]
MODERN = dict(pos="rope", norm="rmsnorm", mlp="swiglu", bias=False)


def tiny(stream="none", **kw) -> GPTConfig:
    base = dict(vocab_size=97, block_size=32, n_layer=3, n_head=4, n_embd=32, dropout=0.0)
    base.update(kw)
    return GPTConfig(stream=StreamConfig.parse(stream), **base)


def twin(cfg_a: GPTConfig, cfg_b: GPTConfig, seed: int = 0) -> tuple[GPT, GPT]:
    """Two models with the same weights (b gets a's state; extra mix parameters kept)."""
    torch.manual_seed(seed)
    a = GPT(cfg_a).eval()
    b = GPT(cfg_b).eval()
    b.load_state_dict(a.state_dict(), strict=False)
    return a, b


def qkv_slice(attn: StreamAttention, kind: str) -> slice:
    H, Hkv, hd = attn.n_head, attn.n_kv_head, attn.head_dim
    start = {"query": 0, "key": H * hd, "value": (H + Hkv) * hd}[kind]
    size = H * hd if kind == "query" else Hkv * hd
    return slice(start, start + size)


def test_a_width_the_heads_do_not_split_is_refused():
    """StreamAttention(65, 4) silently used head size 16 (64 of the 65 features)."""
    with pytest.raises(ConfigError, match="width 65 is not divisible by 4 heads"):
        StreamAttention(65, 4, 0)
    assert StreamAttention(65, 4, 0, head_dim=16).head_dim == 16  # said outright: allowed
    assert StreamAttention(64, 4, 0).head_dim == 16


@pytest.mark.parametrize("spec", VARIANTS)
def test_parse_name_roundtrip(spec):
    cfg = StreamConfig.parse(spec)
    assert cfg.name == spec
    assert StreamConfig.parse(cfg.name) == cfg


@pytest.mark.parametrize("bad", ["values", "value-last", "value-first-mean", "none-first", ""])
def test_parse_rejects_unknown(bad):
    with pytest.raises(ConfigError):
        StreamConfig.parse(bad)


@pytest.mark.parametrize("spec", ["value", "key", "query", "value-first", "value-first-sum"])
def test_sum_mode_adds_no_parameters(spec):
    base = sum(p.numel() for p in GPT(tiny()).parameters())
    assert sum(p.numel() for p in GPT(tiny(spec)).parameters()) == base


@pytest.mark.parametrize(
    "spec", [v for v in VARIANTS[1:] if "shared" not in v and "embed" not in v]
)
def test_a_seed_gives_every_stream_the_baselines_initial_weights(spec):
    """A grid pairs arms by seed: every parameter a stream shares with the baseline starts
    equal, so that the stream's own parameters are the only difference at step 0. (Shared
    projections change the layers' shapes, and value embeddings draw their tables first.)"""
    torch.manual_seed(3)
    base = GPT(tiny()).state_dict()
    torch.manual_seed(3)
    other = GPT(tiny(spec)).state_dict()
    assert set(base) <= set(other)
    for k, v in base.items():
        assert torch.equal(v, other[k]), k


@pytest.mark.parametrize(
    "spec,n_layer",
    [("value", 2), ("key", 2), ("query", 2), ("value-first-sum", 4), ("key-first-sum", 3)],
)
def test_zeroed_source_equals_baseline(spec, n_layer):
    """With the source layer's projection zeroed, the stream adds nothing."""
    base, stream = twin(tiny(n_layer=n_layer), tiny(spec, n_layer=n_layer))
    kind = StreamConfig.parse(spec).kind
    for m in (base, stream):
        attn = m.blocks[0].attn
        with torch.no_grad():
            attn.qkv.weight[qkv_slice(attn, kind)] = 0
            attn.qkv.bias[qkv_slice(attn, kind)] = 0
    idx = torch.randint(97, (2, 20))
    torch.testing.assert_close(stream(idx)[0], base(idx)[0], rtol=0, atol=1e-6)
    # ... and it is not trivially equal: with the source intact the outputs differ.
    base2, stream2 = twin(tiny(n_layer=n_layer), tiny(spec, n_layer=n_layer))
    assert (stream2(idx)[0] - base2(idx)[0]).abs().max() > 1e-4


@pytest.mark.parametrize("spec", ["value-learned", "key-first-learned-per-head", "query-learned"])
def test_zero_stream_weight_equals_baseline(spec):
    base, stream = twin(tiny(n_layer=4), tiny(spec, n_layer=4))
    for block in stream.blocks[1:]:
        with torch.no_grad():
            block.attn.stream_mix[0] = 1.0
            block.attn.stream_mix[1] = 0.0
    idx = torch.randint(97, (2, 16))
    torch.testing.assert_close(stream(idx)[0], base(idx)[0], rtol=0, atol=1e-6)


def reference_value_stream(x, layers):
    """Hand-written out_n = softmax(Q_n K_n^T / sqrt(d)) (V_n + V_{n-1}), x <- x + out W_o."""
    v_prev = None
    for layer in layers:
        H, hd = layer.n_head, layer.head_dim
        W, b = layer.qkv.weight, layer.qkv.bias
        qkv = x @ W.T + b
        q, k, v = (qkv[..., i * H * hd : (i + 1) * H * hd] for i in range(3))
        q, k, v = (t.unflatten(-1, (H, hd)).transpose(-3, -2) for t in (q, k, v))
        T = x.shape[-2]
        s = q @ k.transpose(-1, -2) / math.sqrt(hd)
        s = s.masked_fill(~torch.ones(T, T, dtype=torch.bool).tril(), float("-inf"))
        out = torch.softmax(s, -1) @ (v if v_prev is None else v + v_prev)
        v_prev = v
        out = out.transpose(-3, -2).flatten(-2)
        x = x + out @ layer.proj.weight.T + layer.proj.bias
    return x


def test_value_stream_matches_hand_written_reference():
    torch.manual_seed(0)
    stream = StreamConfig("value")
    layers = [StreamAttention(24, 3, i, stream=stream, bias=True) for i in range(3)]
    x = torch.randn(2, 11, 24)
    y, carry = x, None
    for layer in layers:
        a, carry = layer(y, carry)
        y = y + a
    torch.testing.assert_close(y, reference_value_stream(x, layers), rtol=0, atol=1e-5)


def test_stream_is_not_cumulative():
    """Layer n hands on its own V_n, not V_n + V_{n-1}."""
    torch.manual_seed(0)
    layers = [StreamAttention(16, 2, i, stream=StreamConfig("value")) for i in range(2)]
    x = torch.randn(1, 5, 16)
    _, c1 = layers[0](x)
    _, c2 = layers[1](x, c1)
    v2 = layers[1].qkv(x)[..., 32:].unflatten(-1, (2, 8)).transpose(1, 2)
    torch.testing.assert_close(c2, v2)


GQA = dict(n_head=4, n_kv_head=2)


# Every stream with GPT-2's block and 4 key/value heads; one of each mechanism in both blocks
# (RoPE positions continue from the cache) with 4, 2 and 1 key/value heads.
ONE_OF_EACH = [
    "none",
    "value-learned-per-head",
    "key-first-gated",
    "value-shared",
    "value-embed",
    "key-smear",
]
KV_CASES = [(s, "mha", "gpt2") for s in VARIANTS] + [
    (s, h, b) for s in ONE_OF_EACH for h in ("mha", "gqa", "mqa") for b in ("gpt2", "modern")
    if (h, b) != ("mha", "gpt2")
]  # fmt: skip


@pytest.mark.parametrize("spec,heads,block", KV_CASES)
def test_kv_cache_decoding_equals_full_forward(spec, heads, block):
    """Decoding with the cache, a prefix, a chunk, then token by token, equals the forward."""
    torch.manual_seed(1)
    kw = {"mha": {}, "gqa": GQA, "mqa": {"n_kv_head": 1}}[heads]
    model = GPT(tiny(spec, **kw, **(MODERN if block == "modern" else {}))).eval()
    with torch.no_grad():  # a learned smear off its start (0: no smear to decode)
        for name, p in model.named_parameters():
            if name.endswith("stream_smear"):
                p.normal_()
    idx = torch.randint(97, (2, 12))
    full, _ = model(idx)
    cache = model.new_cache()
    steps = [model(idx[:, :4], cache=cache)[0]]  # a prefix, then a chunk of 2, then one by one
    steps.append(model(idx[:, 4:6], cache=cache)[0])
    steps += [model(idx[:, t : t + 1], cache=cache)[0] for t in range(6, 12)]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, rtol=0, atol=1e-5)


def test_generate_greedy_matches_full_forward_argmax():
    torch.manual_seed(2)
    model = GPT(tiny("value")).eval()
    out = model.generate(torch.randint(97, (1, 5)), 8, temperature=0)
    logits, _ = model(out[:, :-1])
    torch.testing.assert_close(logits[0, 4:].argmax(-1), out[0, 5:])


def test_generate_slides_its_window_past_the_context():
    """Past block_size every token is the argmax given the block_size tokens before it."""
    torch.manual_seed(3)
    model = GPT(tiny("value")).eval()
    T = model.cfg.block_size
    out = model.generate(torch.randint(97, (1, T - 3)), 10, temperature=0)
    assert out.size(1) == T + 7
    for i in range(T - 3, T + 7):  # every new token, in and past the context
        logits, _ = model(out[:, max(0, i - T) : i])
        assert int(logits[0, -1].argmax()) == int(out[0, i]), i


@pytest.mark.parametrize("mix", ["learned", "learned-per-head"])
def test_first_learned_with_gqa_gets_gradients(mix):
    torch.manual_seed(0)
    model = GPT(tiny(f"value-first-{mix}", **GQA))
    assert model.blocks[0].attn.stream_mix is None  # layer 1 receives nothing
    w = model.blocks[1].attn.stream_mix
    assert w.shape == ((2,) if mix == "learned" else (2, 2, 1, 1))  # per key/value head
    torch.testing.assert_close(w.detach().flatten(), torch.full((w.numel(),), 0.5))
    idx = torch.randint(97, (2, 10))
    _, loss = model(idx, targets=idx)
    loss.backward()
    for block in model.blocks[1:]:
        g = block.attn.stream_mix.grad
        assert g is not None and g.abs().sum() > 0


def test_value_first_is_resformers_fixed_half_mix():
    """`value-first` = 0.5 V_1 + 0.5 V_n (ResFormer's fixed variant): the learned form at its
    0.5/0.5 start; `value-first-sum` = V_1 + V_n, the learned form at 1/1."""
    idx = torch.randint(97, (2, 10))
    fixed, learned = twin(tiny("value-first"), tiny("value-first-learned"))
    torch.testing.assert_close(fixed(idx)[0], learned(idx)[0], rtol=0, atol=1e-6)
    unit, learned = twin(tiny("value-first-sum"), tiny("value-first-learned"))
    assert not torch.allclose(unit(idx)[0], learned(idx)[0], atol=1e-3)
    with torch.no_grad():
        for block in learned.blocks[1:]:
            block.attn.stream_mix.fill_(1.0)
    torch.testing.assert_close(unit(idx)[0], learned(idx)[0], rtol=0, atol=1e-6)


def test_learned_previous_starts_as_unit_sum():
    torch.manual_seed(0)
    base, learned = twin(tiny("value"), tiny("value-learned"))
    idx = torch.randint(97, (2, 10))
    torch.testing.assert_close(learned(idx)[0], base(idx)[0], rtol=0, atol=1e-6)


def test_batched_equals_looped():
    torch.manual_seed(3)
    model = GPT(tiny("value")).eval()
    idx = torch.randint(97, (4, 9))
    batched, _ = model(idx)
    looped = torch.cat([model(idx[i : i + 1])[0] for i in range(4)])
    torch.testing.assert_close(batched, looped, rtol=0, atol=1e-5)


def test_sdpa_matches_explicit_softmax_attention_with_gqa():
    torch.manual_seed(4)
    layer = StreamAttention(16, 4, 0, n_kv_head=2)
    x = torch.randn(2, 7, 16)
    y, _ = layer(x)
    q, k, v = layer.qkv(x).split([16, 8, 8], dim=-1)
    q = q.unflatten(-1, (4, 4)).transpose(1, 2)
    k = k.unflatten(-1, (2, 4)).transpose(1, 2).repeat_interleave(2, 1)
    v = v.unflatten(-1, (2, 4)).transpose(1, 2).repeat_interleave(2, 1)
    s = (q @ k.transpose(-1, -2) / 2.0).masked_fill(
        ~torch.ones(7, 7, dtype=torch.bool).tril(), -1e9
    )
    ref = layer.proj((torch.softmax(s, -1) @ v).transpose(1, 2).flatten(-2))
    torch.testing.assert_close(y, ref, rtol=0, atol=1e-5)


def test_presets_match_paper_sizes():
    m = GPT(PRESETS["tinystories-8m"])
    assert abs(m.num_params() / 1e6 - 6.3) < 0.05
    assert abs(m.num_params(non_embedding=False) / 1e6 - 19.2) < 0.1
    assert 115e6 < m.flops_per_token() < 125e6  # issue 5: ~125 MFLOP a token
    assert preset("gpt-1b").n_layer == 24 and preset("gpt2-124m").n_embd == 768
    assert preset("tiny", stream="value").stream == StreamConfig("value")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_compiled_cross_entropy_form_equals_torch(dtype):
    torch.manual_seed(0)
    logits = (3 * torch.randn(2, 7, 50)).to(dtype).requires_grad_()
    targets = torch.randint(50, (2, 7))
    targets[0, :3] = -100  # ignored positions
    mine = _cross_entropy_lse(logits.flatten(0, 1), targets.flatten())
    (g_mine,) = torch.autograd.grad(mine, logits)
    ref = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=-100)
    (g_ref,) = torch.autograd.grad(ref, logits)
    torch.testing.assert_close(mine, ref, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(g_mine, g_ref)
    assert g_mine[0, :3].abs().max() == 0


def test_cross_entropy_keeps_float64():
    """Both forms compute in float64 for float64 logits (they cast bf16 up to float32, and
    once cast float64 down too, which put 1e-7 differences into float64 equivalence tests)."""
    torch.manual_seed(0)
    logits, targets = torch.randn(6, 40, dtype=torch.float64), torch.randint(32, (6,))
    ref = F.cross_entropy(logits[:, :32], targets)
    for form in (cross_entropy(logits, targets, 32), _cross_entropy_lse(logits, targets, 32)):
        assert form.dtype == torch.float64
        torch.testing.assert_close(form, ref, rtol=1e-14, atol=1e-14)


def test_compiled_cross_entropy_masks_padding_columns():
    """Columns past vocab_size (padding rows of the embedding) are outside the distribution,
    however large their logits, and get zero gradient."""
    torch.manual_seed(0)
    logits = torch.randn(9, 40)
    logits[:, 32:] = 50.0  # 8 padding columns with logits that would dominate a softmax
    logits.requires_grad_()
    targets = torch.randint(32, (9,))
    mine = _cross_entropy_lse(logits, targets, vocab_size=32)
    (g,) = torch.autograd.grad(mine, logits)
    ref = F.cross_entropy(logits[:, :32], targets)
    (g_ref,) = torch.autograd.grad(ref, logits)
    torch.testing.assert_close(mine, ref)
    torch.testing.assert_close(g, g_ref)
    assert g[:, 32:].abs().max() == 0


def test_logits_are_detached_when_a_loss_is_returned():
    model = GPT(tiny("value"))
    x = torch.randint(97, (2, 8))
    logits, loss = model(x, x)
    assert loss.requires_grad and not logits.requires_grad
    logits, _ = model(x)  # no targets: the logits are the output to differentiate
    assert logits.requires_grad


def test_padded_vocabulary_is_the_unpadded_model():
    cfg = preset("tiny", vocab_size=500, stream="value")  # 500 rows padded to 512
    padded, plain = GPT(cfg), GPT(replace(cfg, vocab_multiple=1))
    assert padded.wte.weight.shape[0] == 512 and plain.wte.weight.shape[0] == 500
    sd = padded.state_dict()
    sd["wte.weight"] = sd["lm_head.weight"] = sd["wte.weight"][:500]
    plain.load_state_dict(sd)
    x = torch.randint(500, (2, 9))
    logits, loss = padded(x, x)
    ref_logits, ref_loss = plain(x, x)
    assert logits.shape == (2, 9, 500)
    torch.testing.assert_close(logits, ref_logits, rtol=0, atol=1e-6)
    torch.testing.assert_close(loss, ref_loss)
    loss.backward()
    assert padded.wte.weight.grad[500:].abs().max() == 0  # padding rows are never used
    assert padded.num_params() == plain.num_params()
    assert padded.flops_per_token() == plain.flops_per_token()


def test_stream_needs_two_layers():
    with pytest.raises(ConfigError, match="at least 2"):
        ToyICLConfig(n_attn_layers=1, stream=StreamConfig("key"))
    with pytest.raises(ConfigError, match="at least 2"):
        tiny("value", n_layer=1)


def test_toy_icl_value_stream_reference():
    torch.manual_seed(0)
    base = ToyICL(ToyICLConfig()).eval()
    model = ToyICL(ToyICLConfig(stream=StreamConfig("value"))).eval()
    model.load_state_dict(base.state_dict())
    x = torch.randn(3, 17, 150) * 0.3
    # By hand: unscaled single-head attention, layer 2 attends with V2 + V1.
    W1, W2 = (layer.qkv.weight for layer in model.attn)
    causal = ~torch.ones(17, 17, dtype=torch.bool).tril()

    def att(x, W, extra=None):
        q, k, v = (x @ W[i * 150 : (i + 1) * 150].T for i in range(3))
        s = (q @ k.transpose(-1, -2)).masked_fill(causal, float("-inf"))
        return torch.softmax(s, -1) @ (v if extra is None else v + extra), v

    a1, v1 = att(x, W1)
    h = x + a1
    a2, _ = att(h, W2, v1)
    h = (h + a2)[:, -1]
    for layer in model.mlp:
        h = F.relu(layer(h))
    torch.testing.assert_close(model(x), model.readout(h), rtol=0, atol=1e-5)
    assert (model(x) - base(x)).abs().max() > 1e-4


# -- StreamAttention as a user meets it ----------------------------------------------------------
def test_stream_attention_takes_a_stream_name():
    from attnstreams.streams import StreamAttention

    layer = StreamAttention(64, 4, 1, stream="value-learned")
    assert layer.stream.name == "value-learned" and layer.stream_mix is not None
    with pytest.raises(ConfigError):
        StreamAttention(64, 4, 1, stream="values")


def test_a_stream_layer_without_its_carry_is_an_error():
    """It ran silently without the stream before."""
    from attnstreams.streams import StreamAttention

    x = torch.randn(2, 5, 32)
    first, second = StreamAttention(32, 4, 0, "value"), StreamAttention(32, 4, 1, "value")
    _, carry = first(x)
    second(x, carry)  # fine
    with pytest.raises(ValueError, match="got no carry"):
        second(x)
    StreamAttention(32, 4, 1, "none")(x)  # no stream: no carry needed


def test_a_carry_of_another_shape_is_a_clear_error():
    from attnstreams.streams import StreamAttention

    x = torch.randn(2, 5, 32)
    _, carry = StreamAttention(32, 4, 0, "value", n_kv_head=2)(x)
    with pytest.raises(ValueError, match="same heads and head size"):
        StreamAttention(32, 4, 1, "value", n_kv_head=4)(x, carry)


def test_key_padding_and_non_causal_attention():
    """Padded keys are never attended to: a padded batch row gives, at its real tokens, what
    the row alone gives; causal=False attends to every key, as SDPA does."""
    from attnstreams.streams import StreamAttention, attention_probs

    torch.manual_seed(0)
    for causal in (True, False):
        layer = StreamAttention(32, 4, 0, "value", causal=causal).eval()
        x = torch.randn(1, 6, 32)
        alone, _ = layer(x[:, :4])
        padded = torch.cat([x[:, :4], torch.randn(1, 2, 32) * 100], 1)  # 2 pad tokens at the end
        keep = torch.tensor([[True] * 4 + [False] * 2])
        got, _ = layer(padded, key_padding_mask=keep)
        assert torch.allclose(got[:, :4], alone, atol=1e-5), causal
    full = StreamAttention(32, 4, 0, causal=False)
    full.keep_attention = True
    full(torch.randn(2, 5, 32))
    assert (full.attn_probs[0, 0, 0] > 0).all()  # the first query sees every key
    q = torch.randn(1, 2, 3, 8)
    assert torch.allclose(attention_probs(q, q, None, causal=False).sum(-1), torch.ones(1, 2, 3))


def test_compiled_with_dynamic_shapes_equals_eager():
    """torch.compile(dynamic=True) traces the length as a symbol: the attention's causal flag
    must still reach SDPA as a bool (a symbolic one is refused). Two lengths, one graph."""
    torch.manual_seed(0)
    cfg = preset("modern-tiny", stream="value", dropout=0.0, n_layer=2)  # RoPE and GQA
    model = GPT(cfg).double().eval()
    compiled = torch.compile(model, backend="eager", dynamic=True, fullgraph=True)
    for T in (7, 12):
        x = torch.randint(0, 256, (2, T), generator=torch.Generator().manual_seed(T))
        torch.testing.assert_close(compiled(x)[0], model(x)[0], rtol=0, atol=1e-12)
