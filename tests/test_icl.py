"""The ToyICL grid: batched equals alone, resume equals uninterrupted, report statistics."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace

import pytest
import torch

from attnstreams.cli import main
from attnstreams.experiments.icl.report import merge_grids, steps_to, write_report
from attnstreams.experiments.icl.task import make_task
from attnstreams.experiments.icl.train import ICLGrid, ICLTrainConfig, init_model, train
from attnstreams.run import checkpoint

CFG = ICLTrainConfig(steps=24, batch=16, eval_every=8, eval_size=64, data_chunk=5, lr=0.5)


def train_alone(cfg: ICLTrainConfig, stream: str, seed: int) -> torch.nn.Module:
    """The reference: one plain ToyICL, torch.optim.SGD, the seed's data stream."""
    model = init_model(cfg, stream, seed)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    task = make_task(cfg.task, seed)
    step = 0
    while step < cfg.steps:
        xs, ys = task.sample(cfg.data_chunk, cfg.batch)
        for x, y in zip(xs, ys, strict=True):
            if step == cfg.steps:
                break
            loss = torch.nn.functional.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
    return model


@pytest.mark.parametrize("variant", ["value", "key-learned", "key-smear"])
def test_run_in_grid_equals_run_alone(variant):
    grid = ICLGrid(["none", variant, "query"], [3, 4], CFG)
    for _ in range(CFG.steps):
        grid.train_step()
    alone = train_alone(CFG, variant, 4)
    mine = dict(grid.run_model(variant, 4).named_parameters())
    for name, p in alone.named_parameters():
        torch.testing.assert_close(mine[name], p, rtol=1e-4, atol=1e-5)
    # It did train: the parameters moved away from their initial values.
    init = dict(init_model(CFG, variant, 4).named_parameters())
    assert (mine["attn.0.qkv.weight"] - init["attn.0.qkv.weight"]).abs().max() > 1e-3
    for name in (n for n in init if "stream_" in n):  # a learned mix or smear too
        assert (mine[name] - init[name]).abs().max() > 1e-5, name


def test_variants_share_their_seeds_initial_weights():
    """(The data is shared by construction: one (S, B, T, d) batch for every variant.)"""
    grid = ICLGrid(["none", "value"], [0, 1], CFG)
    w = grid.model.params["attn.0.qkv.weight"]  # (variant, seed, ...)
    assert torch.equal(w[0], w[1])
    assert not torch.equal(w[0, 0], w[0, 1])


def rows_without_time(path):
    return [
        {k: v for k, v in json.loads(ln).items() if k != "elapsed_s"}
        for ln in path.read_text().splitlines()
    ]


def test_resume_equals_uninterrupted(tmp_path):
    full = ICLGrid(["none", "value-learned"], [0, 1], CFG)
    train(full, tmp_path / "a", progress=False)
    part = ICLGrid(["none", "value-learned"], [0, 1], CFG)
    train(part, tmp_path / "b", progress=False, stop_after=13)  # mid data chunk, mid eval window
    assert json.loads((tmp_path / "b" / "metrics.jsonl").read_text().splitlines()[-1])["step"] == 8
    assert checkpoint.load(tmp_path / "b" / "checkpoint.safetensors")[1]["step"] == 13  # kept
    resumed = ICLGrid(["none", "value-learned"], [0, 1], CFG)
    train(resumed, tmp_path / "b", resume=True, progress=False)
    assert rows_without_time(tmp_path / "a" / "metrics.jsonl") == rows_without_time(
        tmp_path / "b" / "metrics.jsonl"
    )
    for k, p in full.model.params.items():
        assert torch.equal(p, resumed.model.params[k])  # bitwise on CPU


def test_resume_refuses_other_config(tmp_path):
    train(ICLGrid(["none"], [0], CFG), tmp_path, progress=False)
    other = ICLGrid(["none"], [1], CFG)
    with pytest.raises(ValueError, match=r"different seeds \(seeds: \[0\] -> \[1\]\)"):
        train(other, tmp_path, resume=True, progress=False)
    changed = ICLGrid(["none"], [0], replace(CFG, lr=0.25))
    with pytest.raises(ValueError, match=r"different config \(config.lr: 0.5 -> 0.25\)"):
        train(changed, tmp_path, resume=True, progress=False)
    with pytest.raises(ValueError, match="already holds a run"):
        train(ICLGrid(["none"], [0], CFG), tmp_path, progress=False)


