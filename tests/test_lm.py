"""IOI and induction metrics on hand-built models, and the LM trainer end to end on CPU."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, replace
from pathlib import Path

import pytest
import torch

from attnstreams.cli import main
from attnstreams.data.corpus import iter_texts
from attnstreams.data.tokenizer import BPETokenizer
from attnstreams.experiments.lm import evals as ioi
from attnstreams.experiments.lm.data import DataConfig, prepare_data
from attnstreams.experiments.lm.train import (
    LMTrainConfig,
    LMTrainer,
    train,
)
from attnstreams.experiments.lm.weights import load_model
from attnstreams.models.gpt import GPT, preset
from attnstreams.run import checkpoint

FIXTURE = Path(__file__).parent / "fixtures" / "tinystories-sample.txt"


class FixedLogits(torch.nn.Module):
    """A stand-in LM whose next-token logits are the same vector at every position."""

    def __init__(self, vocab: int, bias: dict[int, float]):
        super().__init__()
        self.logits = torch.zeros(vocab)
        for k, v in bias.items():
            self.logits[k] = v

    def forward(self, ids):
        return self.logits.expand(*ids.shape, -1).clone(), None


class Copier(torch.nn.Module):
    """Predicts the token `period` positions back: a perfect induction head on repeats."""

    def __init__(self, vocab: int, period: int):
        super().__init__()
        self.vocab, self.period = vocab, period

    def forward(self, ids):
        B, T = ids.shape
        logits = torch.zeros(B, T, self.vocab)
        for t in range(self.period - 1, T):
            logits[torch.arange(B), t, ids[:, t + 1 - self.period]] = 10.0
        return logits, None


@pytest.fixture(scope="module")
def tok():
    names = " ".join(f"{n} gave it to {n}." for n in ioi.CANDIDATE_NAMES)
    return BPETokenizer.train([names * 20] + list(iter_texts(str(FIXTURE), "train")), 1000)


def test_ioi_metrics_on_a_model_that_prefers_one_name(tok):
    names = ioi.single_token_names(tok)
    assert len(names) >= 50
    prompts = ioi.make_ioi_set(names, n=300, seed=1)
    n = len(prompts)
    favourite = max(names, key=lambda x: sum(p.io == x for p in prompts))
    fav_id = tok.encode(" " + favourite)[0]
    model = FixedLogits(tok.vocab_size, {fav_id: 3.0})
    m = ioi.ioi_metrics(model, tok, prompts, "cpu")
    n_io = sum(p.io == favourite for p in prompts)
    n_s = sum(p.s == favourite for p in prompts)
    assert n_io > 0 and n_io == n_s  # every filling is asked with each name as the IO
    assert m["accuracy"] == pytest.approx(n_io / n)  # ties (neither name favoured) do not count
    assert m["logit_diff"] == pytest.approx(0.0, abs=1e-5)
    z = math.exp(3.0) + tok.vocab_size - 1
    p_fav, p_other = math.exp(3.0) / z, 1 / z
    expected_p_io = (n_io * p_fav + (n - n_io) * p_other) / n
    assert m["p_io"] == pytest.approx(expected_p_io, rel=1e-4)


def test_a_model_that_ignores_the_context_scores_chance_exactly(tok):
    """Any fixed preference among names (here random logits) gives accuracy 0.5 and mean
    difference 0: the set asks each filling with both names as the IO, in both orders."""
    names = ioi.single_token_names(tok)
    prompts = ioi.make_ioi_set(names, n=256, seed=3)
    bias = dict(enumerate(torch.randn(tok.vocab_size, generator=torch.Generator().manual_seed(0))))
    m = ioi.ioi_metrics(FixedLogits(tok.vocab_size, bias), tok, prompts, "cpu", by_template=True)
    assert m["accuracy"] == 0.5 and m["logit_diff"] == pytest.approx(0.0, abs=1e-5)
    assert all(acc == 0.5 for acc, _ in m["by_template"].values())
    assert len(m["by_template"]) == len(ioi.TEMPLATES)


def test_multi_token_names_scored_as_a_whole(tok):
    model = FixedLogits(tok.vocab_size, {})  # uniform
    long = " Bartholomewina"
    k = len(tok.encode(long))
    assert k > 1
    lp = ioi.continuation_logprobs(model, tok, [("When Tom and Mia went", long)], "cpu")
    assert lp[0] == pytest.approx(-k * math.log(tok.vocab_size), rel=1e-5)


def test_ioi_set_design(tok):
    names = ioi.single_token_names(tok)
    prompts = ioi.make_ioi_set(names, n=1000)
    per_round = 4 * len(ioi.TEMPLATES)
    assert len(ioi.TEMPLATES) >= 15 and len(prompts) == -(-1000 // per_round) * per_round
    # every template equally often, each in both orders equally often (the old set tied
    # template and order: i % 16 and i % 2)
    from collections import Counter

    counts = Counter((p.template, p.order) for p in prompts)
    assert set(counts.values()) == {len(prompts) // (2 * len(ioi.TEMPLATES))}
    assert len(counts) == 2 * len(ioi.TEMPLATES)
    for p in prompts[:50]:
        first, second = p.text.split(" and ")[0].split()[-1], p.text.split(" and ")[1].split()[0]
        assert {first, second.rstrip(",")} == {p.io, p.s} and p.io != p.s
        assert (first == p.io) == (p.order == "ABBA")
        assert p.text.count(p.s) == 2 and p.text.count(p.io) == 1
    assert any(ioi.template_regex(t).fullmatch(prompts[0].text) for t in ioi.TEMPLATES)


def test_paper_prompts_are_labelled_with_their_order():
    """ "After John and Mary went to the store, John gave ... to": the IO (Mary) is named second,
    so the order is BABA; the old labels had it ABBA."""
    prompts = ioi.paper_prompts()
    assert len(prompts) == 8
    first = prompts[0]
    assert first.text.startswith("After John and Mary") and ", John gave" in first.text
    assert (first.io, first.s, first.order) == ("Mary", "John", "BABA")
    for p in prompts:
        named_first = p.text.split(" and ")[0].split()[-1]
        assert (named_first == p.io) == (p.order == "ABBA")


def test_generated_stories_never_match_an_ioi_template():
    from attnstreams.data.stories import generate_stories

    patterns = [ioi.template_regex(t) for t in ioi.TEMPLATES]
    for story in generate_stories(3000, seed=7):
        for pat in patterns:
            assert not pat.search(story), story


def test_induction_metrics_on_a_copier():
    perfect = ioi.induction_metrics(Copier(100, 20), 100, "cpu", length=20, batch=8)
    assert perfect["induction_accuracy"] == 1.0
    assert perfect["induction_score"] == pytest.approx(math.log(100) - 0.0045, abs=1e-3)
    blind = ioi.induction_metrics(FixedLogits(100, {}), 100, "cpu", length=20, batch=8)
    assert blind["induction_score"] == pytest.approx(0.0, abs=1e-5)


class Spike(torch.nn.Module):
    """Uniform logits, except a confident wrong guess (token 0) at one position."""

    def __init__(self, vocab: int, at: int):
        super().__init__()
        self.vocab, self.at = vocab, at

    def forward(self, ids):
        logits = torch.zeros(*ids.shape, self.vocab)
        logits[:, self.at, 0] = 30.0
        return logits, None


def test_induction_loss_leaves_out_the_repeats_first_token():
    """Nothing in the context predicts the first token of the second copy (position L - 1
    predicts it): a miss there must not count against induction."""
    L, V = 20, 100
    m = ioi.induction_metrics(Spike(V, L - 1), V, "cpu", length=L, batch=4, low=1)
    assert m["induction_loss"] == pytest.approx(math.log(V), rel=1e-6)
    hit = ioi.induction_metrics(Spike(V, L), V, "cpu", length=L, batch=4, low=1)
    assert hit["induction_loss"] > math.log(V) + 1  # position L is counted


class PrefixMatcher(torch.nn.Module):
    """Uniform logits; one attention layer whose head 3 attends, from every token, to the
    token after the previous occurrence of the same token (a perfect prefix-matching head)."""

    def __init__(self, vocab: int):
        super().__init__()
        from attnstreams.streams import StreamAttention

        self.vocab, self.attn = vocab, StreamAttention(8, 4, 0)

    def forward(self, ids):
        B, T = ids.shape
        if self.attn.keep_attention:
            p = torch.full((B, 4, T, T), 0.0)
            for b in range(B):
                for t in range(T):
                    prev = [j for j in range(t) if ids[b, j] == ids[b, t]]
                    p[b, :, t, 0] = 1.0  # the other heads look at the first token
                    if prev:
                        p[b, 3, t, 0], p[b, 3, t, prev[-1] + 1] = 0.0, 1.0
            self.attn.attn_probs = p
        return torch.zeros(B, T, self.vocab), None


def test_prefix_matching_finds_the_head():
    m = ioi.induction_metrics(PrefixMatcher(1000), 1000, "cpu", length=12, batch=4, seed=1)
    assert m["prefix_matching_head"] == "L0H3" and m["prefix_matching"] == pytest.approx(1.0)
    assert m["induction_score"] == pytest.approx(0.0, abs=1e-5)  # uniform logits copy nothing
    assert not m.keys() - {
        "induction_loss", "first_copy_loss", "induction_accuracy", "induction_score",
        "prefix_matching", "prefix_matching_head",
    }  # fmt: skip


def test_attention_probs_are_what_sdpa_attends_with():
    from attnstreams.streams import attention_probs

    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 7, 5, generator=g) for _ in range(3))
    y = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
    assert torch.allclose(attention_probs(q, k, None) @ v, y, atol=1e-6)
    # a chunk of 2 queries after 5 cached keys
    y2 = torch.nn.functional.scaled_dot_product_attention(
        q[:, :, 5:], k, v, attn_mask=torch.ones(2, 7, dtype=torch.bool).tril(5)
    )
    assert torch.allclose(attention_probs(q[:, :, 5:], k, None) @ v, y2, atol=1e-6)


def test_story_icl_metrics_on_a_copier():
    """Stories that repeat with period 30: a copier predicts token 200 from its whole story, not
    from its 20 preceding tokens alone, nor token 20: negative ICL score, positive gain."""
    V, P = 50, 30
    g = torch.Generator().manual_seed(0)
    stories = torch.randint(1, V, (6, P), generator=g).repeat(1, 8)[:, :201]
    m = ioi.story_icl_metrics(Copier(V, P), stories, early=20, late=200, eot_id=0)
    copied, uniform = math.log(1 + (V - 1) * math.exp(-10)), math.log(V)
    assert m["loss_late"] == pytest.approx(copied, rel=1e-4)
    assert m["loss_early"] == pytest.approx(uniform, rel=1e-5)
    assert m["icl_score"] == pytest.approx(copied - uniform, rel=1e-4)
    assert m["context_gain"] == pytest.approx(uniform - copied, rel=1e-4)
    flat = ioi.story_icl_metrics(FixedLogits(V, {}), stories, early=20, late=200, eot_id=0)
    assert flat["icl_score"] == pytest.approx(0.0, abs=1e-6) and flat["icl_stories"] == 6
    assert flat["context_gain"] == pytest.approx(0.0, abs=1e-6)


def test_lr_schedule():
    cfg = LMTrainConfig(steps=100, warmup=10, lr=1e-3, min_lr_ratio=0.1)
    assert cfg.lr_at(0) == pytest.approx(1e-4) and cfg.lr_at(9) == pytest.approx(1e-3)
    assert cfg.lr_at(10) == pytest.approx(1e-3) and cfg.lr_at(100) == pytest.approx(1e-4)
    assert cfg.lr_at(55) == pytest.approx(1e-4 + 0.9e-3 * 0.5)


TINY = LMTrainConfig(
    preset="tiny",
    stream="value",
    steps=6,
    batch=4,
    block_size=32,
    warmup=2,
    eval_every=3,
    eval_batches=2,
    ioi_prompts=20,
    dropout=0.1,
)


def rows(path):
    return [
        {k: v for k, v in json.loads(ln).items() if k != "elapsed_s"}
        for ln in path.read_text().splitlines()
    ]


def test_resume_equals_uninterrupted(data_dir, tmp_path):
    full = LMTrainer(TINY, data_dir)
    train(full, tmp_path / "a", progress=False)
    part = LMTrainer(TINY, data_dir)
    train(part, tmp_path / "b", progress=False, stop_after=4)  # killed after step 4
    resumed = LMTrainer(TINY, data_dir)
    train(resumed, tmp_path / "b", resume=True, progress=False)
    assert rows(tmp_path / "a" / "metrics.jsonl") == rows(tmp_path / "b" / "metrics.jsonl")
    for (k, a), b in zip(
        full.model.state_dict().items(), resumed.model.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), k  # bitwise: weights, Adam moments, data and dropout RNG
    assert rows(tmp_path / "a" / "metrics.jsonl")[-1]["train_loss"] < 6.3  # it learned a little


def test_log_spaced_evaluations():
    every = LMTrainConfig(steps=10, eval_every=4)
    assert every.eval_steps() == [4, 8, 10]
    log = LMTrainConfig(steps=24_414, eval_every=50, eval_log=30)
    got = log.eval_steps()
    assert got[0] == 50 and got[-1] == 24_414 and got == sorted(set(got)) and len(got) == 30
    ratios = [b / a for a, b in zip(got, got[1:], strict=False)]
    assert max(ratios) / min(ratios) < 1.01  # evenly spaced in log(step)
    assert LMTrainConfig(steps=3, eval_every=50, eval_log=5).eval_steps() == [3]
    with pytest.raises(ValueError, match="eval_log"):
        LMTrainConfig(eval_log=-1)


def test_log_schedule_logs_each_windows_mean_loss(data_dir, tmp_path):
    """Rows at exactly the log-spaced steps, each with the mean training loss of the steps
    since the one before (read off a run that logs every step: evaluation draws on no
    generator training uses, so both runs take the same steps)."""
    base = {**TINY.__dict__, "steps": 12}
    train(
        LMTrainer(LMTrainConfig(**{**base, "eval_every": 1}), data_dir),
        tmp_path / "a",
        progress=False,
    )
    cfg = LMTrainConfig(**{**base, "eval_every": 2, "eval_log": 4})
    train(LMTrainer(cfg, data_dir), tmp_path / "b", progress=False)
    each = {r["step"]: r["train_loss"] for r in rows(tmp_path / "a" / "metrics.jsonl")[1:]}
    logged = rows(tmp_path / "b" / "metrics.jsonl")
    assert [r["step"] for r in logged] == [0, *cfg.eval_steps()] == [0, 2, 4, 7, 12]
    for before, r in zip(logged, logged[1:], strict=False):
        window = [each[s] for s in range(before["step"] + 1, r["step"] + 1)]
        assert r["train_loss"] == pytest.approx(sum(window) / len(window), rel=1e-5)
        assert r["val_loss"] == pytest.approx(
            rows(tmp_path / "a" / "metrics.jsonl")[r["step"]]["val_loss"], rel=1e-5
        )


def test_a_signal_during_an_evaluation_ends_it_and_the_resume_equals_the_full_run(
    data_dir, tmp_path
):
    """SIGTERM in the middle of step 6's evaluation stops it between batches; the run ends
    with step 3's checkpoint, and a resume gives the uninterrupted run's rows and weights."""
    import os
    import signal

    from attnstreams.run.logs import TrainingInterrupted

    full = LMTrainer(TINY, data_dir)
    train(full, tmp_path / "a", progress=False)
    stopped = LMTrainer(TINY, data_dir)
    calls, sequential = [], stopped.val_data.sequential

    def signalled(*args, **kwargs):
        calls.append(1)
        for i, batch in enumerate(sequential(*args, **kwargs)):
            if len(calls) == 3 and i == 0:  # the evaluations of steps 0, 3 and 6
                os.kill(os.getpid(), signal.SIGTERM)
            yield batch

    stopped.val_data.sequential = signalled
    with pytest.raises(TrainingInterrupted, match="evaluation of step 6: the checkpoint of step 3"):
        train(stopped, tmp_path / "b", progress=False)
    resumed = LMTrainer(TINY, data_dir)
    train(resumed, tmp_path / "b", resume=True, progress=False)
    assert rows(tmp_path / "a" / "metrics.jsonl") == rows(tmp_path / "b" / "metrics.jsonl")
    after = resumed.model.state_dict().values()
    for a, b in zip(full.model.state_dict().values(), after, strict=True):
        assert torch.equal(a, b)


def test_checkpoint_loads_with_its_own_architecture(data_dir, tmp_path):
    trainer = LMTrainer(TINY, data_dir)
    train(trainer, tmp_path, progress=False)
    model, meta = load_model(tmp_path / "checkpoint.safetensors")
    assert model.cfg.stream.kind == "value" and not model.training
    x = torch.randint(500, (2, 10))
    trainer.model.eval()
    torch.testing.assert_close(model(x)[0], trainer.model(x)[0])
    other = LMTrainer(LMTrainConfig(**{**TINY.__dict__, "stream": "value-learned"}), data_dir)
    with pytest.raises(ValueError, match="different config .*stream.*'value' -> 'value-learned'"):
        other.load(tmp_path / "checkpoint.safetensors")
    # A checkpoint from before the embedding was padded (no vocab_multiple in its meta) loads.
    unpadded = GPT(preset("tiny", vocab_size=500, vocab_multiple=1)).eval()
    meta = {"kind": "lm", "model": unpadded.cfg.to_dict()}
    del meta["model"]["vocab_multiple"]
    state = {f"model/{k}": v for k, v in unpadded.state_dict().items() if k != "lm_head.weight"}
    checkpoint.save(tmp_path / "old.safetensors", state, meta)
    old, _ = load_model(tmp_path / "old.safetensors")
    assert old.wte.weight.shape[0] == 500
    torch.testing.assert_close(old(x)[0], unpadded(x)[0])


def test_stop_after_keeps_the_work_and_speed_settings_may_change_on_resume(data_dir, tmp_path):
    train(LMTrainer(TINY, data_dir), tmp_path, progress=False, stop_after=4)
    tensors, meta = checkpoint.load(tmp_path / "checkpoint.safetensors")
    assert meta["step"] == 4  # saved at the stop, though step 4 is no evaluation step
    meta["config"]["cuda_graphs"] = True  # as if trained with CUDA graphs on a GPU
    del meta["config"]["eval_log"]  # as if made before the log-spaced schedule existed
    checkpoint.save(tmp_path / "checkpoint.safetensors", tensors, meta)
    again = LMTrainer(TINY, data_dir)  # stopping where the checkpoint already is: no work
    assert train(again, tmp_path, resume=True, progress=False, stop_after=2)["steps"] == 0
    assert again.step == 4


def test_checkpoints_at_the_end_only_write_once_and_equal_the_usual_run(
    data_dir, tmp_path, monkeypatch
):
    """--checkpoints end: the same metrics and final checkpoint, one write instead of one an
    evaluation; a stop between evaluations still keeps the work, and the resume equals."""
    writes = []
    real = LMTrainer.save
    monkeypatch.setattr(
        LMTrainer, "save", lambda self, path: writes.append(self.step) or real(self, path)
    )
    train(LMTrainer(TINY, data_dir), tmp_path / "a", progress=False)
    usual = len(writes)
    writes.clear()
    end = replace(TINY, checkpoints="end")
    train(LMTrainer(end, data_dir), tmp_path / "b", progress=False)
    assert usual == len(TINY.eval_steps()) > 1 and writes == [TINY.steps]
    assert rows(tmp_path / "a" / "metrics.jsonl") == rows(tmp_path / "b" / "metrics.jsonl")
    a = checkpoint.load(tmp_path / "a" / "checkpoint.safetensors")[0]
    b = checkpoint.load(tmp_path / "b" / "checkpoint.safetensors")[0]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    writes.clear()
    train(LMTrainer(end, data_dir), tmp_path / "c", progress=False, stop_after=5)
    assert writes == [5]  # stopped: saved where it stopped
    train(LMTrainer(TINY, data_dir), tmp_path / "c", resume=True, progress=False)  # may change
    assert rows(tmp_path / "a" / "metrics.jsonl") == rows(tmp_path / "c" / "metrics.jsonl")
    with pytest.raises(ValueError, match="checkpoints"):
        LMTrainConfig(checkpoints="never")


def test_scoring_tokenises_each_prompt_set_once(tok):
    model = FixedLogits(tok.vocab_size, {tok.encode(" Mary")[0]: 2.0})
    pairs = [("When Tom and Mia went to the park, Tom gave a ball to", " Mary")] * 3
    calls = []
    real = type(tok).encode
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(type(tok), "encode", lambda self, t: calls.append(t) or real(self, t))
        first = ioi.continuation_logprobs(model, tok, pairs, "cpu", batch=2)
        n = len(calls)
        again = ioi.continuation_logprobs(model, tok, pairs, "cpu", batch=2)
    assert n == 6 and len(calls) == n and first == again  # the second call encoded nothing
    assert first[0] == pytest.approx(float(model.logits.log_softmax(-1)[tok.encode(" Mary")[0]]))


def test_a_batch_whose_logits_cannot_fit_is_refused_before_any_work(data_dir, monkeypatch):
    import attnstreams.experiments.lm.train as lm_train

    monkeypatch.setattr(lm_train, "GPT", None)  # the model must not be built
    cfg = LMTrainConfig(**{**TINY.__dict__, "block_size": 1_000_000, "batch": 64})
    with pytest.raises(ValueError, match=r"logits of a batch need at least \d[\d,]* GiB"):
        LMTrainer(cfg, data_dir)


def test_gradient_accumulation_takes_the_same_steps(data_dir):
    """batch 4 in 2 or 4 pieces: the same losses and weights as the whole batch at once (no
    dropout: its masks are drawn per piece)."""
    base = {**TINY.__dict__, "dropout": 0.0, "steps": 3, "grad_clip": 0.0}
    runs = []
    for k in (1, 2, 4):
        trainer = LMTrainer(LMTrainConfig(**{**base, "grad_accum": k}), data_dir)
        losses = [float(trainer.train_step())]
        grads = [p.grad.clone() for p in trainer.model.parameters()]  # of the first step
        losses += [float(trainer.train_step()) for _ in range(2)]
        runs.append((losses, grads, trainer.model.state_dict()))
    (ref_loss, ref_grads, ref), *others = runs
    for losses, grads, state in others:
        assert losses == pytest.approx(ref_loss, rel=1e-6)
        for g, r in zip(grads, ref_grads, strict=True):  # the mean's gradient, not k times it
            torch.testing.assert_close(g, r, rtol=1e-4, atol=1e-7)
        for k, v in ref.items():
            torch.testing.assert_close(state[k], v, rtol=1e-5, atol=1e-5)  # steps: ~1e-3
    assert not torch.equal(ref["wte.weight"], LMTrainer(TINY, data_dir).model.wte.weight)
    with pytest.raises(ValueError, match="divisible by grad_accum"):
        LMTrainConfig(**{**base, "grad_accum": 3})


def test_resume_refuses_other_token_files_and_another_model_shape(data_dir, tmp_path):
    train(LMTrainer(TINY, data_dir), tmp_path / "run", progress=False, stop_after=3)
    ckpt = tmp_path / "run" / "checkpoint.safetensors"
    other = DataConfig(
        data=str(FIXTURE), vocab_size=512, tokenizer_docs=100, train_tokens=9000, val_tokens=1000
    )
    other_dir = prepare_data(other, tmp_path / "other", progress=False)  # same tokenizer
    with pytest.raises(ValueError, match="other token files .*train.tokens"):
        LMTrainer(TINY, other_dir).load(ckpt)
    wider = LMTrainConfig(**{**TINY.__dict__, "block_size": 16})
    with pytest.raises(ValueError, match="different config .*block_size: 32 -> 16"):
        LMTrainer(wider, data_dir).load(ckpt)


def test_grid_runs_take_the_devices_in_turn():
    from attnstreams.experiments.lm.grid import grid_devices

    assert grid_devices("cpu", 3) == ["cpu"] * 3
    gpus = [torch.device(f"cuda:{i}") for i in range(3)]
    assert grid_devices(gpus, 7) == ["cuda:0", "cuda:1", "cuda:2"] * 2 + ["cuda:0"]


def test_out_of_memory_is_one_line_and_keeps_the_last_checkpoint(tmp_path, capsys, monkeypatch):
    """A step that runs out of GPU memory (raised here on the CPU): exit 1, one line naming
    --batch and --grad-accum, and the checkpoint of the last evaluation stays as it was."""
    step = LMTrainer.train_step

    def oom_at_step_4(self):
        if self.step == 4:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return step(self)

    monkeypatch.setattr(LMTrainer, "train_step", oom_at_step_4)
    argv = ["lm", "train", "--preset", "tiny", "--data", str(FIXTURE), "--vocab-size", "512"]
    argv += ["--train-tokens", "20000", "--val-tokens", "1000", "--steps", "6", "--batch", "4"]
    argv += ["--block-size", "32", "--eval-every", "3", "--eval-batches", "1"]
    argv += ["--ioi-prompts", "8", "--json", "--out", str(tmp_path / "run")]
    assert main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--batch" in err[0] and "--grad-accum" in err[0], err
    _, meta = checkpoint.load(tmp_path / "run" / "checkpoint.safetensors")
    assert meta["step"] == 3
    assert not list((tmp_path / "run").glob(".*tmp*"))


def test_a_compiled_grid_warms_each_arm_of_several_jobs_once():
    from attnstreams.experiments.lm.grid import warm_arms

    jobs = [("none", [0]), ("mhc", [3]), ("none", [1]), ("mhc", [4]), ("hc", [0])]
    assert warm_arms(jobs, compile=True, stack=1) == [("none", 0), ("mhc", 3)]
    assert warm_arms(jobs, compile=False, stack=1) == []
    assert warm_arms(jobs, compile=True, stack=1, backend="aot_eager") == []  # nothing on disk
    assert warm_arms([("mhc", [0, 1]), ("mhc", [2])], compile=True, stack=2) == []


def test_a_grid_knows_its_finished_runs(tmp_path):
    """Runs at their last step are read back, not trained or warmed again (a grid resumed)."""
    from attnstreams.experiments.lm.grid import finished

    for run, step in (("value+hc-s0", 6), ("value+hc-s1", 3), ("value-s0", 6)):
        (tmp_path / run).mkdir()
        (tmp_path / run / "summary.json").write_text(json.dumps({"step": step}))
    assert finished(tmp_path, "value+hc", 0, 6) == {"step": 6}
    assert finished(tmp_path, "value+hc", 1, 6) is None  # stopped at step 3
    assert finished(tmp_path, "value+hc", 2, 6) is None  # never started
    assert finished(tmp_path, "value", 0, 6) == {"step": 6}  # the arm's canonical folder
    assert finished(tmp_path, "value", 0, 7) is None
    assert finished(tmp_path, "value", 1, 6, residual="hc") is None  # value+hc-s1: step 3


@pytest.mark.parametrize(
    "device",
    ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(),
                                                          reason="needs CUDA"))],
)  # fmt: skip
def test_warming_an_arm_leaves_its_compiled_step_for_the_next_process(
    data_dir, tmp_path, monkeypatch, device
):
    """The warm step trains one step and writes no run. On CUDA, compiled as the grid's jobs
    are, a trainer of another seed built after it loads the compiled step from torch.compile's
    cache instead of compiling it (the jobs each run in a process of their own: here Dynamo is
    reset in between). On CPU the step is not compiled: Inductor's C++ build of even this model
    takes a minute on 2 cores."""
    import torch._dynamo
    from torch._dynamo.utils import counters

    from attnstreams.experiments.lm.grid import _warm_compile

    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path))  # nothing compiled before
    cfg = replace(TINY, stream="none", compile=device == "cuda")
    torch._dynamo.reset()
    counters.clear()
    before = sorted(data_dir.rglob("*"))
    _warm_compile(asdict(cfg), "none", 0, data_dir, device)
    assert sorted(data_dir.rglob("*")) == before
    if not cfg.compile:
        return
    torch._dynamo.reset()
    counters.clear()
    LMTrainer(replace(cfg, seed=1), data_dir, device).train_step()
    torch._dynamo.reset()  # the next test in this process starts with nothing compiled
    got = dict(counters["inductor"]) | dict(counters["aot_autograd"])
    assert got.get("fxgraph_cache_hit", 0) + got.get("autograd_cache_hit", 0) >= 1, got
    assert got.get("fxgraph_cache_miss", 0) == 0, got


def test_lm_cli_train_eval_sample_grid_report(tmp_path, capsys):
    common = [
        "--preset",
        "tiny",
        "--data",
        str(FIXTURE),
        "--train-tokens",
        "20000",
        "--val-tokens",
        "1000",
        "--vocab-size",
        "512",
        "--steps",
        "4",
        "--batch",
        "4",
        "--block-size",
        "32",
        "--warmup",
        "1",
        "--eval-every",
        "2",
        "--eval-batches",
        "1",
        "--ioi-prompts",
        "16",
    ]
    assert (
        main(["lm", "train", "--stream", "value", *common, "--out", str(tmp_path / "r"), "--json"])
        == 0
    )
    res = json.loads(capsys.readouterr().out)
    assert res["final"]["step"] == 4 and "ioi_accuracy" in res["final"]
    ckpt = str(tmp_path / "r" / "checkpoint.safetensors")
    assert main(["lm", "eval", ckpt, "--data", str(FIXTURE), "--json"]) == 0
    ev = json.loads(capsys.readouterr().out)
    assert {
        "ioi_accuracy",
        "ioi_logit_diff",
        "paper_ioi_accuracy",
        "induction_score",
        "heldout_loss",
    } <= set(ev) and ev["stream"] == "value"
    run = str(tmp_path / "r")  # the run's folder names its checkpoint
    assert main(["lm", "eval", run, "--data", str(FIXTURE), "--split", "train", "--json"]) == 0
    on_train = json.loads(capsys.readouterr().out)  # named for what it is: no held-out loss
    assert "train_loss" in on_train and "heldout_loss" not in on_train
    assert main(["lm", "sample", ckpt, "--prompt", "Once upon", "--max-new-tokens", "5"]) == 0
    assert capsys.readouterr().out.startswith("Once upon")
    for bad in (["--prompt", ""], ["--top-k", "0"]):  # were RuntimeError tracebacks
        assert main(["lm", "sample", ckpt, *bad]) == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    # an lm run folder is not an icl grid: one line, not KeyError
    assert main(["icl", "report", str(tmp_path / "r")]) == 2
    assert "not an icl grid folder" in capsys.readouterr().err
    grid = [
        "lm",
        "grid",
        "--stream",
        "none,value",
        "--seeds",
        "2",
        *common,
        "--out",
        str(tmp_path / "g"),
    ]
    assert main([*grid, "--real-eval", str(FIXTURE)]) == 0
    text = (tmp_path / "g" / "report.md").read_text()
    assert "| IOI accuracy (templated set) | value |" in text
    assert "| held-out loss on the --real-eval corpus | value |" in text
    assert (tmp_path / "g" / "curves.png").exists()
    # Running the same grid again continues it: nothing is retrained.
    before = (tmp_path / "g" / "none-s0" / "metrics.jsonl").read_text()
    assert main(grid) == 0
    assert (tmp_path / "g" / "none-s0" / "metrics.jsonl").read_text() == before


def test_an_interrupted_grid_says_to_run_the_same_command(tmp_path, capsys, monkeypatch):
    """lm grid has no --resume: the same command continues it, and the message says so (also
    when the interruption comes from a worker process, pickled across)."""
    import pickle
    import signal

    from attnstreams.experiments.lm import grid as lm_grid
    from attnstreams.run.logs import TrainingInterrupted

    stop = TrainingInterrupted(3, tmp_path / "g" / "none-s0", signal.SIGINT)
    back = pickle.loads(pickle.dumps(stop))
    assert (str(back), back.signum, back.step) == (str(stop), signal.SIGINT, 3)

    def interrupted(*args, **kwargs):
        raise stop

    monkeypatch.setattr(lm_grid, "_grid_job", interrupted)
    argv = [
        "lm", "grid", "--preset", "tiny", "--data", str(FIXTURE), "--train-tokens", "20000",
        "--val-tokens", "2000", "--vocab-size", "400", "--steps", "4", "--batch", "4",
        "--block-size", "32", "--seeds", "1", "--out", str(tmp_path / "g"),
    ]  # fmt: skip
    assert main(argv) == 128 + signal.SIGINT
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "run the same `lm grid` command again" in err and "--resume" not in err


def test_resume_takes_the_runs_own_settings(tmp_path, capsys):
    """`lm train --out RUN --resume` alone continues the run with its saved settings (no
    corpus read, no token files made); an option that changes the run is refused before any
    work; a speed-only one may change."""
    data = tmp_path / "tokens"
    argv = [
        "lm", "train", "--preset", "tiny", "--stream", "value-learned", "--data", str(FIXTURE),
        "--train-tokens", "20000", "--val-tokens", "2000", "--vocab-size", "400",
        "--data-dir", str(data), "--steps", "6", "--batch", "4", "--block-size", "32",
        "--warmup", "2", "--lr", "3e-3", "--eval-every", "3", "--eval-batches", "2",
        "--ioi-prompts", "8", "--seed", "4", "--out", str(tmp_path / "run"), "--json",
    ]  # fmt: skip
    assert main([*argv, "--stop-after", "3"]) == 0
    made = {f: f.stat().st_mtime_ns for f in data.iterdir()}
    capsys.readouterr()
    run = ["lm", "train", "--out", str(tmp_path / "run"), "--resume", "--json"]
    assert main([*run, "--lr", "0.5"]) == 2
    err = capsys.readouterr().err
    assert "lr: 0.003 -> 0.5" in err and len(err.strip().splitlines()) == 1
    assert main([*run, "--grad-accum", "2"]) == 0  # speed only
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["step"] == 6 and out["final"]["step"] == 6
    cfg = json.loads((tmp_path / "run" / "config.json").read_text())["config"]
    assert (cfg["stream"], cfg["seed"], cfg["lr"]) == ("value-learned", 4, 3e-3)
    assert {f: f.stat().st_mtime_ns for f in data.iterdir()} == made  # nothing made again
    assert not (tmp_path / "run" / "data").exists()
    # one run's folder is reported as a grid of one run (it was "holds no LM runs")
    assert main(["lm", "report", str(tmp_path / "run")]) == 0
    assert (
        "Runs finished (of those started): value-learned 1/1."
        in (tmp_path / "run" / "report.md").read_text()
    )


@pytest.mark.parametrize(
    "argv",
    [
        ["lm", "train", "--stream", "vlaue"],
        ["lm", "train", "--preset", "gpt-5"],
        ["lm", "train", "--tokenizer", "sentencepiece"],
        ["lm", "train", "--steps", "0"],
        ["lm", "train", "--ddp-bucket-mb", "0.5"],
        ["lm", "train", "--compile", "--compile-backend", "tvm"],
        ["lm", "train", "--grad-accum", "0"],
        ["lm", "train", "--batch", "6", "--grad-accum", "4"],
        ["lm", "train", "--collective-timeout", "0"],
        ["lm", "train", "--device", "cpu,cpu"],  # a list is for lm grid
        ["lm", "grid", "--device", ","],
        ["lm", "train", "--data", "/nonexistent.txt", "--train-tokens", "5000"],
        ["lm", "eval", "/nonexistent/checkpoint.safetensors"],
        ["lm", "sample", "/nonexistent/checkpoint.safetensors"],
        ["lm", "report", "/nonexistent"],
    ],
)
def test_lm_bad_arguments(capsys, tmp_path, argv):
    assert main([*argv, *(["--out", str(tmp_path / "o")] if argv[1] == "train" else [])]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_cuda_graphs_need_compile_and_one_cuda_device(data_dir):
    with pytest.raises(ValueError, match="cuda_graphs needs compile"):
        LMTrainConfig(cuda_graphs=True)
    with pytest.raises(ValueError, match="inductor backend"):  # reduce-overhead is inductor's
        LMTrainConfig(compile=True, compile_backend="aot_eager", cuda_graphs=True)
    with pytest.raises(ValueError, match="compile_backend"):
        LMTrainConfig(compile=True, compile_backend="tvm")
    cfg = LMTrainConfig(**{**TINY.__dict__, "compile": True, "cuda_graphs": True})
    with pytest.raises(ValueError, match="one CUDA device"):
        LMTrainer(cfg, data_dir, device="cpu")


def test_report_times_the_thresholds_asked_for(tmp_path, capsys):
    """`lm report --thresholds`: the paper's abilities first, then the ones asked for (the
    pilot's set by name), each run's crossing in tokens; a bad threshold is one line, exit 2,
    before the report is touched."""
    import shutil

    from attnstreams.experiments.lm.report import ABILITIES, abilities
    from attnstreams.run.config import ConfigError

    table = abilities("pilot")
    assert [a[0] for a in table[:3]] == list(ABILITIES)
    assert [a[0] for a in table[3:]] == ["induction_score", "context_gain", "paper_ioi_p_io"]
    assert abilities("context_gain>0.3")[-1] == ("context_gain", "context gain > 0.3 nats", 0.3, 2)
    for bad in ("val_loss>3", "induction_score=0.5", "induction_score>x", "nope>1"):
        with pytest.raises(ConfigError):
            abilities(bad)
    grid = tmp_path / "pilot"
    for run in ("none-s0", "value-s0"):  # the committed pilot's first seed of each arm
        src = Path(__file__).parents[1] / "results/lm-long/pilot/resampled" / run
        shutil.copytree(src, grid / run)
    assert main(["lm", "report", str(grid), "--thresholds", "pilot"]) == 0
    report = (grid / "report.md").read_text()
    assert "| none s0 | never | never | never | 17.0M | 19.4M | 28.8M |" in report
    assert "- induction score > 0.5 nats: in 2 of 2 runs." in report
    before = report
    assert main(["lm", "report", str(grid), "--thresholds", "val_loss>3"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "KEY>VALUE" in err[0]
    assert (grid / "report.md").read_text() == before


def test_arms_name_a_stream_a_residual_or_both():
    from attnstreams.experiments.lm.arms import arm_name, parse_arm
    from attnstreams.run.config import ConfigError

    for name, parts in {
        "none": ("none", "plain"),
        "value-first-half": ("value-first", "plain"),
        "denseformer-d2": ("none", "denseformer-d2"),
        "hc-n4": ("none", "hc"),
        "value+dhc-n2": ("value", "dhc-n2"),
        "none+plain": ("none", "plain"),
    }.items():
        assert parse_arm(name) == parts
        assert parse_arm(arm_name(*parts)) == parts  # the canonical name reads back
    assert parse_arm("value", "denseformer") == ("value", "denseformer")  # the grid's residual
    assert arm_name("value", "denseformer-d1") == "value+denseformer"
    for bad in ("bogus", "value+bogus", "bogus+hc", "value+key"):
        with pytest.raises(ConfigError):
            parse_arm(bad)


def test_a_grid_compares_residuals_and_streams_as_arms(tmp_path, capsys):
    """`lm grid --stream none,denseformer-d2,value+hc-n2`: a folder an arm and seed, each run
    configured as its arm says, the report comparing each arm with none; a bad arm is one
    line before anything is written."""
    argv = [
        "lm", "grid", "--preset", "tiny", "--data", str(FIXTURE), "--train-tokens", "20000",
        "--val-tokens", "2000", "--vocab-size", "400", "--steps", "2", "--batch", "2",
        "--block-size", "16", "--eval-every", "2", "--eval-batches", "1", "--ioi-prompts", "8",
        "--seeds", "1", "--json", "--stream", "none,denseformer-d2,value+hc-n2",
    ]  # fmt: skip
    assert main([*argv, "--out", str(tmp_path / "g")]) == 0
    for arm, (stream, residual) in {
        "none": ("none", "plain"),
        "denseformer-d2": ("none", "denseformer-d2"),
        "value+hc-n2": ("value", "hc-n2"),
    }.items():
        config = json.loads((tmp_path / "g" / f"{arm}-s0" / "config.json").read_text())
        assert (config["config"]["stream"], config["model"]["residual"]) == (stream, residual)
    report = (tmp_path / "g" / "report.md").read_text()
    finished = next(ln for ln in report.splitlines() if ln.startswith("Runs finished"))
    assert all(f"{arm} 1/1" in finished for arm in ("none", "denseformer-d2", "value+hc-n2"))
    assert "Each arm is compared with none" in finished
    capsys.readouterr()
    argv[-1] = "none,bogus"
    assert main([*argv, "--out", str(tmp_path / "h")]) == 2
    assert "an arm is a stream, a residual" in capsys.readouterr().err
    assert not (tmp_path / "h").exists()


RESULTS = Path(__file__).resolve().parents[1] / "results"


def test_a_report_of_grids_trained_apart_equals_the_grid_s(tmp_path, capsys):
    """`lm report A B --out C`: the baseline runs in one folder and the other arm's in another
    give the report of the one folder holding both (results/lm-long/original), but for the line
    naming the folders."""
    import shutil

    whole = RESULTS / "lm-long" / "original"
    for run in whole.glob("*-s*"):
        shutil.copytree(run, tmp_path / ("a" if run.name.startswith("none") else "b") / run.name)
    argv = ["lm", "report", str(tmp_path / "a"), str(tmp_path / "b")]
    assert main([*argv, "--thresholds", "pilot", "--out", str(tmp_path / "c")]) == 0
    got = (tmp_path / "c" / "report.md").read_text().splitlines()
    i = got.index(f"Runs from `{tmp_path / 'a'}`, `{tmp_path / 'b'}` (trained apart).")
    del got[i : i + 2]  # the line and the blank after it
    assert got == (whole / "report.md").read_text().splitlines()
    assert not (tmp_path / "a" / "report.md").exists()


def test_a_report_refuses_runs_that_differ_or_repeat(tmp_path, capsys):
    """Runs of other settings (here the other names setting, or another length) or one arm and
    seed twice: one line, exit 2, no report written."""
    import shutil

    for setting in ("original", "resampled"):
        shutil.copytree(RESULTS / "lm-long" / setting / "value-s0", tmp_path / setting / "v")
    shutil.copytree(RESULTS / "lm-long/pilot/resampled/none-s1", tmp_path / "pilot" / "n")
    capsys.readouterr()
    for folders, says in (
        (["original", "resampled"], "differs from"),
        (["resampled", "pilot"], "in config."),  # steps, epochs
        (["original", "original"], "value seed 0 is in both"),
    ):
        out = tmp_path / "out"
        argv = ["lm", "report", *(str(tmp_path / f) for f in folders), "--out", str(out)]
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert says in err and len(err.splitlines()) == 1 and not out.exists()


def test_a_report_keeps_the_arms_asked_for(tmp_path, capsys):
    """--arms none,value: only those arms (in that order) are reported; an arm not among the
    runs is refused with one line before anything is written."""
    grid = RESULTS / "lm-long" / "resampled"
    argv = ["lm", "report", str(grid), "--out", str(tmp_path / "r")]
    assert main([*argv, "--arms", "none,value,hc"]) == 2
    err = capsys.readouterr().err.strip()
    assert "hc not among the runs" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "r").exists()
    assert main([*argv, "--arms", "value,none"]) == 0
    text = (tmp_path / "r" / "report.md").read_text()
    assert "Runs finished (of those started): value 10/10; none 10/10." in text
    assert "key-smear" not in text and "value-first" not in text
