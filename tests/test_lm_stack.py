"""Stacked language-model runs (models/stack.py, experiments/lm/stack.py): N models as one
batched computation equal the N models trained alone, in float64 on the CPU."""

from __future__ import annotations

import copy
import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from attnstreams.cli import build_parser, main
from attnstreams.experiments.lm import grid as grid_module
from attnstreams.experiments.lm.arms import parse_arm
from attnstreams.experiments.lm.stack import KERNELS, LMStack
from attnstreams.experiments.lm.train import LMTrainConfig, LMTrainer, train, train_runs
from attnstreams.models.gpt import GPT, preset
from attnstreams.models.stack import ModelStack
from attnstreams.run.config import ConfigError
from attnstreams.streams import KINDS, MIXES, SOURCES, StreamConfig

FIXTURE = Path(__file__).parent / "fixtures" / "tinystories-sample.txt"
# vmap runs CPU attention one model at a time (PyTorch has no CPU batching rule for it)
pytestmark = pytest.mark.filterwarnings("ignore:There is a performance drop:UserWarning")


def every_stream() -> list[str]:
    names = set()
    for kind in KINDS[1:]:
        for source in SOURCES:
            for mix in MIXES:
                try:
                    names.add(StreamConfig(kind, source, mix).name)
                except ConfigError:
                    pass
    return ["none", *sorted(names)]


def models(name: str, arm: str, n: int = 3) -> list[GPT]:
    """n models of one arm (a stream, a residual or STREAM+RESIDUAL), seeds 0..n-1; a residual
    method's weights moved off its start, where it would equal the plain model."""
    stream, residual = parse_arm(arm)
    out = []
    for seed in range(n):
        torch.manual_seed(seed)
        m = GPT(preset(name, stream=stream, residual=residual)).double()
        m.fused_loss = False
        if m.residual is not None:
            with torch.no_grad():
                for p in m.residual.parameters():
                    p.add_(0.1 * torch.randn_like(p))
        out.append(m)
    return out