def test_steps_to_threshold():
    rows = [{"step": s, "acc_icl": a} for s, a in [(0, 0.1), (500, 0.6), (1000, 0.96), (1500, 0.9)]]
    assert steps_to(rows, "acc_icl", 0.5) == 500
    assert steps_to(rows, "acc_icl", 0.95) == 1000
    assert steps_to(rows, "acc_icl", 0.99) is None


def fake_grid(path, steps_to_95: dict[str, list[int | None]]):
    """A metrics file whose ICL curves cross 95% at given steps (None: never)."""
    variants = list(steps_to_95)
    seeds = list(range(len(next(iter(steps_to_95.values())))))
    cfg = ICLTrainConfig(steps=1000, eval_every=100)
    (path / "config.json").write_text(
        json.dumps({"variants": variants, "seeds": seeds, "config": cfg.to_dict()})
    )
    with (path / "metrics.jsonl").open("w") as f:
        for v in variants:
            for s in seeds:
                cross = steps_to_95[v][s]
                for step in range(0, 1001, 100):
                    acc = 0.97 if cross is not None and step >= cross else 0.5 * step / 1000
                    row = {"step": step, "variant": v, "seed": s, "train_loss": 1.0}
                    row |= {f"acc_{t}": acc for t in ("mixed", "icl", "icl_flipped", "iwl")}
                    f.write(json.dumps(row) + "\n")


def test_report_counts_never_reached_and_states_result(tmp_path):
    fake_grid(tmp_path, {"none": [500, 600, 700, None], "value": [400, 400, 500, 800]})
    text = write_report(tmp_path).read_text()
    assert "| none | 3/4 |" in text and "| value | 4/4 |" in text
    # Censored: the baseline's missing run counts at the last step, (400+400+500+800) /
    # (500+600+700+1000) - 1 = -25%, a lower bound on the speed-up; 4 of 4 seeds are sooner.
    assert "at least 25.0% sooner than none" in text
    assert "never reached in 1,000 steps: none 1, value 0" in text
    assert "4 of 4 seeds sooner, 0 later (sign test p = 0.125)" in text
    assert (tmp_path / "curves.png").stat().st_size > 1000
    assert (tmp_path / "steps_to_icl.png").exists()


@pytest.mark.parametrize(
    ("seeds", "caption"),
    [
        (4, "Thick lines: the mean over the 4 seeds; thin lines: each seed; dashed: the"),
        (5, "Each line: the mean over the 5 seeds, its band ± 1 sd; dashed: the"),
    ],
)
def test_report_curves_label_their_thresholds_and_caption_what_is_drawn(
    tmp_path, monkeypatch, seeds, caption
):
    """Each dashed line of curves.png names its threshold; the caption says band or seeds, as
    plot_bands draws them (a band from 5 seeds on)."""
    from attnstreams.run import plots

    figures = []
    save = plots._save
    monkeypatch.setattr(plots, "_save", lambda fig, path: figures.append(fig) or save(fig, path))
    fake_grid(tmp_path, {"none": [500] * seeds, "value": [400] * seeds})
    text = " ".join(write_report(tmp_path, thresholds=(0.5, 0.975)).read_text().split())
    assert f"{caption} thresholds, each labelled on its line." in text
    for ax in figures[0].axes:
        labels = {t.get_text(): t.get_position()[1] for t in ax.texts}
        assert labels == {"threshold 50%": 0.5, "threshold 97.5%": 0.975}, ax.get_title()


def test_report_says_so_when_no_run_reaches_the_threshold(tmp_path):
    fake_grid(tmp_path, {"none": [None, None], "value": [None, None]})
    text = write_report(tmp_path).read_text()
    assert "No run reached 95% ICL accuracy, so there is no per-seed plot." in text
    assert not (tmp_path / "steps_to_icl.png").exists()  # was an empty plot


