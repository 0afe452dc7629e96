"""DenseFormer's depth-weighted average (models/residual.py) in GPT: it starts as the plain model,
computes the paper's formula, decodes with the cache, compiles, trains under DDP/FSDP and in a
stack as each model alone."""

from __future__ import annotations

import copy
import json
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
from residual_helpers import check_cache, check_compiled, check_stack, gpt, residual_grads, tokens

from attnstreams.cli import main
from attnstreams.experiments.lm.data import DataConfig, prepare_data
from attnstreams.experiments.lm.train import (
    LMTrainConfig,
    LMTrainer,
    _decays,
    run_defining,
    train,
)
from attnstreams.experiments.lm.weights import load_model
from attnstreams.models.gpt import GPT, GPTConfig, preset
from attnstreams.models.residual import ResidualConfig
from attnstreams.run.config import ConfigError

DENSE = ["denseformer", "denseformer-d2", "denseformer-p2", "denseformer-d2-p2"]
FIXTURE = Path(__file__).parent / "fixtures" / "tinystories-sample.txt"
# vmap runs CPU attention one model at a time (PyTorch has no CPU batching rule for it)
pytestmark = pytest.mark.filterwarnings("ignore:There is a performance drop:UserWarning")


def perturb(model: GPT, seed: int = 1) -> None:
    """DWA weights off their start (identity): each a random vector."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.residual.weights.values():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype))


@pytest.mark.parametrize("name", ["tiny", "modern-tiny"])
@pytest.mark.parametrize(
    "residual,stream", [(r, "none") for r in DENSE] + [("denseformer-d2", "value-learned")]
)
def test_a_new_denseformer_is_the_plain_model(name, residual, stream):
    """Same seed: the same other weights (DWA draws no random numbers) and the same logits."""
    plain, dense = gpt(name, "plain", stream), gpt(name, residual, stream)
    state = dense.state_dict()
    assert all(torch.equal(v, state[k]) for k, v in plain.state_dict().items())
    assert set(state) - set(plain.state_dict()) == {f"residual.weights.{i}" for i in range(4)
        if (i + 1) % ResidualConfig.parse(residual).period == 0}  # fmt: skip
    x = tokens((2, 24))
    assert torch.equal(dense(x)[0], plain(x)[0])


def reference_logits(model: GPT, idx: torch.Tensor) -> torch.Tensor:
    """The paper's DWA written out (no stream): X_0 the embedding output, X_{i+1} = B_i(Y_i);
    after block i with (i+1) % p == 0, Y_{i+1} = sum over j <= i+1, j = i+1 mod k of
    alpha_{i,j} X_j (oldest first), else Y_{i+1} = X_{i+1}; logits from Y_L."""
    k, p = model.cfg.residual.dilation, model.cfg.residual.period
    x = model.wte(idx)
    if model.wpe is not None:
        x = x + model.wpe(torch.arange(idx.size(1)))
    outputs, y = [x], x
    for i, block in enumerate(model.blocks):
        out, _ = block(y)
        outputs.append(out)
        if (i + 1) % p:
            y = out
            continue
        alpha = model.residual.weights[str(i)]
        mixed = [outputs[j] for j in range(i + 2) if j % k == (i + 1) % k]
        y = sum(a * o for a, o in zip(alpha, mixed, strict=True))
    return model.lm_head(model.ln_f(y))[..., : model.cfg.vocab_size]


@pytest.mark.parametrize("name", ["tiny", "modern-tiny"])
@pytest.mark.parametrize("residual", DENSE)
def test_weights_are_used_as_the_paper_writes(name, residual):
    model = gpt(name, residual)
    x = tokens((2, 24))
    start = model(x)[0]
    perturb(model)
    got = model(x)[0]
    assert (got - start).abs().max() > 1e-3  # the weights are read
    torch.testing.assert_close(got, reference_logits(model, x), rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", ["tiny", "modern-tiny"])
@pytest.mark.parametrize(
    "residual,stream", [("denseformer", "none"), ("denseformer-d2-p2", "value-learned")]
)
def test_kv_cache_decoding_equals_full_forward(name, residual, stream):
    """A prefix, a chunk of 2, then token by token through the cache: the full forward."""
    model = gpt(name, residual, stream).eval()
    perturb(model)
    check_cache(model)


def test_compiled_equals_eager():
    """torch.compile (aot_eager: the traced graph, no Inductor code) gives eager's loss and
    gradients, DWA weights included."""
    model = gpt("modern-tiny", "denseformer-d2-p2")
    perturb(model)
    check_compiled(model)


@pytest.mark.parametrize("residual", DENSE)
def test_every_dwa_weight_gets_a_gradient_from_the_start(residual):
    model = gpt("tiny", residual)
    grads = residual_grads(model)
    assert grads and all((g != 0).all() for g in grads.values()), grads


# Two cases of each method, both blocks, with and without a stream: 2 processes (DDP, then
# FSDP) against the whole batch in one, float64, in test_parallel.py's one launch with the
# streams (each launch costs seconds).
PARALLEL_CASES = [
    "none/gpt2/denseformer-d2",
    "value-learned/modern/denseformer-p2",
    "none/gpt2/dhc-n2",
    "value-learned/modern/mhc-n2",
    "none/gpt2/attnres",
    "value-learned/modern/attnres-b2",
    "none/gpt2/mudd",
    "value-learned/modern/mudd",
    "none/gpt2/muddvr",
    "value-embed/modern/muddvr",
]


@pytest.mark.parametrize(
    "name,residual", [("tiny", "denseformer"), ("modern-tiny", "denseformer-d2-p2")]
)
def test_a_stack_computes_what_each_model_computes_alone(name, residual):
    check_stack(name, residual, perturb)


@pytest.mark.parametrize(
    "spec,name",
    [
        ("plain", "plain"),
        ("denseformer", "denseformer"),
        ("denseformer-d2", "denseformer-d2"),
        ("denseformer-p3", "denseformer-p3"),
        ("denseformer-d2-p2", "denseformer-d2-p2"),
        ("denseformer-p2-d2", "denseformer-d2-p2"),
        ("denseformer-d1-p1", "denseformer"),
    ],
)
def test_parse_name_roundtrip(spec, name):
    cfg = ResidualConfig.parse(spec)
    assert cfg.name == name and ResidualConfig.parse(cfg.name) == cfg
    model_cfg = preset("tiny", residual=spec)
    saved = model_cfg.to_dict()
    assert saved["residual"] == name and GPTConfig(**saved) == model_cfg


@pytest.mark.parametrize(
    "bad",
    ["bogus", "", "dense", "denseformer-d0", "denseformer-x2", "denseformer-d2-d3", "plain-d2",
     "denseformer-d", "denseformer-d2.5", "denseformer+value", 3, None,
     # hyper-connections
     "hc-n0", "hc-n", "hc-n-1", "hc-d2", "hc-p2", "hc-n2-n2", "mhc-x2", "dhc-n2.5", "hc4", "HC",
     "denseformer-n2", "plain-n2", "hc+denseformer", "hc-denseformer", "mhc-n١",
     # Attention Residuals
     "attnres-b0", "attnres-b", "attnres-b-1", "attnres-n2", "attnres-d2", "attnres-b2-b2",
     "attnres-b2.5", "attnres2", "AttnRes", "attn-res", "hc-b2", "denseformer-b2", "plain-b1",
     "attnres-b١", "attnres-bK",
     # MUDD and muddvr
     "mudd-n2", "mudd-b2", "mudd-d2", "MUDD", "mudd2", "mudd-", "mudd-qkvr", "muddvr-n2",
     "muddvr-b2", "muddvr-d2", "MUDDVR", "muddvr2", "muddvr-", "mudd-vr"],
)  # fmt: skip
def test_bad_names_are_one_line(bad):
    with pytest.raises(ConfigError) as e:
        ResidualConfig.parse(bad)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize(
    "kwargs",
    [dict(kind="hc", n=0), dict(kind="hc", dilation=2), dict(kind="mhc", period=2),
     dict(kind="plain", n=2), dict(kind="denseformer", n=4), dict(kind="dhc", n=True),
     dict(kind="attnres", blocks=0), dict(kind="attnres", blocks=True), dict(kind="attnres", n=2),
     dict(kind="hc", blocks=1), dict(kind="plain", blocks=1), dict(kind="attnres", period=2),
     dict(kind="mudd", n=2), dict(kind="mudd", blocks=1), dict(kind="mudd", period=2),
     dict(kind="mudd", dilation=2), dict(kind="muddvr", n=2), dict(kind="muddvr", blocks=1),
     dict(kind="muddvr", period=2)],
)  # fmt: skip
def test_bad_configs_are_refused(kwargs):
    with pytest.raises(ConfigError):
        ResidualConfig(**kwargs)


def test_a_period_past_the_last_block_is_refused():
    with pytest.raises(ConfigError, match="no DWA in 4 layers"):
        preset("tiny", residual="denseformer-p5")


def test_old_configs_are_plain():
    """A model config or run config saved before the field existed reads as plain."""
    saved = preset("tiny").to_dict()
    del saved["residual"]
    assert GPTConfig(**saved).residual == ResidualConfig()
    run = asdict(LMTrainConfig())
    del run["residual"]
    assert run_defining(run) == run_defining(asdict(LMTrainConfig()))
    assert run_defining(run) != run_defining(asdict(LMTrainConfig(residual="denseformer")))


def test_dwa_weights_are_not_decayed():
    model = gpt("tiny", "denseformer")
    decayed = {n for n, p in model.named_parameters() if _decays(n, p)}
    assert decayed and not any(n.startswith("residual.") for n in decayed)
    assert _decays("blocks.0.mlp.fc.weight", torch.nn.Parameter(torch.zeros(2, 2)))
    assert not _decays("residual.weights.3", torch.nn.Parameter(torch.zeros(2, 2)))


@pytest.mark.parametrize(
    "argv,says",
    [
        (["lm", "train", "--residual", "bogus"], "unknown residual 'bogus'"),
        (["lm", "grid", "--residual", "denseformer-q2"], "unknown residual"),
        (["lm", "train", "--residual", "denseformer", "--init-from", "m"], "no --residual"),
        (["lm", "train", "--residual", "hc-n0"], "residual expansion rate n"),
        (["lm", "grid", "--residual", "mhc-d2"], "unknown residual"),
        (["lm", "train", "--residual", "mhc", "--init-from", "m"], "no --residual"),
        (["lm", "train", "--residual", "attnres-b0"], "residual blocks per AttnRes block"),
        (["lm", "train", "--residual", "attnres-b9"], "more than the model's 8"),
        (["lm", "grid", "--residual", "attnres-n2"], "unknown residual"),
        (["lm", "train", "--residual", "attnres", "--init-from", "m"], "no --residual"),
        (["lm", "grid", "--residual", "mudd-n2"], "unknown residual"),
        (["lm", "train", "--residual", "mudd", "--init-from", "m"], "no --residual"),
        (["lm", "grid", "--residual", "muddvr-n2"], "unknown residual"),
        (["lm", "train", "--residual", "muddvr", "--preset", "modern-8m"], "no GQA"),
        (["lm", "train", "--residual", "muddvr", "--stream", "value-shared"], "value-shared"),
        (["lm", "train", "--residual", "muddvr", "--init-from", "m"], "no --residual"),
    ],
)
def test_cli_refusals_are_one_line_before_any_file(tmp_path, capsys, argv, says):
    out = tmp_path / "o"
    assert main([*argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and says in err[0], err
    assert not out.exists()


@pytest.mark.parametrize(
    "residual,still",  # still: weights whose gradient is zero at the start (dhc: the scales)
    [
        ("denseformer-d2", None),
        ("dhc-n2", "scale"),
        ("attnres-b2", None),
        ("mudd", None),
        ("muddvr", None),
    ],
)
def test_lm_train_saves_and_loads_a_residual(tmp_path, capsys, residual, still):
    """A short run: the checkpoint names the residual and loads back as the trained model,
    whose residual weights moved; `lm eval` names it."""
    data = DataConfig(data=str(FIXTURE), vocab_size=512, tokenizer_docs=50, val_tokens=1000)
    data_dir = prepare_data(data, tmp_path / "data", progress=False)
    cfg = LMTrainConfig(preset="tiny", residual=residual, steps=3, batch=2, block_size=16,
                        warmup=1, eval_every=3, eval_batches=1, ioi_prompts=20)  # fmt: skip
    trainer = LMTrainer(cfg, data_dir, "cpu")
    start = copy.deepcopy(trainer.model.residual.state_dict())
    train(trainer, tmp_path / "run", progress=False)
    model, meta = load_model(tmp_path / "run" / "checkpoint.safetensors")
    assert meta["model"]["residual"] == residual
    assert model.cfg.residual == ResidualConfig.parse(residual)
    for n, p in trainer.model.named_parameters():
        torch.testing.assert_close(dict(model.named_parameters())[n], p, rtol=0, atol=0)
    moved = model.residual.state_dict()
    assert start and all(
        not torch.equal(moved[k], v) for k, v in start.items() if not (still and still in k)
    )
    ckpt = str(tmp_path / "run" / "checkpoint.safetensors")
    capsys.readouterr()
    assert main(["lm", "eval", ckpt, "--ioi-prompts", "20", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["residual"] == residual