@pytest.mark.parametrize(
    "name,stream",
    [("tiny", s) for s in every_stream()]
    + [("modern-tiny", s) for s in ("none", "value", "value-embed", "key-smear", "value-gated")]
    + [("tiny", r) for r in ("denseformer", "hc", "dhc", "mhc", "attnres-b2", "mudd", "muddvr")]
    + [("modern-tiny", r) for r in ("attnres", "value+hc")],
)
def test_a_stack_computes_what_each_model_computes_alone(name, stream):
    """Losses, logits and every parameter's gradient of 3 stacked models, each against the same
    model alone (float64), for every stream and residual method; the models' parameters become
    the stack's views."""
    alone = models(name, stream)
    stacked = ModelStack(copy.deepcopy(alone))
    x = torch.randint(0, 512, (3, 2, 24), generator=torch.Generator().manual_seed(1))
    y = torch.randint(0, 512, (3, 2, 24), generator=torch.Generator().manual_seed(2))
    logits, loss = stacked(x, y)
    loss.sum().backward()
    for i, m in enumerate(alone):
        own_logits, own_loss = m(x[i], y[i])
        own_loss.backward()
        torch.testing.assert_close(loss[i], own_loss, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(logits[i], own_logits, rtol=1e-12, atol=1e-12)
        for n, p in m.named_parameters():
            torch.testing.assert_close(stacked.stacked(n).grad[i], p.grad, rtol=1e-10, atol=1e-12)
    with torch.no_grad():  # a model's parameters are views of the stack
        stacked.stacked("wte.weight")[1].zero_()
    assert stacked.models[1].wte.weight.abs().sum() == 0 == stacked.models[1].lm_head.weight.sum()


def test_per_model_clipping_is_clip_grad_norm_of_each_model():
    alone = models("tiny", "value-learned")
    stacked = ModelStack(copy.deepcopy(alone))
    x = torch.randint(0, 512, (3, 2, 16))
    stacked(x, x)[1].sum().backward()
    stacked.clip_grad_norms_(0.05)
    for i, m in enumerate(alone):
        m(x[i], x[i])[1].backward()
        torch.nn.utils.clip_grad_norm_(m.parameters(), 0.05)
        for n, p in m.named_parameters():
            torch.testing.assert_close(stacked.stacked(n).grad[i], p.grad, rtol=1e-10, atol=1e-14)


def test_a_stack_refuses_models_of_two_architectures():
    with pytest.raises(ConfigError, match="one architecture"):
        ModelStack([*models("tiny", "none", 1), *models("tiny", "value-learned", 1)])


def test_the_vmapped_forward_compiles():
    """torch.compile traces the stack's vmapped forward and backward (the aot_eager backend:
    the CPU check; the GPU runs use Inductor)."""
    stacked = ModelStack(models("tiny", "value", 2))
    f = stacked.call()
    x = torch.randint(0, 512, (2, 2, 16))
    eager = f(stacked.params(), x, x)[1]
    eager.sum().backward()
    grads = {n: p.grad.clone() for n, p in stacked.named_parameters()}
    stacked.zero_grad()
    compiled = torch.compile(f, backend="aot_eager", fullgraph=True)(stacked.params(), x, x)[1]
    compiled.sum().backward()
    torch.testing.assert_close(compiled, eager, rtol=1e-12, atol=1e-12)
    for n, p in stacked.named_parameters():
        torch.testing.assert_close(p.grad, grads[n], rtol=1e-10, atol=1e-12)


RUN = LMTrainConfig(
    preset="tiny",
    stream="value-learned",
    steps=6,
    batch=4,
    block_size=32,
    warmup=2,
    eval_every=3,
    eval_batches=2,
    ioi_prompts=20,
    dropout=0.0,
)


def trainers(data_dir, seeds, double=False, **over) -> list[LMTrainer]:
    out = [LMTrainer(replace(RUN, seed=s, **over), data_dir) for s in seeds]
    for t in out:
        if double:
            t.model.double()
    return out


@pytest.mark.parametrize("stream", ["none", "value-learned", "value-first-gated", "key-smear"])
def test_stacked_training_steps_equal_each_run_trained_alone(data_dir, stream):
    """4 AdamW steps (warmup, weight decay, clipping that bites, 2 pieces a batch) of 3 seeds
    in one stack: each run's losses, weights and Adam moments as when it trains alone."""
    over = {"stream": stream, "grad_clip": 0.05, "grad_accum": 2}
    alone = trainers(data_dir, [0, 1, 2], double=True, **over)
    stack = LMStack(trainers(data_dir, [0, 1, 2], double=True, **over))
    for _ in range(4):
        losses = stack.train_step()
        for i, t in enumerate(alone):
            torch.testing.assert_close(losses[i], t.train_step().double(), rtol=1e-12, atol=0)
    stack.sync()
    for t, s in zip(alone, stack.members, strict=True):
        assert s.step == t.step == 4
        mine = dict(s.model.named_parameters())
        for n, p in t.model.named_parameters():
            torch.testing.assert_close(mine[n], p, rtol=1e-10, atol=1e-12)
            for k in ("exp_avg", "exp_avg_sq"):
                torch.testing.assert_close(
                    s.opt.state[mine[n]][k], t.opt.state[p][k], rtol=1e-9, atol=1e-15
                )
        torch.testing.assert_close(s.loss_sum, t.loss_sum, rtol=1e-6, atol=0)  # float32 sums


@pytest.mark.parametrize("stream", ["value-learned", "key-smear"])
def test_a_stack_evaluates_its_runs_at_once_as_each_evaluates_alone(data_dir, stream):
    """Held-out loss, story ICL, both IOI sets and induction of 3 seeds after 2 steps, as one
    batched evaluation: each run's numbers as its own evaluation gives them (float64)."""
    alone = trainers(data_dir, [0, 1, 2], double=True, stream=stream)
    stack = LMStack(trainers(data_dir, [0, 1, 2], double=True, stream=stream))
    for _ in range(2):
        stack.train_step()
        for t in alone:
            t.train_step()
    got = stack.evaluate_runs()
    assert len(got) == 3 and got[0] != got[1]
    for g, t in zip(got, alone, strict=True):
        a, b = flat(g), flat(t.evaluate())
        assert a.keys() == b.keys() and {"/val_loss", "/ioi_accuracy", "/context_gain"} <= a.keys()
        for k, v in b.items():
            assert a[k] == v if isinstance(v, str) else a[k] == pytest.approx(v, 1e-9, 1e-12), k
    assert all(m.training for m in stack.stack.models)  # back in training mode


def flat(value, key=""):
    """Numbers of a metrics row, nested dicts and lists included, by path."""
    if isinstance(value, dict):
        return {k: v for name, x in value.items() for k, v in flat(x, f"{key}/{name}").items()}
    if isinstance(value, list):
        return {k: v for i, x in enumerate(value) for k, v in flat(x, f"{key}/{i}").items()}
    return {key: value}


def rows(path: Path) -> list[dict]:
    return [
        {k: v for k, v in json.loads(ln).items() if k != "elapsed_s"}
        for ln in path.read_text().splitlines()
    ]


def test_stacked_runs_write_runs_and_resume(data_dir, tmp_path):
    """Each stacked run writes the folder a run alone writes (its rows equal up to float32
    rounding), says it was stacked, and resumes: a stack stopped and resumed equals one that
    ran through, and a stacked run's checkpoint continues alone."""
    outs = [tmp_path / f"s{i}" for i in range(2)]
    train_runs(LMStack(trainers(data_dir, [0, 1])), outs, progress=False)
    for i, out in enumerate(outs):
        train(LMTrainer(replace(RUN, seed=i), data_dir), tmp_path / f"alone{i}", progress=False)
        got, ref = rows(out / "metrics.jsonl"), rows(tmp_path / f"alone{i}" / "metrics.jsonl")
        assert [r["step"] for r in got] == [r["step"] for r in ref] == [0, 3, 6]
        for a, b in zip(got, ref, strict=True):
            a, b = flat(a), flat(b)
            assert a.keys() == b.keys()
            for k, v in b.items():
                ok = a[k] == v if isinstance(v, str) else a[k] == pytest.approx(v, 2e-4, 1e-5)
                assert ok, (k, a[k], v)
        config = json.loads((out / "config.json").read_text())
        assert config["stack"] == {"size": 2, "seeds": [0, 1]} and config["config"]["seed"] == i
        assert json.loads((out / "summary.json").read_text())["stack"] == 2
    parts = [tmp_path / f"p{i}" for i in range(2)]
    train_runs(LMStack(trainers(data_dir, [0, 1])), parts, progress=False, stop_after=4)
    train_runs(LMStack(trainers(data_dir, [0, 1])), parts, resume=True, progress=False)
    for out, part in zip(outs, parts, strict=True):
        assert rows(out / "metrics.jsonl") == rows(part / "metrics.jsonl")
    more = replace(RUN, seed=1, steps=9)
    with pytest.raises(ConfigError, match="different config"):  # steps define the run
        train(LMTrainer(more, data_dir), outs[1], resume=True, progress=False)
    train(LMTrainer(replace(RUN, seed=1), data_dir), parts[1], resume=True, progress=False)


def test_stacks_refuse_what_they_cannot_train(data_dir):
    with pytest.raises(ConfigError, match="one config but the seed"):
        LMStack([*trainers(data_dir, [0]), *trainers(data_dir, [1], stream="value")])
    with pytest.raises(ConfigError, match="non-finite"):
        LMStack(trainers(data_dir, [0, 1], nonfinite="skip"))


def test_lm_grid_stacks_seeds_and_continues(tmp_path, capsys, monkeypatch):
    """`lm grid --stack 2`: 3 seeds as a stack of 2 and a run alone, the stack given the
    --stack-kernel asked for; the same command again finds every run finished; a bad --stack
    or --stack-kernel is one line and exit 2."""
    argv = [
        "lm", "grid", "--preset", "tiny", "--data", str(FIXTURE), "--train-tokens", "20000",
        "--val-tokens", "2000", "--vocab-size", "400", "--steps", "4", "--batch", "4",
        "--block-size", "32", "--eval-every", "2", "--eval-batches", "1", "--ioi-prompts", "8",
        "--stream", "value", "--seeds", "3", "--stack", "2", "--stack-kernel", "flash", "--json",
        "--out", str(tmp_path / "g"),
    ]  # fmt: skip
    kernels = []

    def stack(trainers, kernel="math"):
        kernels.append(kernel)
        return LMStack(trainers, kernel)

    monkeypatch.setattr(grid_module, "LMStack", stack)
    assert main(argv) == 0
    assert kernels == ["flash"]
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert [r["stack"] for r in out["runs"]] == [2, 2, 1]
    stacks = [json.loads((tmp_path / "g" / f"value-s{s}" / "config.json").read_text())["stack"]
              for s in range(3)]  # fmt: skip
    assert stacks == [{"size": 2, "seeds": [0, 1]}] * 2 + [None]
    assert "2 of 3 runs trained in stacks of 2 " in Path(out["report"]).read_text()
    assert main(argv) == 0  # every run finished: read back
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["runs"] == out["runs"]
    bad = [*argv[:-1], str(tmp_path / "h")]
    bad[bad.index("--stack") + 1] = "0"
    assert main(bad) == 2
    assert "stack" in capsys.readouterr().err and not (tmp_path / "h").exists()
    assert main([*argv[:-1], str(tmp_path / "k"), "--nonfinite", "skip"]) == 2
    assert "non-finite" in capsys.readouterr().err and not (tmp_path / "k").exists()
    bad[bad.index("--stack") + 1] = "2"
    bad[bad.index("--stack-kernel") + 1] = "fast"
    with pytest.raises(SystemExit) as exit_:
        main(bad)
    assert exit_.value.code == 2 and not (tmp_path / "h").exists()
    assert "--stack-kernel" in capsys.readouterr().err


def test_the_stack_kernels_are_the_commands_choices(data_dir):
    parse = build_parser().parse_args
    assert parse(["lm", "grid", "--out", "g"]).stack_kernel == "math"
    for kernel in KERNELS:
        assert parse(["lm", "grid", "--out", "g", "--stack-kernel", kernel]).stack_kernel == kernel
    with pytest.raises(ConfigError, match="stack kernel must be one of math, flash"):
        LMStack(trainers(data_dir, [0, 1]), kernel="fast")


def test_the_readme_example_runs():
    """README's "Many seeds as one computation" block, with a model maker and a batch."""
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    section = readme.split("### Many seeds as one computation")[1]
    code = section.split("```python\n")[1].split("```")[0]

    def make_model(seed):
        torch.manual_seed(seed)
        return GPT(preset("tiny", stream="value"))

    x = torch.randint(0, 512, (10, 2, 16))
    scope = {"torch": torch, "make_model": make_model, "x": x, "y": x}
    before = make_model(3).lm_head.weight.detach().clone()
    exec(code, scope)
    stack = scope["stack"]
    assert len(stack.models) == 10 and scope["losses"].shape == (10,)
    assert not torch.equal(stack.models[3].lm_head.weight, before)  # model 3 took a step
    assert scope["logits"].shape == (10, 2, 16, 512)
    torch.testing.assert_close(scope["logits"][3], stack.models[3](x[0])[0])