def test_report_few_seeds_shows_every_seed_and_no_interval(tmp_path):
    fake_grid(tmp_path, {"none": [500, 600, 700, 800], "value": [400, 400, 500, 900]})
    text = write_report(tmp_path).read_text()
    # (400+400+500+900)/(500+600+700+800) - 1 = -15.4%; 4 seeds: every seed, exact p, no CI.
    assert "- **value**: 15.4% sooner than none (4 seeds, no interval below 5: 500->400, " in text
    assert "exact p = 0.375" in text and "95% CI" not in text.split("## Steps")[0]
    assert "3 of 4 seeds sooner, 1 later" in text
    assert "| value | 400 | 400 | 500 | 900 |" in text  # the per-seed table


def test_report_table_gives_no_mean_of_a_few_pairs_when_runs_never_got_there(tmp_path):
    """Two of ten value runs reach 95%: a mean of those two pairs (+350 steps, +70%) would
    leave out the eight slowest runs. The row lists the two pairs and the bound that counts the
    eight at the last step, (900 + 800 + 8 x 1000) / (10 x 500) - 1 = +94%, beside the sign
    test on all ten seeds."""
    fake_grid(tmp_path, {"none": [500] * 10, "value": [900, 800] + [None] * 8})
    text = write_report(tmp_path).read_text()
    table = text.split("**ICL (bursty, novel classes): steps to 95%**")[1]
    row = next(ln for ln in table.splitlines() if ln.startswith("| value |"))
    assert "+350" not in row and "+70.0 %" not in row
    assert "+400 (seed 0), +300 (seed 1)" in row
    assert "at least 94.0% later, never-reached runs at step 1,000" in row
    assert row.endswith("| 0/10 (0.00195) |")


def test_report_names_the_initialisation_it_reproduces(tmp_path):
    """`init = jax` is the authors' code as it draws under JAX >= 0.5; the paper's runs most
    likely drew under an older JAX (independent read-out): the report says so, not just
    "none differ"."""
    fake_grid(tmp_path, {"none": [500, 600], "value": [400, 500]})
    text = " ".join(write_report(tmp_path).read_text().split())
    assert "under JAX >= 0.5 (`init = jax`" in text and "`init = jax-legacy`" in text


def test_report_interval_and_paper_claim_at_ten_seeds(tmp_path):
    base = [600, 700, 800, 900, 800, 700, 600, 700, 800, 900]
    fake_grid(tmp_path, {"none": base, "value": [b - 200 for b in base]})
    text = write_report(tmp_path).read_text()
    # -200/750 = 26.7% sooner, Fieller's 95% interval 24.2% to 29.7% (the differences are
    # constant: only the baseline's spread widens it); the paper's 24% lies just outside.
    at95 = text.split("**ICL accuracy 95%**")[1].splitlines()
    line = next(ln for ln in at95 if ln.startswith("- **value**: 26.7% sooner"))
    assert "(95% CI 24.2% to 29.7% sooner" in line
    assert "95% CI" in line and "mean Δ -200 steps" in line and "exact p = 0.00195" in line
    assert "the paper's 24% is outside" in line
    assert "(the paper: the value stream reaches 95% about 24% sooner)" in text
    assert text.count("about 24% sooner") == 1  # under the 95% heading only
    assert "Settings that differ from the authors' experiment: steps = 1000 (theirs: 75000)" in text


def test_grids_trained_apart_merge_and_pair_by_seed(tmp_path, capsys):
    """A variant trained in a later job beside a finished grid: merged, it is reported against
    the grid's baseline seed by seed; other settings, a run in two folders or an --out that
    holds a grid are refused."""
    a, b, out = tmp_path / "a", tmp_path / "b", tmp_path / "both"
    a.mkdir(), b.mkdir()
    fake_grid(a, {"none": [500, 600, 700, 800], "value": [400, 400, 500, 900]})
    fake_grid(b, {"key-smear": [500, 500, 600, 700]})
    job = {"wall_s": 8.0, "steps": 1000, "runs": 4, "variants": ["key-smear"], "device": "cpu"}
    (b / "summary.json").write_text(json.dumps(job | {"torch": torch.__version__}))
    assert main(["icl", "merge", str(a), str(b), "--out", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["variants"] == ["none", "value", "key-smear"]
    assert json.loads((out / "summary.json").read_text())[0]["variants"] == ["key-smear"]
    text = write_report(out).read_text()
    assert "| key-smear | 4/4 |" in text and "Grid of 4 runs (key-smear x 4 seeds)" in text
    # (500+500+600+700) / (500+600+700+800) - 1 = -11.5%, each seed against its own baseline
    assert (
        "- **key-smear**: 11.5% sooner than none (4 seeds, no interval below 5: 500->500, "
        "600->500, 700->600, 800->700" in text
    )
    (a / "summary.json").write_text(json.dumps(job | {"device": "NVIDIA H200"}))
    with pytest.raises(ValueError, match="on the CPU and on a GPU"):  # other data a seed
        merge_grids([a, b], tmp_path / "c")
    cfg = json.loads((b / "config.json").read_text())
    cfg["config"]["lr"] = 0.02
    (b / "config.json").write_text(json.dumps(cfg))
    refusals = [
        ([a, b], "other settings than .* \\(lr: 0.01 -> 0.02\\)"),
        ([a, a], "both hold none seed 0"),
        ([a], "at least two"),
    ]
    for sources, match in refusals:
        with pytest.raises(ValueError, match=match):
            merge_grids(sources, tmp_path / "c")
    assert main(["icl", "merge", str(a), str(b), "--out", str(out)]) == 2  # holds a grid
    assert "already holds config.json" in capsys.readouterr().err


def test_cli_grid_and_report(tmp_path, capsys):
    out = tmp_path / "g"
    argv = [
        "icl",
        "grid",
        "--variants",
        "none,value",
        "--seeds",
        "2",
        "--steps",
        "12",
        "--eval-every",
        "6",
        "--eval-size",
        "32",
        "--batch",
        "8",
        "--out",
        str(out),
        "--json",
    ]
    assert main(argv) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["runs"] == 4 and len(res["final"]) == 4
    assert {r["step"] for r in res["final"]} == {12}
    capsys.readouterr()
    assert main(["icl", "report", str(out), "--json"]) == 0
    assert (out / "report.md").exists()
    got = json.loads(capsys.readouterr().out)  # the statistics, not only the report's path
    assert got["report"] == str(out / "report.md") and got["step"] == 12
    steps = got["results"]["icl@0.5"]["steps"]
    assert set(steps) == set(got["results"]["icl@0.5"]["vs_baseline"]) | {got["baseline"]}
    assert all(len(v) == len(got["seeds"]) for v in steps.values())
    assert (
        main(
            [
                "icl",
                "train",
                "--stream",
                "value",
                "--steps",
                "4",
                "--eval-every",
                "2",
                "--eval-size",
                "16",
                "--batch",
                "4",
                "--out",
                str(tmp_path / "t"),
            ]
        )
        == 0
    )
    assert (tmp_path / "t" / "checkpoint.safetensors").exists()


@pytest.mark.parametrize(
    "argv",
    [
        ["icl", "grid", "--variants", "none,values"],
        ["icl", "grid", "--variants", "none,value+key-smear"],
        ["icl", "grid", "--seeds", "0"],
        ["icl", "train", "--steps", "-5"],
        ["icl", "train", "--device", "tpu"],
        ["icl", "train", "--resume"],
        ["icl", "train", "--precision", "fp8"],
        ["icl", "report", "/nonexistent/folder"],
        ["icl", "report", "/nonexistent/folder", "--thresholds", "abc"],
        ["icl", "report", "/nonexistent/folder", "--thresholds", "0.5,1.5"],
        ["icl", "merge", "/nonexistent/a", "/nonexistent/b", "--out", "/nonexistent/c"],
    ],
)
def test_icl_bad_arguments(capsys, argv):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


@pytest.mark.skipif(
    shutil.which("cc") is None and shutil.which("gcc") is None, reason="no C compiler"
)
def test_compiled_grid_equals_eager_grid():
    """The GPU path compiles the stacked step and the evaluation forward. Two variants, each a
    stream (value, key), and one forward shape: each more costs a cold Inductor build."""
    variants, seeds = ["value-learned", "key-smear"], [0, 1]
    eager, comp = ICLGrid(variants, seeds, CFG), ICLGrid(variants, seeds, CFG, compile=True)
    for _ in range(6):
        eager.train_step()
        comp.train_step()
    for k, p in eager.model.params.items():
        torch.testing.assert_close(comp.model.params[k], p, rtol=1e-4, atol=1e-5)
    # The compiled evaluation forward gives the eager logits (on the same weights), and so
    # the same accuracies but for a near-tied argmax (one sequence in eval_size).
    x = eager.tests["icl"][0]  # evaluate()'s shape: the graph compiled here serves it
    with torch.no_grad():
        torch.testing.assert_close(comp._forward(x), comp.model.forward(x), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(comp.evaluate(), eager.evaluate(), rtol=0, atol=1.5 / 64)


def test_cli_stop_after_then_resume_equals_one_run(tmp_path, capsys):
    args = ["icl", "grid", "--variants", "none,value", "--seeds", "1", "--steps", "30"]
    args += ["--batch", "8", "--eval-every", "10", "--eval-size", "16", "--json"]
    assert main([*args, "--out", str(tmp_path / "one")]) == 0
    assert main([*args, "--out", str(tmp_path / "two"), "--stop-after", "15"]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["step"] == 15
    assert main([*args, "--out", str(tmp_path / "two"), "--resume"]) == 0
    assert rows_without_time(tmp_path / "one" / "metrics.jsonl") == rows_without_time(
        tmp_path / "two" / "metrics.jsonl"
    )
    assert main([*args, "--out", str(tmp_path / "bad"), "--stop-after", "0"]) == 2
    assert "stop_after" in capsys.readouterr().err


def test_bf16_precision_autocasts_and_tracks_fp32():
    """bf16 autocast: matmuls in bfloat16 (so not bitwise fp32), weights still float32, and
    training follows the fp32 run: its first update is fp32's to bf16's precision."""

    grids = {
        p: ICLGrid(["none", "value"], [0], replace(CFG, precision=p)) for p in ("fp32", "bf16")
    }
    w0 = dict(init_model(CFG, "value", 0).named_parameters())

    def updates() -> tuple[dict, dict]:
        a, b = (dict(grids[p].run_model("value", 0).named_parameters()) for p in ("fp32", "bf16"))
        return {n: a[n] - w0[n] for n in a}, {n: b[n] - w0[n] for n in b}

    for g in grids.values():
        g.train_step()
    u32, u16 = updates()
    for name, d32 in u32.items():
        # One step: 0.6-7% apart (CPUs' bf16 kernels differ; it compounds to ~100% over 24
        # steps on some); no update at all: 100%. Not the scalar biases: each sums its
        # layer's gradients, which mostly cancel.
        if d32.numel() > 1:
            assert (u16[name] - d32).norm() < 0.25 * d32.norm(), name
    for g in grids.values():
        for _ in range(CFG.steps - 1):
            g.train_step()
    u32, u16 = updates()
    for name, d32 in u32.items():
        assert u16[name].dtype == torch.float32
        assert u16[name].abs().max() > 0.1 * d32.abs().max() > 0, name  # bf16 trained too
    assert not torch.equal(u32["attn.0.qkv.weight"], u16["attn.0.qkv.weight"])  # not fp32 maths
    g = grids["bf16"]
    forward, dtypes = g._forward, set()
    g._forward = lambda x: dtypes.add(forward(x).dtype) or forward(x)
    acc = g.evaluate()
    assert dtypes == {torch.bfloat16}  # the evaluation runs under autocast too
    assert acc.dtype == torch.float32 and acc.shape == (2, 1, 4)
    assert ((acc >= 0) & (acc <= 1)).all()


def test_refused_out_leaves_no_trace(tmp_path, capsys, monkeypatch):
    """--resume of a folder that does not exist creates nothing, and is refused before the
    grid and its test sets are built; --out naming a file says so."""
    from attnstreams.experiments.icl import train as icl_train

    def built(*args, **kwargs):
        raise AssertionError("the grid was built before the refusal")

    missing = tmp_path / "doesnotexist"
    with monkeypatch.context() as m:
        m.setattr(icl_train, "ICLGrid", built)
        assert main(["icl", "grid", "--seeds", "2", "--resume", "--out", str(missing)]) == 2
    assert "nothing to resume" in capsys.readouterr().err and not missing.exists()
    argv = ["icl", "train", "--steps", "2", "--eval-size", "8", "--resume", "--out", str(missing)]
    assert main(argv) == 2
    assert "nothing to resume" in capsys.readouterr().err and not missing.exists()
    afile = tmp_path / "a-file"
    afile.write_text("keep me")
    assert main(["icl", "train", "--steps", "2", "--eval-size", "8", "--out", str(afile)]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err
    assert afile.read_text() == "keep me"
