"""The figures that README.md and results/*/README.md state about results, recomputed from the
committed metrics with the report code, so that the prose cannot drift from the data.

A claim is a row of CLAIMS: a file, a fragment of its text with {} where the figures stand, and
a function that computes those figures from results/ and formats them as the text prints them.
Line wrapping is ignored. The test fails when the text changes (the fragment is gone) and when
the data change (the figures differ). A new sentence with a figure about a result gets a row.
Claims in words ("all intervals cover 0") are checked by the test functions after the table.
Timings measured by hand (BENCHMARKS.md) are not results of these files and are not checked.
"""

from __future__ import annotations

import importlib.util
import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest
import torch

from attnstreams.experiments.icl.report import load_runs, steps_to, threshold_table, versus
from attnstreams.experiments.lm.arms import parse_arm
from attnstreams.experiments.lm.report import (
    ABILITIES,
    abilities,
    crossing,
    final_comparisons,
    first_step,
    load_grid,
    lowest,
    value_range,
)
from attnstreams.models.gpt import GPT, preset
from attnstreams.run import stats

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "results"


def _load_compare():
    """sidebyside/compare.py, the report code of results/authors-toy (a script, not a module)."""
    spec = importlib.util.spec_from_file_location("compare", ROOT / "sidebyside" / "compare.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


compare = _load_compare()


@cache
def text(name: str) -> str:
    """A document with every run of whitespace made one space (wrapping is not content)."""
    return " ".join((ROOT / name).read_text().split())


# -- formats, as the prose prints figures ---------------------------------------------------------
def pct(x: float) -> str:
    """A relative change as an unsigned percentage: -0.2014 -> '20.1%'."""
    return f"{abs(100 * x):.1f}%"


def n(x: float) -> str:
    """A step count or other integer with thousands separators: 31600 -> '31,600'."""
    return f"{round(x):,}"


def signed(x: float, digits: int = 3) -> str:
    """A difference with its sign: -0.0073 -> '-0.007'."""
    return f"{x:+.{digits}f}"


def word(k: int) -> str:
    """Counts the prose spells out."""
    return {0: "none", 1: "one", 2: "two"}.get(k, str(k))


# -- experiment 1: results/icl-grid ---------------------------------------------------------------
@cache
def grid() -> tuple[dict, dict, list[str], list[int]]:
    """The experiment-1 grid: config, rows by variant and seed, variants, seeds."""
    config, rows = load_runs(RESULTS / "icl-grid")
    variants = [v for v in config["variants"] if v in rows]
    return config, rows, variants, sorted(rows["none"])


def censor() -> int:
    """The grid's last step, where never-reached runs are counted."""
    return grid()[0]["config"]["steps"]


@cache
def per(test: str, thr: float) -> dict[str, list[int | None]]:
    """Steps to `thr` on test set `test` of every variant and seed (the report's table)."""
    config, rows, variants, seeds = grid()
    return threshold_table(rows, variants, seeds, "none", test, thr, censor())[1]


@cache
def vs(variant: str, test: str = "icl", thr: float = 0.95, base: str = "none") -> dict:
    """The report's comparison with none (or with `base`, paired by seed the same way):
    stats.paired plus the censored sign counts (c)."""
    seeds = grid()[3]
    _, p, c = versus(seeds, per(test, thr)[base], per(test, thr)[variant], censor())
    return p | {"c": c}


def sooner(
    variant: str, test: str = "icl", thr: float = 0.95, base: str = "none"
) -> tuple[str, str, str]:
    """'20.1%' and its Fieller interval as percentages sooner (or later), nearer end first;
    only for an interval on one side of 0 (the prose words the others end by end)."""
    p = vs(variant, test, thr, base)
    assert p["rel_low"] * p["rel_high"] > 0, (variant, test, thr)
    lo, hi = sorted((abs(p["rel_low"]), abs(p["rel_high"])))
    return pct(p["relative"]), pct(lo), pct(hi)


def ends(variant: str, test: str = "icl", thr: float = 0.95) -> tuple[str, str, str]:
    """The change and its interval's sooner end and later end, for an interval across 0."""
    p = vs(variant, test, thr)
    return pct(p["relative"]), pct(p["rel_low"]), pct(p["rel_high"])


def final_acc(variant: str, test: str) -> str:
    """A variant's mean accuracy on a test set at the last step."""
    rows, seeds = grid()[1], grid()[3]
    return f"{np.mean([rows[variant][s][-1][f'acc_{test}'] for s in seeds]):.3f}"


SMEARS = ("key-smear", "key-smear-sum")


@cache
def smeared_key() -> dict:
    """The smeared-key control's figures beyond one comparison: seeds whose step-0 accuracies
    (a = 0: the baseline exactly) equal the baseline's on every test set; the fewest seeds
    sooner and the largest exact p over each smear against none and value at both thresholds
    of mixed, icl, icl_flipped and at 50% IWL; the two smears against each other to 50% and 95%
    ICL; who reaches 95% IWL; and the job's timing (summary.json, on an H100)."""
    rows, seeds = grid()[1], grid()[3]
    keys = [f"acc_{t}" for t in ("mixed", "icl", "icl_flipped", "iwl")]
    same = sum(
        all(rows["key-smear"][s][0][k] == rows["none"][s][0][k] for k in keys) for s in seeds
    )
    assert rows["none"][seeds[0]][0]["step"] == 0 == rows["key-smear"][seeds[0]][0]["step"]
    cases = [(t, thr) for t in ("mixed", "icl", "icl_flipped") for thr in (0.5, 0.95)]
    comparisons = [
        vs(v, t, thr, base) for v in SMEARS for base in ("none", "value") for t, thr in cases
    ]
    comparisons += [vs(v, "iwl", 0.5, base) for v in SMEARS for base in ("none", "value")]
    sum50 = vs("key-smear-sum", "icl", 0.5, "key-smear")["c"]
    learned95 = vs("key-smear", "icl", 0.95, "key-smear-sum")["c"]
    reached = {v: [x for x in per("iwl", 0.95)[v] if x is not None] for v in grid()[2]}
    others = [v for v in grid()[2] if v not in SMEARS]
    part = json.loads((RESULTS / "icl-grid" / "summary.json").read_text())[3]
    assert part["variants"] == list(SMEARS) and "H100" in part["device"]
    iwl = vs("key-smear", "iwl", 0.95)["c"]
    return {
        "same start": str(same),
        "sooner": str(min(p["c"]["sooner"] for p in comparisons)),
        "p": f"{max(p['p_exact'] for p in comparisons):.3f}",
        "sum first to 50%": (str(sum50["sooner"]), str(sum50["ties"])),
        "learned first to 95%": str(learned95["sooner"]),
        "iwl 95% reached": tuple(str(len(reached[v])) for v in SMEARS),
        "iwl 95% mean": tuple(n(np.mean(reached[v])) for v in SMEARS),
        "iwl 95% others": "No" if not any(reached[v] for v in others) else "Some",
        "others": len(others),
        "iwl 95% key-smear": (str(iwl["sooner"]), str(iwl["unknown"]), f"{iwl['p_sign']:.3f}"),
        "iwl 95% sum bound": pct(vs("key-smear-sum", "iwl", 0.95)["c"]["bound"]),
        "timing": (
            f"{part['wall_s']:.1f}",
            f"{1000 * part['wall_s'] / part['steps']:.2f}",
            f"{part['wall_s'] / part['runs']:.1f}",
        ),
    }


def wall(k: int) -> str:
    """Wall seconds of the k-th grid of results/icl-grid (summary.json)."""
    return f"{json.loads((RESULTS / 'icl-grid' / 'summary.json').read_text())[k]['wall_s']:.0f}"


def first_grid() -> tuple[str, str, str, str]:
    """The first grid's wall time, evaluations a run, test-set size and seconds a run."""
    part = json.loads((RESULTS / "icl-grid" / "summary.json").read_text())[0]
    cfg = grid()[0]["config"]
    evals = len(grid()[1]["none"][0])
    return wall(0), str(evals), n(cfg["eval_size"]), f"{part['wall_s'] / part['runs']:.1f}"


# -- the authors' code side by side: results/authors-toy ------------------------------------------
@cache
def authors() -> dict[str, dict[int, list[dict]]]:
    """The authors' runs of results/authors-toy."""
    return compare.authors_runs(RESULTS / "authors-toy")


def theirs(arm: str, thr: float) -> list[int | None]:
    """The authors' steps to thr, seed by seed."""
    return compare.per_seed(authors(), arm, thr)


def ours(arm: str, thr: float) -> list[int | None]:
    """Our grid's steps to thr, seed by seed."""
    return compare.per_seed(grid()[1], arm, thr)


@cache
def their_value(thr: float = 0.95) -> dict:
    """The authors' value against none, paired by seed (the side-by-side report's)."""
    return compare.value_vs_none(theirs("none", thr), theirs("value", thr), 75_000)


def their_changes() -> list[str]:
    """The authors' per-seed changes to 95%, as unsigned percentages."""
    return [pct(c) for c in their_value()["changes"]]


def early_seeds() -> list[int]:
    """The authors' seeds out of chance by step 10,000 in both arms."""
    stuck = set(compare.stuck(authors()["none"])) | set(compare.stuck(authors()["value"]))
    return [s for s in sorted(authors()["none"]) if s not in stuck]


def our_changes() -> tuple[str, str]:
    """The smallest and largest per-seed speed-up of our value stream to 95%."""
    ch = compare.value_vs_none(ours("none", 0.95), ours("value", 0.95), 75_000)["changes"]
    return pct(max(ch)), pct(min(ch))  # changes are negative: the smallest speed-up first


@cache
def escape() -> dict:
    """Runs at chance at step 10,000: our 100-seed check against the authors' seeds."""
    _, many = load_runs(RESULTS / "authors-toy" / "ours-escape")
    return compare.escape_test(many["none"], authors()["none"])


def grid_stuck() -> tuple[str, str, str, str]:
    """Our grid's baseline seeds at chance at step 10,000: count, seed, accuracy, 10% step."""
    rows = grid()[1]["none"]
    seeds = compare.stuck(rows)
    assert len(seeds) == 1, seeds  # the prose names one seed
    seed = seeds[0]
    at = next(r for r in rows[seed] if r["step"] == compare.CHANCE_BY)["acc_icl"]
    return (
        str(len(seeds)),
        str(seed),
        f"{at:.3f}",
        n(steps_to(rows[seed], "acc_icl", compare.CHANCE_LEVEL)),
    )


def plateau_seeds() -> list[int]:
    """The authors' baseline seeds still at chance at step 10,000."""
    return compare.stuck(authors()["none"])


def same_data(thr: float) -> tuple[str, str]:
    """Our step on the authors' seed 1 (none) against their run: steps to thr."""
    f = RESULTS / "authors-toy" / "ours-on-authors-data" / "none-1.jsonl"
    mine = [json.loads(ln) for ln in f.read_text().splitlines() if ln.strip()]
    return n(steps_to(mine, "acc_icl", thr)), n(steps_to(authors()["none"][1], "acc_icl", thr))


def mw(arm: str, thr: float) -> str:
    """The exact Mann-Whitney p of ours against theirs (the side-by-side report's)."""
    return f"{stats.mann_whitney(ours(arm, thr), theirs(arm, thr), censor=75_000)['p']:.2f}"


def span(xs: list) -> str:
    """'29,500-37,500': the range of some step counts."""
    return f"{n(min(xs))}-{n(max(xs))}"


def longest_plateau() -> int:
    """The authors' baseline seed that sat at chance longest."""
    return max(plateau_seeds(), key=lambda s: theirs("none", 0.1)[s])


def authors_toy_value() -> tuple:
    """The figures of the authors' value-vs-none sentence, in its order."""
    v, last = their_value(), longest_plateau()
    assert last == max(authors()["none"])  # the prose calls it "the last" of the seeds listed
    early = [their_changes()[s] for s in early_seeds()]
    return (
        str(v["censored"]["sooner"]),
        str(len(v["changes"])),
        f"{v['censored']['p_sign']:.3f}",
        *their_changes(),
        n(theirs("none", 0.1)[last]),
        *early,
        *our_changes(),
    )


# -- experiment 2: results/lm-real ----------------------------------------------------------------
@cache
def lm(setting: str) -> tuple[dict, dict, dict]:
    """An LM setting's runs, config and the report's end-of-run comparisons by (key, arm)."""
    runs, config = load_grid(RESULTS / "lm-real" / setting)
    rows, _ = final_comparisons(runs, list(runs), "none")
    return runs, config, {(c["key"], c["arm"]): c for c in rows}


def lmc(setting: str, key: str, arm: str) -> dict:
    """One end-of-run comparison of the LM report."""
    return lm(setting)[2][key, arm]


def delta(setting: str, key: str, arm: str) -> tuple[str, str, str]:
    """'-0.007', '-0.012', '-0.003': the paired difference and its t-interval."""
    p = lmc(setting, key, arm)["paired"]
    return signed(p["mean"]), signed(p["ci_low"]), signed(p["ci_high"])


def lower(setting: str, arm: str, key: str = "val_loss") -> str:
    """In how many seeds the arm ends below none."""
    return str(lmc(setting, key, arm)["paired"]["below"])


def every_run() -> list[list[dict]]:
    """Every LM run of both settings (its metric rows)."""
    return [rs for s in ("original", "resampled") for a in lm(s)[0].values() for rs in a.values()]


def run_ends(key: str) -> list[float]:
    """Every LM run's last value of key."""
    return [rs[-1][key] for rs in every_run()]


def arm_means(key: str) -> list[float]:
    """Each arm's mean at the end, both settings (the baseline's once a setting)."""
    out = []
    for s in ("original", "resampled"):
        rows = [c for (k, _), c in lm(s)[2].items() if k == key]
        out += [float(np.mean(rows[0]["base"]))] + [float(np.mean(c["values"])) for c in rows]
    return out


def lm_ranges() -> tuple:
    """IOI accuracy: the arm means' range, single runs' range and how many reach 0.5."""
    ioi, ends = arm_means("ioi_accuracy"), run_ends("ioi_accuracy")
    return (
        f"{min(ioi):.2f}",
        f"{max(ioi):.2f}",
        f"{min(ends):.3f}",
        f"{max(ends):.3f}",
        str(sum(x >= 0.5 for x in ends)),
        str(len(ends)),
    )


def lm_opening() -> tuple:
    """The figures of results/lm-real's opening paragraph, in its order."""
    pm = [
        value_range(lm(s)[0], list(lm(s)[0]), "prefix_matching") for s in ("original", "resampled")
    ]
    ind = [
        value_range(lm(s)[0], list(lm(s)[0]), "induction_score") for s in ("original", "resampled")
    ]
    means = arm_means("induction_score")
    return (
        str(len(run_ends("ioi_accuracy"))),
        *lm_ranges()[:5],
        f"{min(r[1] for r in pm):.3f}",
        f"{max(r[2] for r in pm):.3f}",
        f"{max(r[0] for r in ind):.2f}",
        f"{min(means):.2f}",
        f"{max(means):.2f}",
    )


def loss_above_seeds() -> tuple:
    """The seeds where the value stream's held-out loss is above none's (original names)."""
    c = lmc("original", "val_loss", "value")
    d = c["values"] - c["base"]
    up = [(s, x) for s, x in zip(c["seeds"], d, strict=True) if x > 0]
    assert len(up) == 2, up  # the prose names two
    return str(up[0][0]), str(up[1][0]), signed(up[0][1], 4), signed(up[1][1], 4)


def finished() -> str:
    """How many LM runs reached their planned last step."""
    runs = [
        rs
        for s in ("original", "resampled")
        for rs_by_seed in lm(s)[0].values()
        for rs in rs_by_seed.values()
        if rs[-1]["step"] >= lm(s)[1]["config"]["steps"]
    ]
    return str(len(runs))


def lm_speed() -> tuple:
    """Wall seconds and tokens/s a run (summary.json) of the runs trained ten and twenty at a
    time (results/lm-real, "How it was run"), and the GPU's total: ten at once were the original
    none and value arms and the resampled grid (whose value-first runs were resumed: their
    summaries time only the last part), twenty at once the original value-first and
    value-learned arms."""
    groups = {
        10: [("original", "none"), ("original", "value"), ("resampled", "none"),
             ("resampled", "value"), ("resampled", "value-learned")],
        20: [("original", "value-first"), ("original", "value-learned")],
    }  # fmt: skip
    out, total = [], []
    for k, arms in groups.items():
        runs = [
            json.loads(f.read_text())
            for s, a in arms
            for f in sorted((RESULTS / "lm-real" / s).glob(f"{a}-s*/summary.json"))
        ]
        walls, speeds = [r["wall_s"] for r in runs], [r["tokens_per_s"] for r in runs]
        out += [f"{min(walls):.0f}", f"{max(walls):.0f}"]
        out += [n(round(min(speeds), -3)), n(round(max(speeds), -3))]
        total += [k * min(speeds), k * max(speeds)]
    return (*out, f"{min(total) / 1e6:.1f}", f"{max(total) / 1e6:.1f}")


def trained_tokens() -> str:
    """Tokens a run of the original setting trained on, in millions."""
    return f"{lm('original')[0]['none'][0][-1]['tokens'] / 1e6:.0f}"


def p3(setting: str, key: str, arm: str) -> str:
    """The exact sign-flip p of an LM comparison, to 3 decimals."""
    return f"{lmc(setting, key, arm)['paired']['p_exact']:.3f}"


def mean2(setting: str, key: str, arm: str, which: str) -> str:
    """The mean of the baseline ('base') or the arm ('values') of an LM comparison."""
    return f"{np.mean(lmc(setting, key, arm)[which]):.2f}"


def heldout_names() -> tuple[str, str, str, str]:
    """IOI names of the resampled setting: how many, how many are one token, the others' range."""
    from tokenizers import Tokenizer  # noqa: PLC0415

    folder = RESULTS / "lm-real" / "resampled" / "tokenizer"
    tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    names = json.loads((folder / "ioi_vocab.json").read_text())["names"]
    lengths = [len(tok.encode(" " + name).ids) for name in names]
    longer = [k for k in lengths if k > 1]
    return str(len(names)), word(len(names) - len(longer)), str(min(longer)), str(max(longer))


def original_names() -> tuple[str]:
    """The original setting's IOI names, every one a single token of its vocabulary."""
    from tokenizers import Tokenizer  # noqa: PLC0415

    folder = RESULTS / "lm-real" / "original" / "tokenizer"
    tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    names = json.loads((folder / "ioi_vocab.json").read_text())["names"]
    assert all(len(tok.encode(" " + name).ids) == 1 for name in names)
    assert len(names) == lm("original")[1]["ioi_names"]
    return (str(len(names)),)


def split_tokens() -> tuple[str, str, str, str]:
    """Validation tokens and ICL-score stories of both LM settings."""
    tok = RESULTS / "lm-real"
    val = [
        json.loads((tok / s / "tokenizer" / "validation.json").read_text())["tokens"]
        for s in ("original", "resampled")
    ]
    stories = [lm(s)[1]["icl_stories"] for s in ("original", "resampled")]
    return n(val[0]), n(val[1]), str(stories[0]), str(stories[1])


def steps_lm() -> tuple[str, str]:
    """The planned steps of both LM settings."""
    return tuple(n(lm(s)[1]["config"]["steps"]) for s in ("original", "resampled"))


@cache
def sweep() -> dict[tuple[int, int], list[dict]]:
    """The vocabulary sweep's runs by (vocabulary, epochs): one `none` run each, all seed 0,
    so not a grid load_grid can key by stream and seed."""
    out = {}
    for cfg in sorted((RESULTS / "lm-real" / "sweep").glob("sweep-*/config.json")):
        c = json.loads(cfg.read_text())
        rows = [json.loads(ln) for ln in (cfg.parent / "metrics.jsonl").read_text().splitlines()]
        out[c["data"]["vocab_size"], round(c["config"]["epochs"])] = rows
    return out


def sweep_row(vocab: int) -> tuple:
    """A row of the vocabulary sweep: train tokens an epoch, bpb (nats/token) at 3, 6, 12."""
    folder = RESULTS / "lm-real"
    tok = folder / "original/tokenizer" if vocab == 8192 else folder / f"sweep/tokenizer-{vocab}"
    cells = [n(json.loads((tok / "train.json").read_text())["tokens"])]
    for epochs in (3, 6, 12):
        last = sweep()[vocab, epochs][-1]
        cells += [f"{last['val_bpb']:.4f}", f"{last['val_loss']:.3f}"]
    return tuple(cells)


# -- results/soak ---------------------------------------------------------------------------------
@cache
def soak(workload: str) -> dict:
    """One soak workload's record."""
    return json.loads((RESULTS / "soak" / f"soak-{workload}.json").read_text())["workloads"][0]


def soak_row(workload: str) -> tuple:
    """A workload's row of the soak table."""
    w = soak(workload)
    return str(w["cycles"]), str(w["kills_hit"]), str(w["runs"]), str(w["failures"]), n(w["wall_s"])


def soak_both() -> tuple:
    """The soak table's row of both workloads together."""
    ws = [soak("icl"), soak("lm")]
    return tuple(str(sum(w[k] for w in ws)) for k in ("cycles", "kills_hit", "runs", "failures"))


def landed(kind: str) -> tuple[str, str]:
    """Where the kills landed, by kind: icl grid and lm train."""
    return str(soak("icl")["landed"].get(kind, 0)), str(soak("lm")["landed"].get(kind, 0))


def fuzz() -> tuple[str, str, str]:
    """Inputs, failures and wall seconds of the deep fuzzing log."""
    log = (RESULTS / "soak" / "fuzz-deep.txt").read_text()
    counts = [tuple(map(int, m)) for m in re.findall(r"(\d+) passing, (\d+) failing", log)]
    seconds = re.search(r"wall=(\d+)s", log).group(1)
    return n(sum(c[0] for c in counts)), str(sum(c[1] for c in counts)), seconds


# -- the table ------------------------------------------------------------------------------------
# -- experiment 2, long training: results/lm-long/pilot -------------------------------------------
PILOT = "results/lm-long/pilot/README.md"
ARMS = ("none", "value")


SEEDS = (0, 1)


@cache
def pilot() -> dict[str, dict[int, list[dict]]]:
    """The pilot's runs (names resampled), by arm and seed."""
    runs, _ = load_grid(RESULTS / "lm-long" / "pilot" / "resampled")
    assert {a: sorted(runs[a]) for a in runs} == {a: list(SEEDS) for a in ARMS}
    return {arm: runs[arm] for arm in ARMS}


def each(f: Callable[[list[dict]], str]) -> tuple:
    """A figure of every run: none seed 0, none seed 1, value seed 0, value seed 1."""
    return tuple(f(pilot()[arm][seed]) for arm in ARMS for seed in SEEDS)


def pilot_runs() -> list[list[dict]]:
    return [pilot()[arm][seed] for arm in ARMS for seed in SEEDS]


def low_high(values) -> tuple[str, str]:
    """The lowest and the highest of figures formatted alike."""
    return min(values, key=float), max(values, key=float)


def pilot_tokens() -> tuple[str, str]:
    last = pilot()["none"][0][-1]
    assert all(rows[-1]["step"] == last["step"] for rows in pilot_runs())
    return f"{last['tokens'] / 1e6:.1f}M", n(last["step"])


def pilot_loss() -> tuple:
    low_at = {f"{lowest(rows)['tokens'] / 1e6:.1f}M" for rows in pilot_runs()}
    assert len(low_at) == 1  # all at the same evaluation, as the text says
    return (
        low_at.pop(),
        *each(lambda r: f"{lowest(r)['val_loss']:.3f}"),
        *each(lambda r: f"{r[-1]['val_loss']:.3f}"),
        *low_high(each(lambda r: f"{r[-1]['train_loss']:.3f}")),
    )


def pilot_ioi() -> tuple:
    runs = {arm: dict(pilot()[arm]) for arm in ARMS}
    top = value_range(runs, ARMS, "ioi_accuracy")[0]
    p_io = max(r["ioi_p_io"] for rows in pilot_runs() for r in rows)
    return (
        f"{top:.3f}",
        *low_high(each(lambda r: f"{r[-1]['ioi_accuracy']:.3f}")),
        f"{math.ceil(p_io * 1e4) / 1e4:.4f}",  # "stays below"
    )


def _peak(rows: list[dict]) -> dict:
    return max(rows, key=lambda r: r["induction_score"])


def _negative_from(rows: list[dict]) -> str:
    """Where the induction score turns negative after its peak, for good."""
    after = [r for r in rows if r["tokens"] > _peak(rows)["tokens"]]
    first = next(i for i, r in enumerate(after) if r["induction_score"] < 0)
    assert all(r["induction_score"] < 0 for r in after[first:])  # and stays so
    return f"{after[first]['tokens'] / 1e6:.1f}M"


def pilot_induction() -> tuple:
    peaks = each(lambda r: f"{_peak(r)['induction_score']:.3f}")
    at = each(lambda r: f"{_peak(r)['tokens'] / 1e6:.1f}M")
    pm = max(r["prefix_matching"] for rows in pilot_runs() for r in rows)
    return (
        peaks[0], peaks[1], at[0], at[1], peaks[2], peaks[3], at[2], at[3],
        *each(_negative_from),
        f"{pm:.3f}",
    )  # fmt: skip


def pilot_induction_short() -> tuple[str, str]:
    """The README's: the highest peak, and the latest point from which the score is negative."""
    latest = max(each(_negative_from), key=lambda s: float(s[:-1]))
    return max(each(lambda r: f"{_peak(r)['induction_score']:.3f}"), key=float), latest


def pilot_paper() -> tuple:
    def spread(arm, key):
        late = [r[key] for rows in pilot()[arm].values() for r in rows if r["tokens"] >= 15e6]
        return f"{min(late):.4f}-{max(late):.4f}"

    return (
        spread("none", "paper_ioi_p_io"),
        spread("value", "paper_ioi_p_io"),
        spread("none", "paper_ioi_p_s"),
        spread("value", "paper_ioi_p_s"),
        *each(lambda r: f"{r[-1]['paper_ioi_p_io']:.4f}"),
        *each(lambda r: f"{r[-1]['paper_ioi_p_s']:.4f}"),
    )


def pilot_speed() -> tuple:
    def summary(arm, seed):
        path = RESULTS / "lm-long/pilot/resampled" / f"{arm}-s{seed}/summary.json"
        return json.loads(path.read_text())

    s = {(a, sd): summary(a, sd) for a in ARMS for sd in SEEDS}
    walls0 = {f"{s[a, 0]['wall_s']:.0f}" for a in ARMS}
    assert len(walls0) == 1  # "433 s each"
    logs = [(RESULTS / "lm-long/pilot" / f).read_text() for f in ("job.log", "job-s1.log")]
    preps = [re.search(r"\[(\d+) s\] prepared", log).group(1) for log in logs]
    return (
        n(s["none", 0]["tokens_per_s"]),
        n(s["value", 0]["tokens_per_s"]),
        walls0.pop(),
        n(s["none", 1]["tokens_per_s"]),
        n(s["value", 1]["tokens_per_s"]),
        f"{s['none', 1]['wall_s']:.0f}",
        f"{s['value', 1]['wall_s']:.0f}",
        *preps,
    )


def pilot_crossings() -> tuple:
    """Each pilot threshold's crossings over the four runs (lowest, highest), then the grid's
    length: 40 passes over one copy of the train split, its tokens and steps."""
    extra = abilities("pilot")[len(abilities()) :]
    out, latest = [], 0
    for key, _, thr, times in extra:
        got = [crossing(rows, key, thr, times) for rows in pilot_runs()]
        assert None not in got  # "every resampled pilot run shows"
        latest = max(latest, *got)
        out += [f"{min(got) / 1e6:.1f}M", f"{max(got) / 1e6:.1f}M"]
    assert latest < 50e6  # "every crossing comes before 50M tokens"
    prep = json.loads((RESULTS / "lm-long/pilot/prep-resampled.json").read_text())["train"]
    steps = math.ceil(40 * prep["tokens"] / prep["copies"] / (64 * 256))
    assert steps * 64 * 256 > 2 * latest  # "more than twice the latest crossing"
    return (*out, f"{steps * 64 * 256 / 1e6:.1f}M", n(steps))


@cache
def billion() -> dict[str, list[dict]]:
    """The pilot's 1B-token runs: seed 0 of each arm."""
    runs, config = load_grid(RESULTS / "lm-long" / "pilot" / "billion")
    assert {a: sorted(runs[a]) for a in runs} == {a: [0] for a in ARMS}
    # "373 passes", "40 renamed copies", "24 log-spaced evaluations" (and step 0)
    assert (config["config"]["epochs"], config["data"]["copies"]) == (373, 40)
    assert config["config"]["eval_log"] == 24 and len(runs["none"][0]) == 25
    assert config["config"]["init_from"] is None  # "from scratch"
    return {arm: runs[arm][0] for arm in ARMS}


def billion_run(b: dict[str, list[dict]] | None = None) -> tuple:
    """Tokens and steps (both runs alike), then the held-out minimum (one token count for
    both), the losses at the end and the training losses at the end; of the 1B runs, or of
    another pair of seed-0 runs."""
    b = b or billion()
    assert b["none"][-1]["step"] == b["value"][-1]["step"]
    low_at = {f"{lowest(b[a])['tokens'] / 1e6:.1f}M" for a in ARMS}
    assert len(low_at) == 1
    for a in ARMS:  # "rises for the rest of the run": every evaluation above the one before
        after = [r["val_loss"] for r in b[a] if r["tokens"] >= lowest(b[a])["tokens"]]
        assert all(y > x for x, y in pairwise(after))
    last = b["none"][-1]
    return (
        f"{last['tokens'] / 1e6:,.1f}M",
        n(last["step"]),
        low_at.pop(),
        *(f"{lowest(b[a])['val_loss']:.3f}" for a in ARMS),
        *(f"{b[a][-1]['val_loss']:.3f}" for a in ARMS),
        *(f"{b[a][-1]['train_loss']:.3f}" for a in ARMS),
    )


def ioi_figures(runs: dict[str, list[dict]]) -> tuple:
    """One run an arm: templated IOI accuracy's highest in any run, then each run's at the end."""
    return (
        f"{max(r['ioi_accuracy'] for a in ARMS for r in runs[a]):.3f}",
        *(f"{runs[a][-1]['ioi_accuracy']:.3f}" for a in ARMS),
    )


def induction_figures(runs: dict[str, list[dict]]) -> tuple:
    """One run an arm: the induction score's peaks and ends, then the best prefix-matching head
    in any run."""
    return (
        *(f"{_peak(runs[a])['induction_score']:.3f}" for a in ARMS),
        *(f"{runs[a][-1]['induction_score']:.3f}" for a in ARMS),
        f"{max(r['prefix_matching'] for a in ARMS for r in runs[a]):.3f}",
    )


def authors_figures(runs: dict[str, list[dict]], mover: str) -> tuple:
    """One run an arm: the authors' P(right name) after 15M tokens (each arm's range), at the
    end, `mover`'s largest move between two evaluations, and value's lead at the end, which that
    move exceeds."""
    late = {a: [r["paper_ioi_p_io"] for r in runs[a] if r["tokens"] >= 15e6] for a in ARMS}
    p_end = {a: runs[a][-1]["paper_ioi_p_io"] for a in ARMS}
    moves = [abs(x - y) for x, y in pairwise(late[mover])]
    lead = p_end["value"] - p_end["none"]
    assert lead > 0 and max(moves) > lead  # "more than the lead"
    return (
        *(f"{min(late[a]):.4f}-{max(late[a]):.4f}" for a in ARMS),
        *(f"{p_end[a]:.4f}" for a in ARMS),
        f"{max(moves):.4f}",
        f"{lead:.4f}",
    )


def billion_abilities() -> tuple:
    """IOI accuracy's highest and its ends; induction's peaks and ends, the best prefix-matching
    head; the authors' P(right name) after 15M tokens, at the end, the value run's largest move
    between evaluations and its lead at the end."""
    b = billion()
    return (*ioi_figures(b), *induction_figures(b), *authors_figures(b, "value"))


def billion_context() -> tuple:
    """The loss on the late token at the held-out minimum and at the end (a rise); context gain
    at the minimum, the first evaluation from which it stays below 0.3 nats in both runs, and
    at the end."""
    b = billion()
    low = {a: lowest(b[a]) for a in ARMS}
    assert all(b[a][-1]["loss_late"] > low[a]["loss_late"] for a in ARMS)  # "rises"
    below = [
        next(
            r["tokens"]
            for i, r in enumerate(b[a])
            if all(x["context_gain"] < 0.3 for x in b[a][i:])
        )
        for a in ARMS
    ]
    return (
        *(f"{low[a]['loss_late']:.3f}" for a in ARMS),
        *(f"{b[a][-1]['loss_late']:.3f}" for a in ARMS),
        *(f"{low[a]['context_gain']:.3f}" for a in ARMS),
        f"{max(below) / 1e6:.1f}M",
        *(f"{b[a][-1]['context_gain']:.3f}" for a in ARMS),
    )


def billion_speed() -> tuple:
    """The runs' wall seconds (one figure, rounded to ten), their tokens/s, then each run's wall
    seconds, from summary.json."""
    s = {
        a: json.loads((RESULTS / f"lm-long/pilot/billion/{a}-s0/summary.json").read_text())
        for a in ARMS
    }
    walls = {f"{round(s[a]['wall_s'], -1):.0f}" for a in ARMS}
    assert len(walls) == 1  # "about N s"
    assert all("H100" in s[a]["device"] for a in ARMS)
    return (
        walls.pop(),
        *(n(s[a]["tokens_per_s"]) for a in ARMS),
        *(f"{s[a]['wall_s']:.0f}" for a in ARMS),
    )


@cache
def original() -> dict[str, list[dict]]:
    """The pilot's original-names runs: seed 0 of each arm, 150 passes, 48 evaluations."""
    runs, config = load_grid(RESULTS / "lm-long" / "pilot" / "original")
    assert {a: sorted(runs[a]) for a in runs} == {a: [0] for a in ARMS}
    assert (config["config"]["epochs"], config["data"]["names"]) == (150, "original")
    assert config["config"]["eval_log"] == 48 and len(runs["none"][0]) == 49
    return {arm: runs[arm][0] for arm in ARMS}


def original_abilities() -> tuple:
    """IOI accuracy's highest and ends, evaluations after 15M tokens below 0.5 (one count for
    both runs, of how many), P(IO)'s highest against the resampled pilot's bound; induction's
    peaks and ends, the best prefix-matching head; the authors' P(right name) after 15M tokens,
    at the end, none's largest move and value's lead at the end; context gain's peaks and ends."""
    o = original()
    late = {a: [r for r in o[a] if r["tokens"] >= 15e6] for a in ARMS}
    below = {sum(r["ioi_accuracy"] < 0.5 for r in late[a]) for a in ARMS}
    sizes = {len(late[a]) for a in ARMS}
    assert len(below) == 1 == len(sizes)  # "at N of M evaluations in each run"
    return (
        *ioi_figures(o),
        str(below.pop()),
        str(sizes.pop()),
        *(f"{max(r['ioi_p_io'] for r in o[a]):.4f}" for a in ARMS),
        pilot_ioi()[3],
        *induction_figures(o),
        *authors_figures(o, "none"),
        *(f"{max(r['context_gain'] for r in o[a]):.3f}" for a in ARMS),
        *(f"{o[a][-1]['context_gain']:.3f}" for a in ARMS),
    )


def original_induction() -> tuple:
    """The resampled runs' latest start of a negative induction score for good and their ends
    (lowest, highest); then the original runs: none never negative after its peak, value
    negative from one evaluation to another, positive at the end."""
    o = original()
    latest = max(each(_negative_from), key=lambda s: float(s[:-1]))
    negative = {
        a: [r["tokens"] for r in o[a] if r["tokens"] > _peak(o[a])["tokens"] and
            r["induction_score"] < 0]
        for a in ARMS
    }  # fmt: skip
    assert not negative["none"] and all(o[a][-1]["induction_score"] > 0 for a in ARMS)
    after = [r["tokens"] for r in o["value"] if r["tokens"] > _peak(o["value"])["tokens"]]
    first, last = after.index(negative["value"][0]), after.index(negative["value"][-1])
    assert after[first : last + 1] == negative["value"]  # one stretch, "from ... to ..."
    return (
        latest,
        *low_high(each(lambda r: f"{r[-1]['induction_score']:.3f}")),
        *(f"{t / 1e6:.1f}M" for t in (negative["value"][0], negative["value"][-1])),
    )


def original_crossings() -> tuple:
    """The pilot thresholds' crossings in the original runs (none, value), value's P(right name)
    never held; all before the grid's length (pilot_crossings' last but one figure)."""
    o, out = original(), []
    grid = float(pilot_crossings()[-2][:-1]) * 1e6
    for key, _, thr, times in abilities("pilot")[len(abilities()) :]:
        got = [crossing(o[a], key, thr, times) for a in ARMS]
        if key == "paper_ioi_p_io":
            assert got[1] is None  # "value never holds it twice in a row"
            got = got[:1]
        assert max(got) < grid
        out += [f"{g / 1e6:.1f}M" for g in got]
    return (*out, pilot_crossings()[-2])


def original_speed() -> tuple:
    """Each run's tokens/s and wall seconds on one H100 under MPS, and the preparation's s."""
    folder = RESULTS / "lm-long/pilot/original"
    s = {a: json.loads((folder / f"{a}-s0/summary.json").read_text()) for a in ARMS}
    assert all("H100" in s[a]["device"] for a in ARMS)
    log = (folder / "job.log").read_text()
    assert "MPS daemon started" in log and "MPS refused" not in log
    return (
        *(n(s[a]["tokens_per_s"]) for a in ARMS),
        *(f"{s[a]['wall_s']:.0f}" for a in ARMS),
        re.search(r"\[(\d+) s\] prepared", log).group(1),
    )


def share(name: str = "", modes=("plain", "mps")) -> tuple:
    """results/benchmarks/2026-12-07-lm-share-h100[-NAME].json: wall s, tokens/s and runs per
    GPU-minute of each mode, then each mode's ratio to plain (after the first)."""
    file = f"benchmarks/2026-12-07-lm-share-h100{name and '-' + name}.json"
    rows = {r["mode"]: r for r in json.loads((RESULTS / file).read_text())}
    if not name:  # the first job: both stacked modes failed
        assert rows["stack"]["runs_per_gpu_minute"] == 0 == rows["stack-mps"]["runs_per_gpu_minute"]
    out, ratios = [], []
    for mode in modes:
        r = rows[mode]
        assert r["failed"] == 0 and r["runs"] == 10
        out += [f"{r['wall_s']:.1f}", n(r["tokens_per_s"]), f"{r['runs_per_gpu_minute']:.2f}"]
        ratio = r["runs_per_gpu_minute"] / rows["plain"]["runs_per_gpu_minute"]
        ratios += [f"{ratio:.2f}"] if mode != "plain" else []
    return (*out, *ratios)


STACKS = "stacks-math", ("plain", "stack", "mps", "stack-mps")


# -- experiment 2, long training: the grid (results/lm-long/resampled, original) ---------------
LONG = "results/lm-long/README.md"
LONG_ARMS = ("none", "value", "value-first", "value-learned", "key-smear")
LONG_SETTINGS = {"resampled": LONG_ARMS, "original": ("none", "value")}


@cache
def long_grid(setting: str = "resampled") -> dict[str, dict[int, list[dict]]]:
    """One setting's runs by arm and seed: every run finished, every arm on seeds 0..k-1."""
    runs, config = load_grid(RESULTS / "lm-long" / setting)
    end = config["config"]["steps"]
    assert set(runs) == set(LONG_SETTINGS[setting])
    assert all(rows[-1]["step"] == end for arm in runs.values() for rows in arm.values())
    seeds = list(range(len(runs["none"])))
    assert all(sorted(runs[a]) == seeds for a in runs)
    return {a: runs[a] for a in LONG_SETTINGS[setting]}


def long_n(setting: str = "resampled") -> int:
    return len(long_grid(setting)["none"])


def long_setting(setting: str = "resampled") -> tuple:
    """The arms, their seeds, the runs, and the length: tokens and steps."""
    runs = long_grid(setting)
    arms = list(runs)
    last = runs["none"][0][-1]
    return (", ".join(arms[:-1]) + f" and {arms[-1]}", f"0-{long_n(setting) - 1}",
            str(sum(map(len, runs.values()))), f"{last['tokens'] / 1e6:.1f}M",
            n(last["step"]))  # fmt: skip


def long_at(
    key: str, thr: float, times: int = 2, setting: str = "resampled"
) -> dict[str, dict[int, int | None]]:
    """The step from which each run holds key > thr (first_step), by arm and seed."""
    runs = long_grid(setting)
    return {a: {s: first_step(r, key, thr, times) for s, r in runs[a].items()} for a in runs}


def long_sooner(
    at: dict, seeds: list[int], arm: str = "value", base: str = "none", setting: str = "resampled"
) -> dict:
    """`arm` against `base` on those seeds' onsets, censored at the runs' end."""
    end = long_grid(setting)["none"][0][-1]["step"]
    b, a = ([at[x][s] for s in seeds] for x in (base, arm))
    return stats.censored_comparison(b, a, end)


def seeds_text(by_arm: dict[str, list[int]]) -> str:
    """'value-first seeds 0, 2 and 9, key-smear seed 1' for the arms with any seed."""

    def one(arm: str, seeds: list[int]) -> str:
        listed = ", ".join(map(str, seeds[:-1])) + f" and {seeds[-1]}" if seeds[1:] else seeds[0]
        return f"{arm} seed{'s' if seeds[1:] else ''} {listed}"

    return ", ".join(one(a, s) for a, s in by_arm.items() if s)


def long_never() -> tuple:
    """The paper's abilities: the highest each quantity reached in any run; the runs passing 1
    nat of induction score at some evaluation (how many, which); the one run that holds it at
    two in a row, from where, and where that run ends."""
    runs, out, crossed = long_grid(), [], []
    for key, (_, thr, times) in ABILITIES.items():
        out.append(f"{value_range(runs, list(runs), key)[0]:.3f}")
        at = long_at(key, thr, times)
        crossed += [(key, a, s, v) for a in at for s, v in at[a].items() if v is not None]
    ((key, arm, seed, step),) = crossed
    once = {a: [s for s, r in runs[a].items() if max(x[key] for x in r) > 1.0] for a in runs}
    # value-learned's one run passes by a hair at a single evaluation: the text says by how much
    (s9,) = once["value-learned"]
    above = [x[key] - 1.0 for x in runs["value-learned"][s9] if x[key] > 1.0]
    listed = seeds_text(once).replace(
        f"value-learned seed {s9}",
        f"value-learned seed {s9}, by {max(above):.4f} nats at {['one', 'two'][len(above) - 1]} "
        "evaluation",
    )
    rows = runs[arm][seed]
    at = next(r for r in rows if r["step"] == step)
    return (*out, str(sum(map(len, once.values()))), listed, arm, str(seed),
            f"{at['tokens'] / 1e6:.1f}M", f"{rows[-1][key]:.3f}")  # fmt: skip


def long_onsets(arm: str = "value", base: str = "none", setting: str = "resampled") -> tuple:
    """Each pilot threshold: runs showing it (base, arm), then arm against base seed by seed:
    sooner, later, the same evaluation, and the exact sign p."""
    out = []
    for key, _, thr, times in abilities("pilot")[len(abilities()) :]:
        at = long_at(key, thr, times, setting)
        c = long_sooner(at, sorted(at[arm]), arm, base, setting)
        shown = [sum(at[a][s] is not None for s in at[arm]) for a in (base, arm)]
        out += [*map(str, shown), str(c["sooner"]), str(c["later"]), str(c["ties"])]
        out.append(f"{c['p_sign']:.3g}")
    return tuple(out)


def long_onset_change(key: str, arm: str, base: str = "none") -> str:
    """The change of the mean onset step of one pilot threshold (no run of either censored)."""
    ((_, _, thr, times),) = [a for a in abilities("pilot")[len(abilities()) :] if a[0] == key]
    at = long_at(key, thr, times)
    c = long_sooner(at, sorted(at[arm]), arm, base)
    assert c["bound_kind"] == "exact"
    return pct(c["bound"])


def long_final(
    key: str, digits: int, arm: str = "value", base: str = "none", setting: str = "resampled"
) -> tuple:
    """At the end, arm against base: both means, Δ with its interval, p, seeds below/above."""
    grid = long_grid(setting)
    (c,) = [c for c in final_comparisons(grid, [base, arm], base)[0] if c["key"] == key]
    p = c["paired"]
    f = [c["base"].mean(), c["values"].mean()]
    ci = (p["ci_low"], p["ci_high"]) if p["ci_low"] is not None else ()
    return (*(f"{x:.{digits}f}" for x in f), *(signed(x, digits) for x in (p["mean"], *ci)),
            f"{p['p_exact']:.3g}", str(p["below"]), str(p["above"]))  # fmt: skip


def long_machine() -> tuple:
    """Tokens of the 40 copies (the same digest in every job), the jobs, how many jobs ran each
    number of grid runs (in the order the sizes first came), and the range of the runs' tokens/s
    and wall seconds."""
    folder = RESULTS / "lm-long" / "resampled"
    train = json.loads((folder / "prep-resampled.json").read_text())["train"]
    logs = sorted(folder.glob("job-*.log"))
    assert all(train["sha256"] in log.read_text() for log in logs)
    per_job = [len(job) for job in logged_runs(logs)]  # processes a job, every setting's
    sizes = list(dict.fromkeys(per_job))
    assert sum(map(len, long_jobs())) == int(long_setting()[2])
    return (n(train["tokens"]), str(len(logs)),
            *(str(x) for size in sizes for x in (per_job.count(size), size)),
            *setting_runs("resampled"))  # fmt: skip


def long_original() -> tuple:
    """The original-names setting: tokens of its one train split (the same digest in both jobs
    that ran it: the grid's last job and its own), the runs' tokens/s and wall seconds (ranges)."""
    folder = RESULTS / "lm-long" / "original"
    train = json.loads((folder / "prep-original.json").read_text())["train"]
    logs = [RESULTS / "lm-long/resampled" / "job-6.log", folder / "job-7.log"]
    assert all(train["sha256"] in log.read_text() for log in logs)
    return n(train["tokens"]), *setting_runs("original")


def long_measures() -> str:
    """How many measures the report compares at the end."""
    return str(
        len({c["key"] for c in final_comparisons(long_grid(), ["none", "value"], "none")[0]})
    )


def long_censored() -> tuple:
    """P(right name) > 0.02, value against none without the none runs that never cross: which,
    how many are left, the change of the mean step, value sooner and later."""
    at = long_at("paper_ioi_p_io", 0.02)
    never = [s for s, v in at["none"].items() if v is None]
    assert None not in at["value"].values()
    seeds = [s for s in sorted(at["none"]) if s not in never]
    c = long_sooner(at, seeds)
    assert c["bound_kind"] == "exact" and c["bound"] < 0
    return (" and ".join(map(str, never)), str(len(seeds)), pct(c["bound"]), str(c["sooner"]),
            str(c["later"]))  # fmt: skip


def long_end_below() -> tuple:
    """Runs of each arm whose last evaluation is below the threshold again: P(right name) < 0.02,
    then the induction score < 0.5."""
    runs = long_grid()
    return tuple(
        str(sum(r[-1][key] < thr for r in runs[a].values()))
        for key, thr in (("paper_ioi_p_io", 0.02), ("induction_score", 0.5))
        for a in LONG_ARMS
    )


def long_lowest_learned() -> tuple:
    """value-learned against none at each run's lowest held-out loss (mean gap, seeds higher),
    then the rise from that lowest point to the end: value-learned's range, none's range."""
    runs = long_grid()
    low = {a: np.array([lowest(runs[a][s])["val_loss"] for s in sorted(runs[a])]) for a in runs}
    gap = low["value-learned"] - low["none"]

    def rise(arm: str) -> list[float]:
        return [r[-1]["val_loss"] - lowest(r)["val_loss"] for r in runs[arm].values()]

    a, b = rise("value-learned"), rise("none")
    return (f"{gap.mean():.3f}", str(int((gap > 0).sum())), signed(min(a)), signed(max(a)),
            signed(min(b)), signed(max(b)))  # fmt: skip


def long_grid_config(setting: str) -> dict:
    """One run's saved config of a setting (they share it: load_grid checks)."""
    return load_grid(RESULTS / "lm-long" / setting)[1]


def paper_name_tokens() -> tuple:
    """The paper's prompt names split in two by the renamed grid's tokenizer, of how many, after
    checking that every one is one token in the original names' tokenizer. The tokenizers are
    results/lm-real's, the same (by digest) as the grid's."""
    from attnstreams.data.tokenizer import load_tokenizer, tokenizer_digest
    from attnstreams.experiments.lm.evals import paper_prompts

    names = sorted({n for p in paper_prompts() for n in (p.io, p.s)})
    counts = {}
    for setting in ("original", "resampled"):
        folder = RESULTS / "lm-real" / setting / "tokenizer"
        prep = json.loads((RESULTS / "lm-long" / setting / f"prep-{setting}.json").read_text())
        assert tokenizer_digest(folder) == prep["train"]["tokenizer_sha256"]
        tok = load_tokenizer(folder)
        counts[setting] = [len(tok.encode(" " + name)) for name in names]
    assert set(counts["original"]) == {1} and set(counts["resampled"]) <= {1, 2}
    return str(counts["resampled"].count(2)), str(len(names))


def long_family() -> tuple:
    """The smallest exact sign-flip p with 10 seeds; the report's comparisons at the end (every
    arm against none) and the smallest Holm-adjusted p over them, which no comparison of 10
    seeds can bring below 0.05; the Bonferroni level over one arm's measures, which it can."""
    floor = stats.sign_flip_p(np.ones(long_n()))
    rows = final_comparisons(long_grid(), list(LONG_ARMS), "none")[0]
    smallest = min(stats.holm([c["paired"]["p_exact"] for c in rows]))
    assert floor < 0.05 / int(long_measures()) and len(rows) * floor > 0.05
    return (str(long_n()), f"{floor:.5f}", str(len(rows)), f"{smallest:.3g}", long_measures(),
            f"{0.05 / int(long_measures()):.5f}")  # fmt: skip


def long_heldout() -> tuple:
    """Held-out loss: the tokens of every run's lowest evaluation (range), and how far above it
    each run ends (range), for the arms but value-first, then for value-first, whose every run
    falls lower than any other."""
    runs = long_grid()
    low = {a: [lowest(r)["val_loss"] for r in runs[a].values()] for a in runs}
    assert max(low["value-first"]) < min(v for a in runs if a != "value-first" for v in low[a])
    out = []
    for arms in ([a for a in runs if a != "value-first"], ["value-first"]):
        rows = [r for a in arms for r in runs[a].values()]
        rise = [r[-1]["val_loss"] - lowest(r)["val_loss"] for r in rows]
        assert min(rise) > 0
        out += [signed(min(rise)), signed(max(rise))]
    at = [lowest(r)["tokens"] for a in runs.values() for r in a.values()]
    below = np.mean(low["none"]) - np.mean(low["value-first"])
    return (f"{min(at) / 1e6:.1f}M", f"{max(at) / 1e6:.1f}M", *out, f"{below:.3f}",
            long_final("val_loss", 3, "value-first")[2][1:])  # fmt: skip


def long_arm_means(key: str, digits: int) -> tuple:
    """The lowest and the highest arm mean at the end, each with its arm."""
    runs = long_grid()
    means = sorted((np.mean([r[-1][key] for r in runs[a].values()]), a) for a in runs)
    return f"{means[0][0]:.{digits}f}", means[0][1], f"{means[-1][0]:.{digits}f}", means[-1][1]


def long_both_above(key: str) -> tuple:
    """value-first's and the smeared key's means at the end, then the seeds (of 10) where both
    are above the value stream, and the exact p: the same count and p for both, as the text
    says."""
    f, g = (long_final(key, 3, arm, "value") for arm in ("value-first", "key-smear"))
    assert (f[7], f[5]) == (g[7], g[5])
    return f[1], g[1], f[7], f[5]


def long_jobs() -> list[dict]:
    """Each grid job (job-1.log ...): its runs' summaries. A job's log lists its runs, and also
    those of earlier jobs on the same machine."""
    folder = RESULTS / "lm-long" / "resampled"
    end = long_grid()["none"][0][-1]["step"]
    return [
        [json.loads((folder / run / "summary.json").read_text()) for _, run, step in job
         if step == end]
        for job in logged_runs(sorted(folder.glob("job-*.log")))
    ]  # fmt: skip


def logged_runs(logs: list[Path]) -> list[set[tuple[str, str, int]]]:
    """Each job's runs as its log lists them at the end, (group folder, run folder, steps), less
    those of earlier jobs: a machine kept for several jobs lists the earlier runs too."""
    seen, out = set(), []
    for log in logs:
        pattern = r"^\['([^']+)', '([^']+)'\] (\d+) \d+ \d+$"
        runs = {(g, r, int(step)) for g, r, step in re.findall(pattern, log.read_text(), re.M)}
        out.append(runs - seen)
        seen |= runs
    return out


def setting_runs(setting: str) -> tuple:
    """A setting's runs, every one on the H100: the range of their tokens/s and wall seconds."""
    folder = RESULTS / "lm-long" / setting
    sums = [json.loads(f.read_text()) for f in sorted(folder.glob("*/summary.json"))]
    assert len(sums) == int(long_setting(setting)[2])
    assert all(x["device"] == "NVIDIA H100 80GB HBM3" for x in sums)
    rate, wall = [x["tokens_per_s"] for x in sums], [x["wall_s"] for x in sums]
    return n(min(rate)), n(max(rate)), f"{min(wall):.1f}", f"{max(wall):.1f}"


def long_job_rates() -> tuple:
    """The 9-run jobs: tokens/s a run (range), the card's total (range), the 8-run jobs' totals,
    wall seconds a run (range)."""
    jobs = long_jobs()
    nine, eight = [j for j in jobs if len(j) == 9], [j for j in jobs if len(j) == 8]
    rate = [x["tokens_per_s"] for j in nine for x in j]
    card = sorted(sum(x["tokens_per_s"] for x in j) / 1e6 for j in nine)
    card8 = sorted(sum(x["tokens_per_s"] for x in j) / 1e6 for j in eight)
    wall = [x["wall_s"] for j in nine for x in j]
    return (n(min(rate)), n(max(rate)), f"{card[0]:.2f}M", f"{card[-1]:.2f}M",
            *(f"{c:.2f}M" for c in card8), f"{min(wall):.1f}", f"{max(wall):.1f}")  # fmt: skip


def share_mfu() -> tuple:
    """What 3x needs (BENCHMARKS.md): FLOPs a token of tinystories-8m at the 8,192 vocabulary
    (6 N + 12 L T d, the Method's formula), N, the steady card rates of 10 plain processes and
    of 10 under MPS with their MFU of 790 TFLOP/s, and 3x the plain rate with its MFU."""
    cfg = preset("tinystories-8m")
    L, T, d, V = cfg.n_layer, cfg.block_size, cfg.n_embd, 8192
    N = L * 12 * d * d + V * d  # the blocks' matmuls and the tied output layer
    flops = 6 * N + 12 * L * T * d
    file = RESULTS / f"benchmarks/2026-12-07-lm-share-h100-{STACKS[0]}.json"
    rows = {r["mode"]: r for r in json.loads(file.read_text())}
    plain, mps = (rows[m]["steady_tokens_per_s"] for m in ("plain", "mps"))

    def mfu(rate: float) -> str:
        return f"{100 * flops * rate / 790e12:.1f}%"

    return (f"{flops / 1e6:.1f}", f"{N / 1e6:.2f}M", n(plain), mfu(plain), n(mps), mfu(mps),
            n(3 * plain), mfu(3 * plain))  # fmt: skip


def long_last() -> tuple:
    """P(right name) at the end is one noisy evaluation: none's range at the end, then the paired
    comparisons on each run's mean over its last 5 and last 10 evaluations (value-first and
    key-smear against value: seeds above, p; value against none: Δ, p)."""
    runs = long_grid()
    key = "paper_ioi_p_io"

    def last(arm: str, base: str, k: int) -> dict:
        seeds = sorted(set(runs[arm]) & set(runs[base]))
        a, b = ([np.mean([r[key] for r in runs[x][s][-k:]]) for s in seeds] for x in (arm, base))
        return stats.paired(b, a)

    ends = [r[-1][key] for r in runs["none"].values()]
    out = [f"{min(ends):.4f}", f"{max(ends):.4f}"]
    for arm in ("value-first", "key-smear"):
        for k in (5, 10):
            p = last(arm, "value", k)
            out += [str(p["above"]), f"{p['p_exact']:.3g}"]
    for k in (5, 10):
        p = last("value", "none", k)
        out += [signed(p["mean"], 4), f"{p['p_exact']:.3g}"]
    return tuple(out)


def compile_times() -> tuple:
    """results/benchmarks/2026-12-07-compile-time-cpu.txt: mhc with, mhc without its nested
    compile region, hc (seconds), then mhc's times over hc's (without, with) and the gain."""
    text_ = (RESULTS / "benchmarks/2026-12-07-compile-time-cpu.txt").read_text()
    rows = {
        (r, g): float(t) for r, g, t in re.findall(r"\| (\w+) \| 8 \| (\w+) \| ([\d.]+) \|", text_)
    }
    on, off, hc = rows["mhc", "on"], rows["mhc", "off"], rows["hc", "none"]
    return (f"{on:.1f}", f"{off:.1f}", f"{hc:.1f}", f"{off / hc:.1f}x", f"{on / hc:.1f}x",
            f"{off / on:.1f}x")  # fmt: skip


def compile_cache(machine: str = "cpu") -> tuple:
    """results/benchmarks/2026-12-07-compile-cache-{machine}.txt: each row's cells as
    BENCHMARKS.md shows them, then the first row's cold time over its time from the cache."""
    text_ = (RESULTS / f"benchmarks/2026-12-07-compile-cache-{machine}.txt").read_text()
    rows = re.findall(r"\| (mhc|hc) \| 8 \| \w+ \| ([\d.]+) \| ([\d.]+) \| (\d+) \|", text_)
    cold, warm = (float(rows[0][i]) for i in (1, 2))
    return (*(c for r in rows for c in r), f"{cold / warm:.1f}x")


RESIDUAL_JOBS = ("", "-job2")  # the tinystories-8m cost logs before hc's fix, oldest first


@cache
def residual_costs(job: str = "", model: str = "tinystories-8m") -> tuple[str, ...]:
    """results/benchmarks/2026-12-07-residuals-h100-{model}{job}.txt as BENCHMARKS.md's
    table rows: each residual's tokens/s, ms/step, time over none's, peak GB, and the parameters
    it adds, counted from the model (vocabulary 8,192)."""
    file = RESULTS / f"benchmarks/2026-12-07-residuals-h100-{model}{job}.txt"
    rows = re.findall(
        rf"^{re.escape(model)} +(\S+) \(fused\) +compile\+cudagraphs +([\d,]+) +([\d.]+) +"
        r"[\d.]+ +[\d.]+% +([\d.]+) +([\d.]+)$",
        file.read_text(),
        re.M,
    )
    count = {}
    for name, *_ in rows:
        stream, residual = parse_arm(name)
        with torch.device("meta"):
            model_ = GPT(preset(model, stream=stream, residual=residual, vocab_size=8192))
        count[name] = sum(p.numel() for p in model_.parameters())
    base = rows[0][2]
    assert rows[0][0] == "none" and rows[0][4] == "1.000"
    out = []
    for name, rate, ms, peak, ratio in rows:
        assert math.isclose(float(ms) / float(base), float(ratio), rel_tol=2e-3)  # 2 ms roundings
        added = count[name] - count["none"]
        total = f" ({n(count[name])} in all)" if name == "none" else ""
        out.append(f"| {name} | {rate} | {ms} | {ratio} | {peak} | {n(added)}{total} |")
    return tuple(out)


def residual_ratios(job: str = "", model: str = "tinystories-8m") -> dict[str, str]:
    """Each residual's step time over none's in one cost log (none: its first row)."""
    rows = reversed(residual_costs(job, model))
    return {r.split(" | ")[0][2:]: r.split(" | ")[3] for r in rows}


RESIDUALS_8M = ("value", "denseformer", "hc", "dhc", "mhc", "attnres", "attnres-b2", "mudd",
                "muddvr")  # fmt: skip


def residual_third() -> tuple:
    """The third job's spreads (last none over first, each block), and hc's ratio in the second,
    third and first jobs, then dhc's in the third (hc now below it)."""
    spreads = (
        pct(float(residual_costs(*job)[-1].split(" | ")[3]) - 1)
        for job in (("-job3",), ("", "modern-8m"))
    )
    third = residual_ratios("-job3")
    assert float(third["hc"]) < float(third["dhc"])  # "cheaper than dhc"
    assert float(third["hc"]) < float(residual_ratios()["hc"])  # "below the first job's"
    return (*spreads, residual_ratios("-job2")["hc"], third["hc"], residual_ratios()["hc"],
            third["dhc"])  # fmt: skip


def residual_blocks() -> tuple:
    """The largest difference between the blocks of a method's time against its block's none
    (the larger over the smaller), which method that is and both ratios, how far that method's
    ratio moved between the second and third tinystories-8m jobs, the largest difference of the
    rest; then that method's peak memory in each block (the others' within 0.1 GB)."""
    a, b = residual_ratios("-job3"), residual_ratios("", "modern-8m")
    diff = {k: max(float(a[k]), float(b[k])) / min(float(a[k]), float(b[k])) - 1
            for k in RESIDUALS_8M[:-1]}  # fmt: skip
    top = max(diff, key=diff.get)
    assert top == "dhc"  # the text names it
    moved = float(residual_ratios("-job2")[top]) / float(a[top]) - 1
    assert moved > 0 and diff[top] > moved  # dhc ran cheaper in the third job
    peaks = [
        {r.split(" | ")[0][2:]: r.split(" | ")[4] for r in residual_costs(*job)}
        for job in (("-job3",), ("", "modern-8m"))
    ]
    others = [k for k in RESIDUALS_8M[:-1] if k != top]
    assert all(abs(float(peaks[0][k]) - float(peaks[1][k])) <= 0.1 for k in others)
    return (pct(diff.pop(top)), a[top], b[top], pct(moved), pct(max(diff.values())),
            peaks[0][top], peaks[1][top])  # fmt: skip


def residual_headline() -> tuple:
    """hc's, mhc's and attnres's step time over none's (one decimal), and the whole percent
    below which every residual's added parameters stay."""
    cells = {r.split(" | ")[0][2:]: r.split(" | ") for r in residual_costs()}
    total = int(cells["none"][5].split("(")[1].split()[0].replace(",", ""))
    most = max(int(c[5].split()[0].replace(",", "")) for c in cells.values())
    return (*(f"{float(cells[k][3]):.1f}" for k in ("hc", "mhc", "attnres")),
            str(math.ceil(100 * most / total)))  # fmt: skip


# -- results/lm-residuals: the residual methods on Experiment 2 ---------------------------------
RESID = "results/lm-residuals/README.md"
RESID_ARMS = ("denseformer", "hc", "dhc", "mhc", "attnres", "attnres-b2", "mudd", "muddvr")


def seed_ranges(arm: str, seeds: list[int]) -> str:
    """'hc s0-s2' for three or more consecutive seeds, else 'hc s0, s1'."""
    if len(seeds) >= 3 and seeds == list(range(seeds[0], seeds[-1] + 1)):
        return f"{arm} s{seeds[0]}-s{seeds[-1]}"
    return f"{arm} " + ", ".join(f"s{s}" for s in seeds)


def residual_progress() -> tuple:
    """The tinystories-8m runs finished (summary at the last step) and those still to run, of
    5 seeds an arm, each list in the order of the arms."""
    folder, steps = ROOT / "results/lm-residuals/tinystories-8m", 6554
    done = {a: [s for s in range(5) if (f := folder / f"{a}-s{s}" / "summary.json").exists()
                and json.loads(f.read_text())["step"] == steps] for a in RESID_ARMS}  # fmt: skip
    assert {p.name for p in folder.iterdir() if p.is_dir()} == {
        f"{a}-s{s}" for a, seeds in done.items() for s in seeds}  # fmt: skip
    todo = {a: [s for s in range(5) if s not in done[a]] for a in RESID_ARMS}
    return tuple("; ".join(seed_ranges(a, v) for a, v in runs.items() if v)
                 for runs in (done, todo))  # fmt: skip


def run_rows(folder: str) -> list[dict]:
    """The metrics rows of a run under results/lm-residuals."""
    path = ROOT / "results/lm-residuals" / folder / "metrics.jsonl"
    return [json.loads(ln) for ln in path.read_text().splitlines()]


def at_50(rows: list[dict]) -> float:
    """Seconds into a run at its evaluation of step 50."""
    return next(r["elapsed_s"] for r in rows if r["step"] == 50)


def residual_stopped() -> tuple:
    """Job 1's stopped mHC runs: the first and last seconds to step 50, hc s0's (same job),
    and each mHC run's last step."""
    stopped = [run_rows(f"stopped/tinystories-8m-job-1/mhc-s{s}") for s in range(3)]
    fifty = [at_50(r) for r in stopped]
    hc = at_50(run_rows("tinystories-8m/hc-s0"))
    return (f"{min(fifty):.0f}", f"{max(fifty):.0f}", f"{hc:.0f}",
            *(f"{r[-1]['step']:,}" for r in stopped))  # fmt: skip


def compiled_once(job: int) -> str:
    """The seconds job N's log says `lm grid` took to compile its arm once, before the runs."""
    log = (ROOT / f"results/lm-residuals/tinystories-8m/job-{job}.log").read_text()
    (seconds,) = set(re.findall(r"^lm grid: compiled \S+ once in (\d+) s$", log, re.M))
    return seconds


def residual_job4() -> tuple:
    """Job 4's mHC run: its seconds to step 50 (about 5 minutes), dhc s0's, and its last step."""
    mhc = run_rows("stopped/tinystories-8m-job-4/mhc-s0")
    fifty = at_50(mhc), at_50(run_rows("tinystories-8m/dhc-s0"))
    assert 240 <= fifty[0] <= 360  # "about 5 minutes"
    assert fifty[0] > float(residual_stopped()[1]) / 2  # "most of job 1's wait"
    return f"{fifty[0]:.0f}", compiled_once(4), f"{fifty[1]:.0f}", f"{mhc[-1]['step']:,}"


def residual_job5() -> tuple:
    """Job 5's compile of its arm, from the cache job 4 left (less than job 4's)."""
    assert int(compiled_once(5)) < int(compiled_once(4))
    return (compiled_once(5),)


@dataclass(frozen=True)
class Claim:
    file: str
    fragment: str  # the text, {} where a figure stands
    values: Callable[[], tuple]

    def __str__(self) -> str:
        return f"{self.file}: {self.fragment[:60]}"


README, GRID, TOY, LM, SOAK = (
    "README.md",
    "results/icl-grid/README.md",
    "results/authors-toy/README.md",
    "results/lm-real/README.md",
    "results/soak/README.md",
)

CLAIMS = [
    # results/lm-residuals/README.md: the comparison so far
    Claim(RESID, "Finished (6,554 steps each): {}. Still to run: {}.", residual_progress),
    Claim(
        RESID,
        "reached their 50th step {} to {} s after they started (hc s0: {} s), compiling mHC's "
        "step. The grid's time limit stopped them at steps {}, {} and {};",
        residual_stopped,
    ),
    Claim(
        RESID,
        "reached its 50th step {} s after it started (dhc s0, whose step was compiled beforehand "
        "in {} s: {} s). So mHC's compile takes about 5 minutes on this machine by itself: most of "
        "job 1's wait was the compile itself, not the three compiles at once. The job's deadline "
        "stopped it at step {};",
        residual_job4,
    ),
    Claim(
        RESID, "Job 5 ran on the same machine right after and compiled dhc in {} s", residual_job5
    ),
    Claim(
        "BENCHMARKS.md",
        "| {} | {} | {} | {} | | {} | {} | {} | {} | - Given the cache, a process skips "
        "AOTAutograd and Inductor and spends only Dynamo's trace: mHC's first step took {} less.",
        compile_cache,
    ),
    Claim(
        "BENCHMARKS.md",
        "Job 5 of the residual comparison compiled dhc in {} s from the cache job 4 ({} s) had "
        "left on the same machine.",
        lambda: (compiled_once(5), compiled_once(4)),
    ),
    Claim(
        "BENCHMARKS.md",
        "hc's first step took {} s with an empty cache and {} s from the first process's ({} "
        "graphs found).",
        lambda: compile_cache("h100")[1:4],
    ),
    # BENCHMARKS.md: the residual methods' cost
    Claim(
        "BENCHMARKS.md",
        "Hyper-connections cost {}x the plain step at this size, mHC {}x and Attention Residuals "
        "{}x, while each adds under {}% of the parameters",
        lambda: residual_headline(),
    ),
    Claim(
        "BENCHMARKS.md",
        "The two `none` rows differ by {}: the job's spread. - Against the first job (another "
        "machine of the same card; each ratio to its own job's `none`): dhc {}x -> {}x, mhc {}x -> "
        "{}x, attnres {}x -> {}x: a clear gain for mHC and Attention Residuals, a small one for "
        "dhc (the two machines' `none` differ by {}, against {} within a job). **hc got slower**, "
        "{}x -> {}x",
        lambda: (
            (spread := pct(float(residual_costs("-job2")[-1].split(" | ")[3]) - 1)),
            *(r[k] for k in ("dhc", "mhc", "attnres") for r in map(residual_ratios, RESIDUAL_JOBS)),
            pct(
                float(residual_costs()[0].split(" | ")[2])
                / float(residual_costs("-job2")[0].split(" | ")[2])
                - 1
            ),
            spread,
            *(residual_ratios(job)["hc"] for job in RESIDUAL_JOBS),
        ),
    ),
    Claim(
        "BENCHMARKS.md",
        "The two `none` rows differ by {} (tinystories-8m) and {} (modern-8m): each job's spread. "
        "- **hc is fixed**: {}x -> {}x against the second job, and below the first job's {}x; it "
        "is now cheaper than dhc ({}x)",
        lambda: residual_third(),
    ),
    Claim(
        "BENCHMARKS.md",
        "between the blocks by at most {} (dhc: {}x and {}x, the larger over the smaller), "
        "within the {} by which dhc's own ratio moved between the second and third jobs on one "
        "block; the others by at most {}. So no difference between the blocks can be read from "
        "these rows. Peak memory agrees too except for dhc's ({} GB against {} GB).",
        lambda: residual_blocks(),
    ),
    Claim(
        "BENCHMARKS.md",
        "time against `none` in the same job, tinystories-8m ({} ms) / modern-8m ({} ms): value "
        "{}x / {}x, denseformer {}x / {}x, hc {}x / {}x, dhc {}x / {}x, mhc {}x / {}x, attnres {}x "
        "/ {}x, attnres-b2 {}x / {}x, mudd {}x / {}x, muddvr {}x / refused (GQA)",
        lambda: (
            residual_costs("-job3")[0].split(" | ")[2],
            residual_costs("", "modern-8m")[0].split(" | ")[2],
            *(
                r[k]
                for k in RESIDUALS_8M[:-1]
                for r in (residual_ratios("-job3"), residual_ratios("", "modern-8m"))
            ),
            residual_ratios("-job3")["muddvr"],
        ),
    ),
    Claim(
        "BENCHMARKS.md",
        "First figures for attnres-b2 ({}x), mudd ({}x) and muddvr ({}x).",
        lambda: tuple(residual_ratios("-job2")[k] for k in ("attnres-b2", "mudd", "muddvr")),
    ),
    Claim(
        "BENCHMARKS.md",
        "| H100 | {} and {} tokens/s (none, value), {} and {} s a run with {} evaluations and "
        "compiling; 40 renamed copies prepared in {} s (the second job reused them).",
        lambda: (
            *billion_speed()[1:],
            str(len(billion()["none"])),
            re.search(
                r"\[(\d+) s\] prepared",
                (RESULTS / "lm-long/pilot/billion/job-none.log").read_text(),
            ).group(1),
        ),
    ),
    # results/lm-long/pilot/README.md: the grid's thresholds and length
    Claim(
        PILOT,
        "induction score > 0.5 nats: crossed at {} to {} tokens in the four runs; - context gain "
        "> 0.3 nats: at {} to {}; - the authors' P(right name) > 0.02: at {} to {}. Every "
        "crossing comes before 50M tokens, and held-out loss is lowest at 55.7M. So the grid "
        "trains for 40 passes ({} tokens, {} steps)",
        pilot_crossings,
    ),
    # BENCHMARKS.md: the smeared-key control's toy grid (results/icl-grid/summary.json)
    Claim(
        "BENCHMARKS.md",
        "20 runs of 75,000 steps with 151 evaluations each in {} s wall, {} ms per grid step ({} "
        "s a run)",
        lambda: smeared_key()["timing"],
    ),
    Claim(
        "BENCHMARKS.md",
        "a token of tinystories-8m costs {} MFLOP (6 N + 12 L T d, N = {}; Method). The steady "
        "rate of 10 plain processes, {} tokens/s for the card, is {} MFU (of 790); under MPS {} is "
        "{}; 3x the plain rate, {} tokens/s, would be {}.",
        share_mfu,
    ),
    Claim(
        "BENCHMARKS.md",
        "({} tokens/s of wall time against {} steady for plain processes)",
        lambda: (share(*STACKS)[1], share_mfu()[2]),
    ),
    # BENCHMARKS.md: compiling mHC
    Claim(
        "BENCHMARKS.md",
        "| mhc | on (mHC's maps traced once for all 16 sublayers) | {} | | mhc | off (traced in "
        "every sublayer, as before) | {} | | hc (baseline: hyper-connections without Sinkhorn) | "
        "none | {} |",
        lambda: compile_times()[:3],
    ),
    Claim(
        "BENCHMARKS.md",
        "made its compile {} that of `hc`; with its maps a nested compile region "
        "(`torch.compiler.nested_compile_region`) it is {}, and {} faster than before",
        lambda: compile_times()[3:],
    ),
    # BENCHMARKS.md: the grid's 9-run jobs
    Claim(
        "BENCHMARKS.md",
        "9 runs at once under CUDA MPS: {} to {} tokens/s a run, {} to {} for the card (the two "
        "8-run jobs: {} and {}), {} to {} s a run",
        long_job_rates,
    ),
    # BENCHMARKS.md: 10 runs sharing one card
    Claim(
        "BENCHMARKS.md",
        "| plain (the baseline) | 10 | 10 | {} | {} | {} | 1.00 | | mps | 10 | 10 | {} | {} | {} "
        "| **{}** |",
        share,
    ),
    Claim(
        "BENCHMARKS.md",
        "| plain (the baseline) | 10 | 10 | {} | {} | {} | 1.00 | | stack (`lm grid --stack 10`) | "
        "1 | 10 | {} | {} | {} | {} | | mps | 10 | 10 | {} | {} | {} | **{}** | | stack-mps (2 "
        "stacks of 5 under MPS) | 2 | 10 | {} | {} | {} | {} |",
        lambda: (*(f := share(*STACKS))[:6], f[12], *f[6:9], f[13], *f[9:12], f[14]),
    ),
    Claim(
        "BENCHMARKS.md",
        "under MPS **{} runs per GPU-minute**; baseline 10 plain processes {}: **{}x**. Stacked "
        "(`--stack 10`, SDPA's math kernel) {} ({}x); 2 stacks of 5 under MPS {} ({}x).",
        lambda: (*(f := share(*STACKS))[8:9], f[2], f[13], f[5], f[12], f[11], f[14]),
    ),
    # README.md, results: experiment 2, long training
    Claim(README, "two seeds each, 150 passes ({} tokens) on an H100", lambda: pilot_tokens()[:1]),
    Claim(
        README,
        "in all 4 runs held-out loss is lowest at {} tokens ({} to {} nats/token) and rises to {} "
        "to {} by the end while the training loss keeps falling",
        lambda: (pilot_loss()[0], *low_high(pilot_loss()[1:5]), *low_high(pilot_loss()[5:9])),
    ),
    Claim(
        README,
        "the induction score peaks below 1 nat (at most {}) and is negative in every run from {} "
        "tokens on; templated IOI accuracy never exceeds {}",
        lambda: (*pilot_induction_short(), pilot_ioi()[0]),
    ),
    # README.md, results: the long-training grid
    Claim(
        README,
        "{} x {} seeds, names resampled, {} tokens a run on an H100, and {} x {} seeds with the "
        "original names",
        lambda: (
            long_setting()[0],
            str(long_n()),
            long_setting()[3],
            long_setting("original")[0],
            str(long_n("original")),
        ),
    ),
    Claim(
        README,
        "P(right name) after the paper's prompts ends at {} (none) and {} (value), Δ {} [{}, {}], "
        "exact p {} (the paper: ~7% -> ~41%, on the whole TinyStories corpus",
        lambda: long_final("paper_ioi_p_io", 4)[:6],
    ),
    Claim(
        README,
        "smeared key (the control) and ResFormer's value-first end above the value stream in "
        "{} and {} of 10 seeds (p {}, {}, uncorrected) but not clearly above the baseline (p {}, "
        "{})",
        lambda: (
            long_final("paper_ioi_p_io", 4, "key-smear", "value")[7],
            long_final("paper_ioi_p_io", 4, "value-first", "value")[7],
            long_final("paper_ioi_p_io", 4, "key-smear", "value")[5],
            long_final("paper_ioi_p_io", 4, "value-first", "value")[5],
            long_final("paper_ioi_p_io", 4, "key-smear")[5],
            long_final("paper_ioi_p_io", 4, "value-first")[5],
        ),
    ),
    Claim(
        README,
        "(the closest: context gain > 0.3 nats, sooner in {} of {} seeds, p {} before any "
        "correction for the {} onset comparisons; context gain at the end does not differ, p "
        "{}); value-first reaches an induction score of 0.5 nats sooner in {} of {} (p {})",
        lambda: (
            long_onsets()[8],
            str(long_n()),
            long_onsets()[11],
            str(3 * (len(LONG_ARMS) - 1)),
            long_final("context_gain", 3)[5],
            long_onsets("value-first")[2],
            str(long_n()),
            long_onsets("value-first")[5],
        ),
    ),
    Claim(
        README,
        "they are above the value stream on the repeated name too (in {} and {} of 10 seeds, p {} "
        "and {})",
        lambda: (
            (f := long_final("paper_ioi_p_s", 4, "key-smear", "value"))[7],
            (g := long_final("paper_ioi_p_s", 4, "value-first", "value"))[7],
            f[5],
            g[5],
        ),
    ),
    # results/lm-long/README.md: the grid
    Claim(
        LONG,
        "the grid ({} arms x {} seeds; original names: {} arms x {} seeds)",
        lambda: tuple(
            str(x) for g in ("resampled", "original") for x in (len(long_grid(g)), long_n(g))
        ),
    ),
    Claim(
        LONG,
        "was run for {}, seeds {} ({} runs, all finished), names resampled, 40 passes ({} tokens, "
        "{} steps each)",
        long_setting,
    ),
    Claim(
        LONG,
        "Templated IOI accuracy is at most {} at any evaluation of any run (threshold 0.6) and "
        "the best prefix-matching head at most {} of its attention (threshold 0.3). The induction "
        "score reaches at most {} nats (threshold 1): {} runs pass 1 nat at some evaluation "
        "({}), and only {} seed {} holds it at two in a row, from {} tokens; it ends at {}.",
        lambda: (*(f := long_never())[0:1], f[2], f[1], *f[3:]),
    ),
    Claim(
        LONG,
        "the paper's value stream: {} (none) against {} (value), Δ {} [{}, {}], exact p {}, value "
        "lower in {} of 10 seeds and higher in {}. A rise like the paper's is far outside the "
        "interval, though one of up to {} is not. P(repeated name) falls too: {} against {}, Δ {} "
        "[{}, {}], p {}, lower in {} of 10.",
        lambda: (
            *(f := long_final("paper_ioi_p_io", 4)),
            f[4],
            *long_final("paper_ioi_p_s", 4)[:-1],
        ),
    ),  # fmt: skip
    Claim(
        LONG,
        "the smeared key: {}, Δ {} [{}, {}], p {}, higher in {} of 10; - value-first: {}, Δ {} "
        "[{}, {}], p {}; - value-learned: {}, Δ {} [{}, {}], p {}, lower in {} of 10 and higher "
        "in {}.",
        lambda: (
            *(f := long_final("paper_ioi_p_io", 4, "key-smear"))[1:6],
            f[7],
            *long_final("paper_ioi_p_io", 4, "value-first")[1:6],
            *long_final("paper_ioi_p_io", 4, "value-learned")[1:],
        ),
    ),  # fmt: skip
    Claim(
        LONG,
        "On the mean value-learned falls between the value stream and the baseline, but differs "
        "clearly from neither: above the value stream in {} of 10 seeds, Δ {} [{}, {}], p {}.",
        lambda: (
            (f := long_final("paper_ioi_p_io", 4, "value-learned", "value"))[7],
            *f[2:6],
            *(() if f[0] < f[1] < long_final("paper_ioi_p_io", 4)[0] else ("not between",)),
        ),
    ),
    Claim(
        LONG,
        "the value stream ranks last of the {} arms on the authors' quantity",
        lambda: (
            ({5: "five"}[len(LONG_ARMS)],)
            if long_arm_means("paper_ioi_p_io", 4)[1] == "value"
            else ()
        ),
    ),
    Claim(
        LONG,
        "But both raise P(repeated name) as well (against none: {} for value-first, p {}; {} for "
        "the smeared key, p {}), and accuracy on the paper's 8 prompts is near chance in every arm "
        "(arm means {}, {}, to {}, {}).",
        lambda: (
            *long_final("paper_ioi_p_s", 4, "value-first")[2:6:3],
            *long_final("paper_ioi_p_s", 4, "key-smear")[2:6:3],
            *long_arm_means("paper_ioi_accuracy", 3),
        ),
    ),
    Claim(
        LONG,
        "none's runs end anywhere from {} to {}). Averaged over each run's last 5 evaluations, "
        "value-first is above the value stream in {} of 10 seeds (p {}), and over the last 10 in "
        "{} (p {}); the smeared key in {} (p {}) and {} (p {}); the value stream against none is "
        "{} (p {}) and {} (p {}).",
        long_last,
    ),
    Claim(
        LONG,
        "with {} arms and 3 thresholds these are {} comparisons",
        lambda: (str(len(LONG_ARMS) - 1), str(3 * (len(LONG_ARMS) - 1))),
    ),
    Claim(
        LONG,
        "a lower ICL score (Δ {} [{}, {}], p {}, lower in {} of 10) and a slightly higher best "
        "prefix-matching head ({}, p {}, higher in {} of 10, far below the 0.3 threshold)",
        lambda: (
            *long_final("icl_score", 3, "key-smear")[2:7],
            *(g := long_final("prefix_matching", 3, "key-smear"))[2:3],
            g[5],
            g[7],
        ),
    ),  # fmt: skip
    Claim(
        LONG,
        "trained for {} renamed passes over the real stories ({} tokens)",
        lambda: (
            str(
                json.loads((RESULTS / "lm-long/resampled/prep-resampled.json").read_text())[
                    "train"
                ]["copies"]
            ),
            long_setting()[3],
        ),
    ),  # fmt: skip
    Claim(
        LONG,
        "the smeared key is higher in {} of 10 seeds, Δ {} [{}, {}], p {}, and value-first in {} "
        "of 10, Δ {} [{}, {}], p {}.",
        lambda: tuple(
            x
            for arm in ("key-smear", "value-first")
            for f in [long_final("paper_ioi_p_io", 4, arm, "value")]
            for x in (f[7], *f[2:6])
        ),
    ),
    Claim(
        LONG,
        "induction score > 0.5 nats: value-first is sooner in {} of 10 seeds (p {}), {} sooner on "
        "the mean step, and sooner than the value stream in {} of 10 too; the value stream: {} "
        "sooner, {} later, {} the same (p {}); value-learned: {}, {}, {} (p {}); the smeared key: "
        "{}, {}, {} (p {}).",
        lambda: (
            long_onsets("value-first")[2],
            long_onsets("value-first")[5],
            long_onset_change("induction_score", "value-first"),
            long_onsets("value-first", "value")[2],
            *long_onsets()[2:6],
            *long_onsets("value-learned")[2:6],
            *long_onsets("key-smear")[2:6],
        ),
    ),  # fmt: skip
    Claim(
        LONG,
        "context gain > 0.3 nats: the value stream sooner in {}, later in {}, the same in {} (p "
        "{}), {} sooner on the mean step; value-first {}, {}, {} (p {}); value-learned {}, {}, {} "
        "(p {}); the smeared key {}, {}, {} (p {}).",
        lambda: (
            *long_onsets()[8:12],
            long_onset_change("context_gain", "value"),
            *long_onsets("value-first")[8:12],
            *long_onsets("value-learned")[8:12],
            *long_onsets("key-smear")[8:12],
        ),
    ),  # fmt: skip
    Claim(
        LONG,
        "P(right name) > 0.02: shown by {} of 10 none runs, {} of 10 value-learned runs and every "
        "run of the other arms; the value stream {} sooner, {} later, {} the same (p {}); "
        "value-first {}, {}, {} (p {}); value-learned {}, {}, {} (p {}); the smeared key {}, {}, "
        "{} (p {}).",
        lambda: (
            long_onsets()[12],
            long_onsets("value-learned")[13],
            *long_onsets()[14:18],
            *long_onsets("value-first")[14:18],
            *long_onsets("value-learned")[14:18],
            *long_onsets("key-smear")[14:18],
            *(
                ()
                if all(
                    long_onsets(a)[13] == str(long_n())
                    for a in ("value", "value-first", "key-smear")
                )
                else ("not every run",)
            ),
        ),
    ),  # fmt: skip
    Claim(
        LONG,
        "count none seeds {}, which never cross, as crossing at the last step: bounds. Over the "
        "other {} seeds the value stream is {} sooner on average, sooner in {} and later in {}.",
        long_censored,
    ),
    Claim(
        LONG,
        "at the last evaluation P(right name) is below 0.02 in {}, {}, {}, {} and {} runs of 10 "
        "(none, value, value-first, value-learned, smeared key), and the induction score below 0.5 "
        "nats in {}, {}, {}, {} and {}.",
        long_end_below,
    ),
    Claim(
        LONG,
        "held-out loss: {} nats/token for none; value-first {} [{}, {}], p {}, lower in {} of 10; "
        "the value stream {} [{}, {}], p {}; the smeared key {} [{}, {}], p {}, higher in {} of "
        "10; value-learned {} [{}, {}], p {}, higher in {} of 10 (Holm-adjusted p {}: the "
        "smallest, below).",
        lambda: (
            (f := long_final("val_loss", 3, "value-first"))[0],
            *f[2:7],
            *long_final("val_loss", 3)[2:6],
            *(g := long_final("val_loss", 3, "key-smear"))[2:6],
            g[7],
            *(h := long_final("val_loss", 3, "value-learned"))[2:6],
            h[7],
            long_family()[3],
        ),
    ),  # fmt: skip
    Claim(
        LONG,
        "induction score: {} for none; the value stream {}, Δ {} [{}, {}], p {}, lower in {} of "
        "10; value-first {}, Δ {} [{}, {}], p {}, and the smeared key {}, Δ {} [{}, {}], p {}; "
        "both are above the value stream in {} of 10 seeds (p {}); value-learned {}, Δ {} [{}, "
        "{}], p {}, above the value stream in {} of 10 (p {}).",
        lambda: (
            *long_final("induction_score", 3)[:7],
            *long_final("induction_score", 3, "value-first")[1:6],
            *long_final("induction_score", 3, "key-smear")[1:6],
            *long_both_above("induction_score")[2:],
            *long_final("induction_score", 3, "value-learned")[1:6],
            (f := long_final("induction_score", 3, "value-learned", "value"))[7],
            f[5],
        ),
    ),  # fmt: skip
    Claim(
        LONG,
        "accuracy from {} ({}) to {} ({}) on the arms' means, all below the exact chance of 0.5; "
        "value-first prefers the repeated name more, IO - S {} against {} nats, Δ {} [{}, {}], "
        "lower in {} of 10 seeds (p {})",
        lambda: (
            *long_arm_means("ioi_accuracy", 3),
            (f := long_final("ioi_logit_diff", 3, "value-first"))[1],
            f[0],
            *f[2:5],
            f[6],
            f[5],
        ),
    ),  # fmt: skip
    Claim(
        LONG,
        "context gain: {} (none) against {} (value), Δ {} [{}, {}], p {}.",
        lambda: long_final("context_gain", 3)[:6],
    ),
    Claim(
        LONG,
        "With {} seeds the exact sign-flip p cannot be below {}. The report adjusts the p of its "
        "{} comparisons at the end for their number (Holm, family-wise error): the smallest "
        "adjusted p is {}",
        lambda: long_family()[:4],
    ),
    Claim(
        LONG,
        "within one arm's {} measures at the end the Bonferroni level is {}",
        lambda: long_family()[4:],
    ),
    Claim(
        LONG,
        "Every run's held-out loss rises after its lowest point, reached between {} and {} tokens: "
        "by {} to {} nats/token at the end in the other arms and by {} to {} in value-first, "
        "every run of which falls lower than any other run. So the loss at the end "
        "mixes how good a model gets with how much it overfits: at their lowest points "
        "value-first is {} nats/token below none on average, at the end {}.",
        long_heldout,
    ),
    Claim(
        LONG,
        "40 renamed copies of the train split ({} tokens, the same SHA-256 in all {} jobs)",
        lambda: long_machine()[:2],
    ),
    Claim(
        LONG,
        "{} jobs, {} of {} runs (none and value, seeds 0-3, then 4-7) and {} of {} (none and value "
        "seeds 8-9 with key-smear 0-4; key-smear 5-9 with value-first 0-3; value-first 4-9 with "
        "value-learned 0-2; value-learned 3-9 with seed 0 of none and value with the original "
        "names)",
        lambda: long_machine()[1:6],
    ),
    Claim(LONG, "CUDA MPS: {} to {} tokens/s a run, {} to {} s each", lambda: long_machine()[6:]),
    Claim(
        LONG,
        "At their lowest points value-learned is {} above none on average (higher in {} of 10): "
        "much of the gap at the end is a larger rise after the minimum ({} to {}, against none's "
        "{} to {}).",
        long_lowest_learned,
    ),
    Claim(
        LONG,
        "the paper's {} prompt names are one token each in this tokenizer, as in the paper",
        lambda: paper_name_tokens()[1:],
    ),
    Claim(
        LONG,
        "the IOI names ({} names of the stories) and the ICL stories all differ",
        lambda: (str(long_grid_config("original")["ioi_names"]),),
    ),
    Claim(
        LONG,
        "prefix-matching head at most {}; P(right name) is at most {} (the paper: ~0.41).",
        lambda: tuple(
            f"{value_range(long_grid('original'), ['none', 'value'], k)[0]:.{d}f}"
            for k, d in (("prefix_matching", 3), ("paper_ioi_p_io", 4))
        ),
    ),
    Claim(
        README,
        "the renamed grid's tokenizer splits {} of the paper's {} prompt names in two); with the "
        "original names, where each of them is one token as in the paper, {} and {}, lower in {} "
        "of {} seeds, p {} ({} seeds: no exact p can be below {})",
        lambda: (
            *paper_name_tokens(),
            *(f := long_final("paper_ioi_p_io", 4, setting="original"))[:2],
            f[6],
            str(long_n("original")),
            f[5],
            str(long_n("original")),
            f"{stats.sign_flip_p(np.ones(long_n('original'))):.3g}",
        ),
    ),
    Claim(
        LONG,
        "the setting's runs: {} to {} tokens/s, {} to {} s each, and its train split has the same "
        "SHA-256 in both jobs",
        lambda: long_original()[1:],
    ),
    # results/lm-long/README.md: original names
    Claim(
        LONG,
        "none and value, seeds {} ({} runs, all finished), with the names as the stories write "
        "them: 40 passes over the one train split ({} tokens a pass; {} tokens, {} steps a run)",
        lambda: (*long_setting("original")[1:3], long_original()[0], *long_setting("original")[3:]),
    ),
    Claim(
        LONG,
        "Templated IOI accuracy is at most {} at any evaluation of any run, the induction score at "
        "most {} nats and the best prefix-matching head at most {};",
        lambda: tuple(
            f"{value_range(long_grid('original'), ['none', 'value'], k)[0]:.3f}"
            for k in ("ioi_accuracy", "induction_score", "prefix_matching")
        ),
    ),
    Claim(
        LONG,
        "{} (none) against {} (value), Δ {} [{}, {}], exact p {}, value lower in {} of 5 seeds; "
        "P(repeated name) {} against {}, p {}. With {} seeds no exact sign-flip p can be below {}.",
        lambda: (
            *long_final("paper_ioi_p_io", 4, setting="original")[:7],
            *(f := long_final("paper_ioi_p_s", 4, setting="original"))[:2],
            f[5],
            str(long_n("original")),
            f"{stats.sign_flip_p(np.ones(long_n('original'))):.3g}",
        ),
    ),
    Claim(
        LONG,
        "Held-out loss at the end: {} (none) against {} nats/token (value), Δ {} [{}, {}], p {}, "
        "higher in {} of 5.",
        lambda: (*(f := long_final("val_loss", 3, setting="original"))[:6], f[7]),
    ),
    Claim(
        LONG,
        "induction score > 0.5 nats, value sooner in {}, later in {}, the same in {} (p {}); "
        "context gain > 0.3 nats: {}, {}, {} (p {}); P(right name) > 0.02 is shown by {} of 5 none "
        "runs and {} of 5 value runs.",
        lambda: (
            *(f := long_onsets(setting="original"))[2:6],
            *f[8:12],
            *f[12:14],
        ),
    ),
    # results/lm-long/pilot/README.md
    Claim(PILOT, "were trained for 150 passes ({} tokens, {} steps) over the", pilot_tokens),
    Claim(
        PILOT,
        "Held-out loss falls to its lowest at {} tokens in all four runs, {} and {} (none, seeds "
        "0 and 1) and {} and {} (value) nats/token, and then rises for the rest of the run, to {} "
        "and {} (none) and {} and {} (value) at the end, while the training loss keeps falling "
        "({} to {} at the end)",
        pilot_loss,
    ),
    Claim(
        PILOT,
        "accuracy never exceeds {} in any run (the threshold is 0.6) and ends at {} to {}, below "
        "the exact chance of 0.5",
        lambda: pilot_ioi()[:3],
    ),
    Claim(PILOT, "right name stays below {} throughout", lambda: pilot_ioi()[3:]),
    Claim(
        PILOT,
        "the score peaks at {} and {} nats (none, at {} and {} tokens) and {} and {} (value, at {} "
        "and {}), below the 1-nat threshold, and is negative for good from {} and {} tokens "
        "(none) and {} and {} (value)",
        lambda: pilot_induction()[:12],
    ),
    Claim(PILOT, "the best reaches {} of its attention", lambda: pilot_induction()[12:]),
    Claim(
        PILOT,
        "after 15M tokens P(right name) ranges over {} (none, both seeds) and {} (value), and "
        "P(repeated name) over {} and {}. At the end P(right name) is {} and {} (none, seeds 0 "
        "and 1) and {} and {} (value), and P(repeated name) {} and {} (none) and {} and {} "
        "(value).",
        pilot_paper,
    ),
    Claim(
        PILOT,
        "seed 0, {} and {} tokens/s a run (none, value), {} s each; seed 1, {} and {} tokens/s, {} "
        "and {} s. Preparing the 150 copies took {} s and {} s",
        pilot_speed,
    ),
    Claim(
        PILOT,
        "Seed 0 of none and of value was trained from scratch for 373 passes ({} tokens, {} steps; "
        "a pass: the tokens of one copy of the train split), its windows drawn at random, with "
        "replacement, from 40 renamed copies",
        lambda: billion_run()[:2],
    ),
    Claim(
        PILOT,
        "**Held-out loss** is lowest at {} tokens, {} (none) and {} (value) nats/token, and rises "
        "for the rest of the run, to {} and {} at the end, while the training loss falls to {} "
        "and {}.",
        lambda: billion_run()[2:],
    ),
    Claim(
        PILOT,
        "accuracy never exceeds {} and ends at {} and {}. - **Induction:** the score peaks at {} "
        "(none) and {} (value) nats, below the 1-nat threshold, and ends at {} and {}; the best "
        "prefix-matching head reaches {} of its attention. - **The authors' quantity:** after 15M "
        "tokens P(right name) ranges over {} (none) and {} (value); at the end it is {} and {}. "
        "That is one pair of runs (an exact sign-flip p of 1), and the value run's P(right name) "
        "moved by {} between two consecutive evaluations, more than the {} by which",
        billion_abilities,
    ),
    Claim(
        PILOT,
        "the loss on token 200 of a held-out story rises from {} and {} nats at the held-out "
        "minimum to {} and {} at the end. Context gain (that token given its 20 preceding tokens "
        "against the whole story), {} and {} at the held-out minimum, stays below 0.3 nats in both "
        "runs from {} tokens on and ends at {} and {}",
        billion_context,
    ),
    Claim(
        PILOT,
        "each run took about {} s alone on an H100 ({} and {} tokens/s with compiling and "
        "evaluations",
        lambda: billion_speed()[:3],
    ),
    Claim(
        PILOT,
        "Seed 0 of none and of value was trained for 150 passes ({} tokens, {} steps) over the "
        "train split with its names as written",
        lambda: billion_run(original())[:2],
    ),
    Claim(
        PILOT,
        "**Held-out loss** is lowest at {} tokens, {} (none) and {} (value) nats/token, and rises "
        "at every later evaluation, to {} and {} at the end, while the training loss falls to {} "
        "and {}.",
        lambda: billion_run(original())[2:],
    ),
    Claim(
        PILOT,
        "accuracy never exceeds {} and ends at {} and {}; after 15M tokens it is below 0.5 at {} "
        "of {} evaluations in each run (the repeated name preferred). Here the prompt names "
        "occur in the training text, and the models give them far more probability: P(IO) "
        "reaches {} (none) and {} (value), where the resampled runs, whose held-out names never "
        "occur in training, stay below {}. - **Induction:** the score peaks at {} (none) and {} "
        "(value) nats, below the 1-nat threshold, and ends at {} and {}; the best "
        "prefix-matching head reaches {} of its attention.",
        lambda: original_abilities()[:13],
    ),
    Claim(
        PILOT,
        "**The authors' quantity:** after 15M tokens P(right name) ranges over {} (none) and {} "
        "(value); at the end it is {} and {}. One pair of runs (an exact sign-flip p of 1), and "
        "the none run's P(right name) moved by {} between two consecutive evaluations, more than "
        "the {} by which value's ends above it. - **Use of the story:** context gain peaks at {} "
        "(none) and {} (value) nats and ends at {} and {}.",
        lambda: original_abilities()[13:],
    ),
    Claim(
        PILOT,
        "Unlike the resampled runs (negative for good by {} tokens, ending at {} to {}), the score "
        "falls but ends positive: after its peak none's is never negative, and value's only from "
        "{} to {} tokens.",
        original_induction,
    ),
    Claim(
        PILOT,
        "The original-names runs, made after the grid, cross later: induction score > 0.5 nats at "
        "{} and {} tokens (none, value), context gain > 0.3 nats at {} and {}, and P(right name) "
        "> 0.02 at {} in none, while value never holds it twice in a row. Every crossing still "
        "comes before the grid's {} tokens.",
        original_crossings,
    ),
    Claim(
        PILOT,
        "Both runs shared one H100 under CUDA MPS, {} and {} tokens/s, {} and {} s with compiling "
        "and evaluations; preparing the one copy took {} s",
        original_speed,
    ),
    # README.md, results: experiment 2
    Claim(
        README,
        "it ends with more probability on the authors' right name than the value stream in {} of "
        "10 seeds (p {}, uncorrected) but more on the repeated name too ({} of 10, p {}), and not "
        "clearly more than the baseline on the right name (p {}).",
        lambda: (
            *(f := long_final("paper_ioi_p_io", 4, "key-smear", "value"))[7:8],
            f[5],
            *(g := long_final("paper_ioi_p_s", 4, "key-smear", "value"))[7:8],
            g[5],
            long_final("paper_ioi_p_io", 4, "key-smear")[5],
        ),
    ),
    Claim(
        README,
        "Nor does 1B tokens (one seed an arm): held-out loss is lowest at {} tokens and rises to "
        "the end, the induction score peaks at {} nats and IOI accuracy never exceeds {}.",
        lambda: (
            billion_run()[2],
            max(billion_abilities()[3:5], key=float),
            billion_abilities()[0],
        ),
    ),
    Claim(
        README,
        "Nor do the original names (one seed an arm, {} tokens): held-out loss is lowest at {} "
        "tokens and rises to the end, the induction score peaks at {} nats and IOI accuracy never "
        "exceeds {}.",
        lambda: (
            billion_run(original())[0],
            billion_run(original())[2],
            max(original_abilities()[8:10], key=float),
            original_abilities()[0],
        ),
    ),
    Claim(
        README,
        "value-learned x 10 seeds, with original names and with every listed name "
        "resampled each epoch (IOI on held-out names), {} runs, all finished",
        lambda: (finished(),),
    ),
    Claim(
        README,
        "no run reaches IOI accuracy 0.6 (arm means end at {}-{} against an exact "
        "chance of 0.5; single runs at {}-{}, {} of {} at or above 0.5)",
        lm_ranges,
    ),
    Claim(
        README,
        "The value stream lowers held-out loss slightly ({} nats/token [{}, {}] "
        "original, lower in {} of 10 seeds; {} [{}, {}] resampled, {} of 10; learned mixing {} "
        "and {})",
        lambda: (
            *delta("original", "val_loss", "value"),
            lower("original", "value"),
            *delta("resampled", "val_loss", "value"),
            lower("resampled", "value"),
            delta("original", "val_loss", "value-learned")[0],
            delta("resampled", "val_loss", "value-learned")[0],
        ),
    ),
    Claim(
        README,
        "ResFormer's value-first lowers it much more ({} [{}, {}] original, {} [{}, {}] resampled)",
        lambda: (
            *delta("original", "val_loss", "value-first"),
            *delta("resampled", "val_loss", "value-first"),
        ),
    ),
    # README.md, results: experiment 1
    Claim(
        README,
        "{} variants x {} seeds x {} steps on an H200 (the smeared-key control on an H100)",
        lambda: (str(len(grid()[2])), str(len(grid()[3])), n(censor())),
    ),
    Claim(
        README,
        "**The smeared key, the control (the known architectural shortcut to induction heads), "
        "helps more than the value stream**: to 95% ICL accuracy `key-smear` is {} sooner than "
        "the baseline and {} sooner than the value stream [{}, {}], `key-smear-sum` {} and {} "
        "[{}, {}], {} of 10 seeds (exact p = {}): the value stream's speed-up is real but "
        "smaller than this known shortcut's (the smeared-key runs ran on an H100 and are paired by "
        "seed with the H200 runs; they start identically, but no H100 baseline measures a card "
        "effect). Smeared keys also speed in-weights learning; only "
        "{} of 10 `key-smear` runs reach 95% IWL accuracy (all {} of `key-smear-sum`, {} of any "
        "other variant).",
        lambda: (
            (
                sooner("key-smear")[0],
                *sooner("key-smear", base="value"),
                sooner("key-smear-sum")[0],
                *sooner("key-smear-sum", base="value"),
                str(min(vs(v, base="value")["c"]["sooner"] for v in SMEARS)),
                f"{max(vs(v, base='value')['p_exact'] for v in SMEARS):.3f}",
                *smeared_key()["iwl 95% reached"],
                "none" if smeared_key()["iwl 95% others"] == "No" else "some",
            )
            if all(vs(v, "iwl", 0.5)["c"]["sooner"] == 10 for v in SMEARS)  # "speed IWL"
            else ()
        ),
    ),
    Claim(
        README,
        "In Experiment 1 it helps more: both smeared keys reach 95% in-context accuracy sooner "
        "than the value stream in {} of 10 seeds (results/icl-grid)",
        lambda: (str(min(vs(v, base="value")["c"]["sooner"] for v in SMEARS)),),
    ),
    Claim(
        README,
        "**The value stream reaches 95% in-context accuracy {} sooner** than the "
        "baseline (95% CI {} to {}, {} of 10 seeds, exact p = {}):",
        lambda: (
            *sooner("value"),
            str(vs("value")["c"]["sooner"]),
            f"{vs('value')['p_exact']:.3f}",
        ),
    ),
    Claim(
        README,
        "To 50% it is {} sooner. On the mixed test set, drawn as training is, it "
        "reaches 95% *later*: {} [{}, {}], {} of 10 seeds.",
        lambda: (
            sooner("value", thr=0.5)[0],
            *sooner("value", "mixed"),
            str(vs("value", "mixed")["c"]["later"]),
        ),
    ),
    Claim(
        README,
        "Value > query ({}) >> key ({}, no clear effect), as the paper says; learned "
        "mixing is faster still ({}); ResFormer's fixed 0.5/0.5 mix is {} *slower* in this "
        "two-layer model; x-transformers' gated mix and SVFormer's shared values are sooner to "
        "50% ({}, {}) but not to 95% (gated {} later)",
        lambda: (
            sooner("query")[0],
            ends("key")[0],
            sooner("value-learned")[0],
            sooner("value-first")[0],
            sooner("value-gated", thr=0.5)[0],
            sooner("value-shared", thr=0.5)[0],
            sooner("value-gated")[0],
        ),
    ),
    # README.md, results: the authors' code
    Claim(
        README,
        "{} of their {} baseline seeds stay at chance until steps {} and {}. Ours can "
        "sit at chance early too ({} of {} seeds at step 10,000; {} of the 10 grid seeds)",
        lambda: (
            str(len(plateau_seeds())),
            str(len(authors()["none"])),
            *[n(theirs("none", 0.1)[s]) for s in plateau_seeds()],
            str(escape()["ours"]),
            str(escape()["n_ours"]),
            grid_stuck()[0],
        ),
    ),
    Claim(
        README,
        "Their value stream is sooner to 95% in {} of {} seeds (sign test p = {}): {}, "
        "{}, {} and {}, the last on a seed whose baseline sat at chance until step {}; on the two "
        "seeds that leave chance early, {} and {}, at the low end of ours ({} to {} per seed)",
        authors_toy_value,
    ),
    # results/icl-grid/README.md
    Claim(
        GRID,
        "**{} sooner** than the baseline: {} against {} steps on average, 95% CI of the "
        "change {} to {} sooner (Fieller), mean paired difference {} steps [{}, {}], {} of 10 "
        "seeds sooner (exact p = {})",
        lambda: (
            sooner("value")[0],
            n(np.mean(per("icl", 0.95)["value"])),
            n(np.mean(per("icl", 0.95)["none"])),
            *sooner("value")[1:],
            f"{vs('value')['mean']:+,.0f}",
            f"{vs('value')['ci_low']:+,.0f}",
            f"{vs('value')['ci_high']:+,.0f}",
            str(vs("value")["c"]["sooner"]),
            f"{vs('value')['p_exact']:.3f}",
        ),
    ),
    Claim(
        GRID, "To 50% the effect is larger: {} sooner [{}, {}].", lambda: sooner("value", thr=0.5)
    ),
    Claim(
        GRID,
        "it reaches 95% accuracy {} *later* [{}, {} later] ({} against {} steps), {} of 10 "
        "seeds later (sign test p = {}), though {} sooner to 50%. Every value stream is later "
        "there (value-learned {}, value-first {}, value-first-learned {}); only {} of 10 gated "
        "and {} of 10 shared runs reach 95% on it within {} steps (at least {} and {} later, "
        "counting the others at {}; {} of 10 seeds later in both)",
        lambda: (
            *sooner("value", "mixed"),
            n(np.mean(per("mixed", 0.95)["value"])),
            n(np.mean(per("mixed", 0.95)["none"])),
            str(vs("value", "mixed")["c"]["later"]),
            f"{vs('value', 'mixed')['c']['p_sign']:.2f}",
            sooner("value", "mixed", 0.5)[0],
            *[
                sooner(v, "mixed")[0]
                for v in ("value-learned", "value-first", "value-first-learned")
            ],
            *[
                str(sum(x is not None for x in per("mixed", 0.95)[v]))
                for v in ("value-gated", "value-shared")
            ],
            n(censor()),
            *[pct(vs(v, "mixed")["c"]["bound"]) for v in ("value-gated", "value-shared")],
            n(censor()),
            str(min(vs(v, "mixed")["c"]["later"] for v in ("value-gated", "value-shared"))),
        ),
    ),
    Claim(
        GRID,
        "Every run of every variant reaches 95% ICL accuracy within {} steps; the baseline "
        "needs {} steps",
        lambda: (
            n(censor()) if all(None not in x for x in per("icl", 0.95).values()) else "?",
            span(per("icl", 0.95)["none"]),
        ),
    ),
    Claim(
        GRID,
        "the query stream is {} sooner to 95% [{}, {}], the key stream {} (interval {} "
        "later to {} sooner: no clear effect)",
        lambda: (*sooner("query"), ends("key")[0], ends("key")[2], ends("key")[1]),
    ),
    Claim(
        GRID,
        "`value-learned` {} sooner [{}, {}], `value-first-learned` {} [{}, {}]",
        lambda: (*sooner("value-learned"), *sooner("value-first-learned")),
    ),
    Claim(
        GRID,
        "`value-first` reaches 95% {} *later* [{}, {} later], {} of 10 seeds later",
        lambda: (*sooner("value-first"), str(vs("value-first")["c"]["later"])),
    ),
    Claim(
        GRID,
        "`value-gated` reaches 50% ICL accuracy {} sooner [{}, {}] and 95% {} *later* "
        "[{}, {} later], {} of 10 seeds later",
        lambda: (
            *sooner("value-gated", thr=0.5),
            *sooner("value-gated"),
            str(vs("value-gated")["c"]["later"]),
        ),
    ),
    Claim(
        GRID,
        "**SVFormer's shared values** reach 50% {} sooner [{}, {}]; to 95% there is no "
        "clear effect ({} later, interval {} later to {} sooner; {} of 10 seeds sooner, exact "
        "p = {})",
        lambda: (
            *sooner("value-shared", thr=0.5),
            ends("value-shared")[0],
            ends("value-shared")[2],
            ends("value-shared")[1],
            str(vs("value-shared")["c"]["sooner"]),
            f"{vs('value-shared')['p_exact']:.2f}",
        ),
    ),
    Claim(
        GRID,
        "(IWL accuracy after {} steps {} baseline, {} value, {} value-learned, {} "
        "value-first-learned; the gated and shared variants cost most: {} and {}, and 50% IWL {} "
        "and {} later); steps to 50% IWL: value {} sooner (CI {} sooner to {} later), query {} "
        "sooner, value-first {} later. {} run of the first nine variants reaches 95% IWL accuracy.",
        lambda: (
            n(censor()),
            *[
                final_acc(v, "iwl")
                for v in (
                    "none",
                    "value",
                    "value-learned",
                    "value-first-learned",
                    "value-gated",
                    "value-shared",
                )
            ],
            sooner("value-gated", "iwl", 0.5)[0],
            sooner("value-shared", "iwl", 0.5)[0],
            *ends("value", "iwl", 0.5),
            sooner("query", "iwl", 0.5)[0],
            sooner("value-first", "iwl", 0.5)[0],
            smeared_key()["iwl 95% others"] if smeared_key()["others"] == 9 else "?",
        ),
    ),
    Claim(
        GRID,
        "at step 0, where `key-smear`'s a = 0 makes it the baseline exactly, its accuracies equal "
        "those of the H200's `none` to the last digit on all four test sets in {} of 10 seeds",
        lambda: (smeared_key()["same start"],),
    ),
    Claim(
        GRID,
        "To 95% ICL accuracy `key-smear` is {} sooner than the baseline [{}, {}] ({} against {} "
        "steps on average) and `key-smear-sum` {} sooner [{}, {}] ({} steps).",
        lambda: (
            *sooner("key-smear"),
            n(np.mean(per("icl", 0.95)["key-smear"])),
            n(np.mean(per("icl", 0.95)["none"])),
            *sooner("key-smear-sum"),
            n(np.mean(per("icl", 0.95)["key-smear-sum"])),
        ),
    ),
    Claim(
        GRID,
        "Against the value stream, paired by seed: `key-smear` {} sooner [{}, {}], mean paired "
        "difference {} steps [{}, {}]; `key-smear-sum` {} sooner [{}, {}], {} steps [{}, {}]; {} "
        "of 10 seeds sooner in both (exact p = {}).",
        lambda: (
            *[
                x
                for v in SMEARS
                for x in (
                    *sooner(v, base="value"),
                    *[f"{vs(v, base='value')[k]:+,.0f}" for k in ("mean", "ci_low", "ci_high")],
                )
            ],
            str(min(vs(v, base="value")["c"]["sooner"] for v in SMEARS)),
            f"{max(vs(v, base='value')['p_exact'] for v in SMEARS):.3f}",
        ),
    ),
    Claim(
        GRID,
        "To 50% they are {} [{}, {}] and {} [{}, {}] sooner than the value stream ({} and {} "
        "sooner than the baseline): the fixed a = 1 is the sooner of the two to 50% (in {} of 10 "
        "seeds, {} ties), the learned a to 95% (in {} of 10).",
        lambda: (
            *sooner("key-smear", thr=0.5, base="value"),
            *sooner("key-smear-sum", thr=0.5, base="value"),
            sooner("key-smear", thr=0.5)[0],
            sooner("key-smear-sum", thr=0.5)[0],
            *smeared_key()["sum first to 50%"],
            smeared_key()["learned first to 95%"],
        ),
    ),
    Claim(
        GRID,
        "where the value stream is later than the baseline to 95%, both are sooner: `key-smear` {} "
        "sooner than the baseline, {} sooner than the value stream [{}, {}]; `key-smear-sum` {} "
        "and {} [{}, {}].",
        lambda: (
            (
                sooner("key-smear", "mixed")[0],
                *sooner("key-smear", "mixed", base="value"),
                sooner("key-smear-sum", "mixed")[0],
                *sooner("key-smear-sum", "mixed", base="value"),
            )
            if vs("value", "mixed")["relative"] > 0  # the value stream later there
            and all(vs(v, "mixed")["relative"] < 0 for v in SMEARS)  # both sooner
            else ()
        ),
    ),
    Claim(
        GRID,
        "each smeared key is sooner than both the baseline and the value stream in {} of 10 seeds "
        "(exact p = {}). So the value stream's speed-up is real ({} to 95%)",
        lambda: (smeared_key()["sooner"], smeared_key()["p"], sooner("value")[0]),
    ),
    Claim(
        GRID,
        "50% IWL {} (`key-smear`) and {} (`key-smear-sum`) sooner than the baseline, IWL accuracy "
        "after {} steps {} and {} (baseline {}). They are the only runs that reach 95% IWL "
        "accuracy: all {} `key-smear-sum` seeds ({} steps on average) but **only {} of 10 "
        "`key-smear` seeds** ({} on average, near the end of the run). For `key-smear` that "
        "threshold has no mean or interval: {} seeds sooner than the baseline, {} where neither "
        "got there (sign test p = {}, no clear effect); for `key-smear-sum` {} of 10 seeds sooner "
        "(at least {} sooner, counting the baseline's runs at {})",
        lambda: (
            (
                sooner("key-smear", "iwl", 0.5)[0],
                sooner("key-smear-sum", "iwl", 0.5)[0],
                n(censor()),
                final_acc("key-smear", "iwl"),
                final_acc("key-smear-sum", "iwl"),
                final_acc("none", "iwl"),
                smeared_key()["iwl 95% reached"][1],
                smeared_key()["iwl 95% mean"][1],
                smeared_key()["iwl 95% reached"][0],
                smeared_key()["iwl 95% mean"][0],
                *smeared_key()["iwl 95% key-smear"],
                str(vs("key-smear-sum", "iwl", 0.95)["c"]["sooner"]),
                smeared_key()["iwl 95% sum bound"],
                n(censor()),
            )
            if smeared_key()["iwl 95% others"] == "No"  # "the only runs"
            and vs("key-smear", "iwl", 0.95)["n"] == 0  # "no mean or interval"
            and vs("key-smear-sum", "iwl", 0.95)["c"]["bound_kind"] == "upper"  # "at least"
            else ()
        ),
    ),
    Claim(
        GRID,
        "{} of their {} baseline seeds stay at chance (below 10% ICL accuracy) until steps "
        "{} and {}. Ours can sit at chance early too: {} of {} seeds at step 10,000",
        lambda: (
            str(len(plateau_seeds())),
            str(len(authors()["none"])),
            *[n(theirs("none", 0.1)[s]) for s in plateau_seeds()],
            str(escape()["ours"]),
            str(escape()["n_ours"]),
        ),
    ),
    Claim(GRID, "and {} of these 10 (seed {} of `none`: {} at step 10,000, 10% at {})", grid_stuck),
    Claim(
        GRID,
        "Their value stream is sooner to 95% in {} of {} seeds (sign test p = {}), by {}, "
        "{}, {} and {}; the {} is a seed whose baseline sat at chance until step {}. On their "
        "two seeds that leave chance early it is {} and {} sooner, at the low end of ours seed by "
        "seed ({} to {})",
        lambda: (
            authors_toy_value()[:7]
            + (their_changes()[longest_plateau()],)
            + authors_toy_value()[7:]
        ),
    ),
    Claim(GRID, "against our {} [{}, {}] with the default", lambda: sooner("value")),
    Claim(
        GRID,
        "Grid of 40 runs (none, value, key, query): {} s wall with {} evaluations of 4 x {} "
        "sequences per run ({} s a run)",
        first_grid,
    ),
    Claim(
        GRID,
        "grid of 30 runs (learned and first variants): {} s; grid of 20 runs (gated and "
        "shared, alone on the GPU): {} s",
        lambda: (wall(1), wall(2)),
    ),
    Claim(
        GRID,
        "The smeared-key grid, 20 runs (key-smear, key-smear-sum) in a job of its own on an H100, "
        "2026-12-07: {} s ({} ms per grid step).",
        lambda: (wall(3), smeared_key()["timing"][1]),
    ),
    # results/authors-toy/README.md
    Claim(
        TOY,
        "Seeds 0 and 2 of their code reach 95% ICL accuracy at {} and {} steps (none) and "
        "{} and {} (value); our 10 seeds take {} (none) and {} (value)",
        lambda: (
            n(theirs("none", 0.95)[0]),
            n(theirs("none", 0.95)[2]),
            n(theirs("value", 0.95)[0]),
            n(theirs("value", 0.95)[2]),
            span(ours("none", 0.95)),
            span(ours("value", 0.95)),
        ),
    ),
    Claim(
        TOY,
        "Seeds {} and {} of their baseline stay below 10% ICL accuracy (chance is 1/32) "
        "until steps {} and {} and reach 95% at {} and {}; no baseline run of our grid needs "
        "more than {} steps to 95%. Our runs can sit at chance early too: {} of {} seeds are "
        "still below 10% ICL accuracy at step 10,000 (theirs {} of {}: Fisher's exact p = {}), "
        "and so is {} of our 10 grid seeds (seed {} of `none`: {} at step 10,000, out of chance "
        "at {}, 95% at {})",
        lambda: (
            *map(str, plateau_seeds()),
            *[n(theirs("none", 0.1)[s]) for s in plateau_seeds()],
            *[n(theirs("none", 0.95)[s]) for s in plateau_seeds()],
            n(max(ours("none", 0.95))),
            str(escape()["ours"]),
            str(escape()["n_ours"]),
            str(escape()["theirs"]),
            str(escape()["n_theirs"]),
            f"{escape()['p']:.3f}",
            *grid_stuck(),
            n(ours("none", 0.95)[int(grid_stuck()[1])]),
        ),
    ),
    Claim(
        TOY,
        "seeds): none p = {} (50%) and {} (95%); value p = {} (50%) and {} (95%).",
        lambda: (mw("none", 0.5), mw("none", 0.95), mw("value", 0.5), mw("value", 0.95)),
    ),
    Claim(
        TOY,
        "In their code the value stream reaches 95% sooner in {} of {} seeds (sign test p "
        "= {}): {}, {}, {} and {} sooner, seed by seed. The {} is seed {}, whose baseline sat "
        "at chance until step {} while its value run left chance at {}; the change of the four "
        "seeds' mean steps ({} sooner) is mostly that one seed",
        lambda: (
            *authors_toy_value()[:7],
            their_changes()[longest_plateau()],
            str(longest_plateau()),
            n(theirs("none", 0.1)[longest_plateau()]),
            n(theirs("value", 0.1)[longest_plateau()]),
            pct(their_value()["censored"]["bound"]),
        ),
    ),
    Claim(
        TOY,
        "On the two seeds that leave chance before step 10,000 in both arms ({} and {}) "
        "their value stream is {} and {} sooner, at the low end of ours seed by seed ({} to {} "
        "sooner; {} [{}, {}] over our 10 seeds, {} of 10 sooner)",
        lambda: (
            *map(str, early_seeds()),
            *authors_toy_value()[8:],
            *sooner("value"),
            str(vs("value")["c"]["sooner"]),
        ),
    ),
    Claim(
        TOY,
        "our step stays at chance about as long as their run does (10% ICL accuracy at {} steps "
        "against their {})",
        lambda: same_data(0.1),
    ),
    Claim(
        TOY,
        "for seed 1 (value later; {} -> {} here)",
        lambda: (n(theirs("none", 0.95)[1]), n(theirs("value", 0.95)[1])),
    ),
    Claim(
        TOY,
        "leaves it at almost the same point (10% ICL accuracy at {} steps against their "
        "{}), plateaus again near 0.2 and reaches 50% and 95% ICL accuracy at {} and {} steps "
        "against their {} and {}",
        lambda: (
            *same_data(0.1),
            same_data(0.5)[0],
            same_data(0.95)[0],
            same_data(0.5)[1],
            same_data(0.95)[1],
        ),
    ),
    # results/lm-real/README.md
    Claim(
        LM,
        "none of the {} runs, all finished; the arm means end at {}-{}, below the exact "
        "chance of 0.5: the models prefer the repeated name; single runs end at {}-{}, {} of the "
        "80 at or above 0.5), no run has a prefix-matching head (the best head ends at {}-{} of "
        "its attention, about uniform) and no run's induction score passes 1 nat (the highest "
        "at any evaluation of any run is {}; the arm means end at {}-{})",
        lm_opening,
    ),
    Claim(
        LM,
        "{} nats/token [{}, {}] with original names (lower in {} of 10 seeds; seeds {} and "
        "{} are {} and {}; exact p = {}) and {} [{}, {}] with names resampled (lower in {} of 10 "
        "seeds, p = {}); with resampled names it also raises the context gain by {} nats [{}, {}]",
        lambda: (
            *delta("original", "val_loss", "value"),
            lower("original", "value"),
            *loss_above_seeds(),
            p3("original", "val_loss", "value"),
            *delta("resampled", "val_loss", "value"),
            lower("resampled", "value"),
            p3("resampled", "val_loss", "value"),
            *delta("resampled", "context_gain", "value"),
        ),
    ),
    Claim(
        LM,
        "{} nats/token [{}, {}] ({} bits per byte) with resampled names, {} [{}, {}] ({} "
        "bits per byte) with original names; it raises the context gain and the induction score "
        "a little ({} and {} nats, resampled), and makes the IOI bias toward the repeated name "
        "*stronger* (IO - S {} against {})",
        lambda: (
            *delta("resampled", "val_loss", "value-first"),
            delta("resampled", "val_bpb", "value-first")[0],
            *delta("original", "val_loss", "value-first"),
            delta("original", "val_bpb", "value-first")[0],
            delta("resampled", "context_gain", "value-first")[0],
            delta("resampled", "induction_score", "value-first")[0],
            mean2("resampled", "ioi_logit_diff", "value-first", "values"),
            mean2("resampled", "ioi_logit_diff", "value-first", "base"),
        ),
    ),
    Claim(
        LM,
        "behaves like the value stream: {} nats/token [{}, {}] with original names, {} [{}, "
        "{}] with names resampled",
        lambda: (
            *delta("original", "val_loss", "value-learned"),
            *delta("resampled", "val_loss", "value-learned"),
        ),
    ),
    Claim(LM, "IOI names: the {} list names", original_names),
    Claim(LM, "After 8 epochs (~{}M tokens)", lambda: (trained_tokens(),)),
    Claim(
        LM,
        "Ten runs beside each other took {}-{} s each ({}-{} tokens/s a run; the resampled "
        "value-first runs were resumed, so their summaries time only the last part); twenty took "
        "{}-{} s each ({}-{} tokens/s a run); ~{}-{}M tokens/s for the GPU",
        lm_speed,
    ),
    Claim(
        LM,
        "{} names (a fixed fifth of the list, by hash) are never used as replacements, and "
        "the IOI set uses those",
        lambda: heldout_names()[:1],
    ),
    Claim(LM, "so all but {} are {}-{} tokens", lambda: heldout_names()[1:]),
    Claim(LM, "({} tokens; {} renamed)", lambda: split_tokens()[:2]),
    Claim(
        LM, "of the {} validation stories long enough ({} once renamed)", lambda: split_tokens()[2:]
    ),
    Claim(LM, "{} steps (original) / {} (resampled) = 8 epochs", steps_lm),
    Claim(LM, "| 2,048 | {} | {} ({}) | {} ({}) | {} ({}) |", lambda: sweep_row(2048)),
    Claim(LM, "| 4,096 | {} | {} ({}) | {} ({}) | {} ({}) |", lambda: sweep_row(4096)),
    Claim(
        LM, "| **8,192** | {} | **{}** ({}) | **{}** ({}) | **{}** ({}) |", lambda: sweep_row(8192)
    ),
    # results/soak/README.md
    Claim(
        SOAK,
        "## Soak: {} SIGKILL / resume cycles, {} failures",
        lambda: soak_both()[:1] + soak_both()[3:],
    ),
    Claim(
        SOAK,
        "(none,value x 1 seed, 1,200 steps, a checkpoint every 50) | {} | {} | {} | {} | {} s |",
        lambda: soak_row("icl"),
    ),
    Claim(
        SOAK,
        "dropout 0.1, 800 steps, a checkpoint every 50) | {} | {} | {} | {} | {} s |",
        lambda: soak_row("lm"),
    ),
    Claim(SOAK, "| both, side by side | {} | {} | {} | {} |", soak_both),
    Claim(
        SOAK,
        "Each workload first ran once uninterrupted ({} s and {} s)",
        lambda: (str(soak("icl")["reference_s"]), str(soak("lm")["reference_s"])),
    ),
    Claim(
        SOAK,
        "{} at a random 0.5-6 s after the process started, {} at 5-75% of the way through "
        "a checkpoint window (training steps), {} at the last 20% of a window",
        lambda: tuple(str(soak("icl")["by_mode"][k]) for k in ("random", "step", "eval")),
    ),
    Claim(
        SOAK,
        "{} at the moment a checkpoint write started",
        lambda: (str(soak("icl")["by_mode"]["write"]),),
    ),
    Claim(
        SOAK,
        "| start-up: the process had written nothing yet | {} | {} |",
        lambda: landed("nothing-written"),
    ),
    Claim(
        SOAK,
        "| mid checkpoint write (its temporary folder still there) | {} | {} |",
        lambda: landed("mid-write"),
    ),
    Claim(
        SOAK,
        "| after an evaluation's rows, before its checkpoint was in place | {} | {} |",
        lambda: landed("rows-before-checkpoint"),
    ),
    Claim(
        SOAK,
        "| between checkpoints (training steps or an evaluation) | {} | {} |",
        lambda: landed("between-checkpoints"),
    ),
    Claim(SOAK, "## Deep fuzzing: {} inputs, {} failures, {} s", fuzz),
    # README.md, what happens when things go wrong: the soak and fuzz results
    Claim(README, "and {} in the deep profile", lambda: fuzz()[:1]),
    Claim(
        README,
        "`benchmarks/soak.py` ran {} SIGKILL/resume cycles ({} of `icl grid`, {} of `lm train`; "
        "kills at start-up, mid-step, at the end of a checkpoint window and as a checkpoint write "
        "starts, {} of them inside the write)",
        lambda: (
            soak_both()[0],
            str(soak("icl")["cycles"]),
            str(soak("lm")["cycles"]),
            str(sum(map(int, landed("mid-write")))),
        ),
    ),
]


@pytest.mark.parametrize("claim", CLAIMS, ids=str)
def test_claim_matches_the_metrics(claim: Claim):
    """Each claim's text holds exactly the figures the metrics give."""
    values = claim.values()
    assert claim.fragment.count("{}") == len(values), "a figure without a value, or the reverse"
    want = claim.fragment.format(*values)
    assert want in text(claim.file), f"{claim.file} should say:\n  {want}"


@pytest.mark.parametrize(
    "job, model, count",
    [("", "tinystories-8m", 7), ("-job2", "tinystories-8m", 9), ("-job3", "tinystories-8m", 11),
     ("", "modern-8m", 10)],
)  # fmt: skip
def test_the_residual_cost_table_is_the_benchmark_log(job, model, count):
    """BENCHMARKS.md's residual cost rows are each log's, with the parameters the models add."""
    rows = residual_costs(job, model)
    assert len(rows) == count
    assert "\n".join(rows) in (ROOT / "BENCHMARKS.md").read_text()


def test_the_kernel_count_table_is_the_benchmark_output():
    """BENCHMARKS.md's before/after kernel counts are those of the committed output."""
    after, before = (
        re.findall(r"^\| (\w+) \| (\d+) \| (\d+) \|", part, re.M)
        for part in (RESULTS / "benchmarks/2026-12-07-kernel-count-cpu.txt")
        .read_text()
        .split("# before")
    )
    assert [r[0] for r in after] == [r[0] for r in before] and len(after) == 5
    bench = (ROOT / "BENCHMARKS.md").read_text()
    for (name, fa, ea), (_, fb, eb) in zip(after, before, strict=True):
        assert f"| {name} | {fb} / {eb} | {fa} / {ea} |" in bench
    counts = {r[0]: r[1:] for r in after}
    assert counts["hc"] == counts["plain"]
    assert int(counts["attnres"][1]) - int(dict((r[0], r[2]) for r in before)["attnres"]) == 15


def test_every_claim_has_figures_from_the_data():
    """A row without a placeholder would check nothing the data could change."""
    assert all("{}" in c.fragment for c in CLAIMS)


# -- claims in words ------------------------------------------------------------------------------
def test_value_stream_moves_no_ioi_or_induction_metric():
    """results/lm-real: "It moves no IOI or induction metric (all intervals cover 0)"."""
    assert "It moves no IOI or induction metric (all intervals cover 0)" in text(LM)
    for setting in ("original", "resampled"):
        for key in ("ioi_accuracy", "ioi_logit_diff", "paper_ioi_accuracy", "induction_score"):
            p = lmc(setting, key, "value")["paired"]
            assert p["ci_low"] <= 0 <= p["ci_high"], (setting, key)


def test_nothing_emerged_in_any_lm_run():
    """results/lm-real: no run shows IOI > 0.6, a prefix-matching head or 1 nat of induction."""
    assert "**What emerged: nothing in-context, in any arm.**" in text(LM)
    top = {
        k: max(max(r[k] for r in rs) for rs in every_run())
        for k in ("ioi_accuracy", "prefix_matching", "induction_score")
    }
    assert top["ioi_accuracy"] <= 0.6 and top["prefix_matching"] <= 0.3
    assert top["induction_score"] <= 1.0


def test_icl_score_is_positive_in_every_model():
    """results/lm-real: "token 20 is easier than token 200 in every model"."""
    assert "token 20 is easier than token 200 in every model" in text(LM)
    assert min(run_ends("icl_score")) > 0


def test_vocabulary_8192_is_best_at_every_length():
    """results/lm-real: "8,192 is best at every length"."""
    assert "8,192 is best at every length" in text(LM)
    runs = sweep()
    for epochs in (3, 6, 12):
        best = min((runs[v, epochs][-1]["val_bpb"], v) for v in (2048, 4096, 8192))
        assert best[1] == 8192


def test_shared_values_and_key_have_no_clear_effect_at_95():
    """README: SVFormer's shared values are "not" sooner to 95%; the key stream "no clear
    effect": both Fieller intervals cover 0."""
    for v in ("value-shared", "key"):
        assert vs(v)["rel_low"] <= 0 <= vs(v)["rel_high"], v


def test_paper_claim_lies_outside_our_interval():
    """README: the paper's "about 24%" lies just outside our interval."""
    assert 'its "about 24%" lies just outside our interval' in text(README)
    lo, hi = sorted((-vs("value")["rel_high"], -vs("value")["rel_low"]))
    assert hi < 0.24 < hi + 0.02


def test_the_review_figures_are_marked_as_not_ours():
    """The independent review's figures are not in the committed metrics: they must say so."""
    grid_text = text(GRID)
    assert "19.3% sooner to 95% ICL accuracy [17.2%, 21.2%] with `jax-legacy`" in grid_text
    assert "those two figures are the review's, not from the metrics committed here" in grid_text
    toy_text = text(TOY)
    assert "52,000 -> 52,500 steps for seed 1" in toy_text
    assert "reported in review and not part of the metrics committed here" in toy_text
    assert json.loads((RESULTS / "icl-grid" / "config.json").read_text())["config"]["init"] == "jax"


def test_a_changed_figure_fails():
    """The check is not vacuous: a claim formatted with another figure is not in the text."""
    claim = next(c for c in CLAIMS if "lowers held-out loss slightly" in c.fragment)
    values = list(claim.values())
    values[3] = "10"  # "lower in 10 of 10 seeds", as the text once said
    assert claim.fragment.format(*values) not in text(claim.file)


def test_the_pilot_says_nothing_emerged_and_right_names_stay_improbable():
    """results/lm-long/pilot: no ability passes its threshold in any run; "the value stream's
    P(right name) is the higher in both seeds at the end", and its exact p is 0.5."""
    from attnstreams.run.stats import sign_flip_p

    assert "nothing in-context emerges by 400M tokens" in text(PILOT)
    for rows in pilot_runs():
        for key, (_, thr, times) in ABILITIES.items():
            assert first_step(rows, key, thr, times) is None, key
    end = {(a, s): pilot()[a][s][-1]["paper_ioi_p_io"] for a in ARMS for s in SEEDS}
    assert all(end["value", s] > end["none", s] for s in SEEDS)
    assert "P(right name) is the higher in both seeds at the end" in text(PILOT)
    assert sign_flip_p([end["value", s] - end["none", s] for s in SEEDS]) == 0.5
    for arm in ARMS:  # "on an H100"
        for seed in SEEDS:
            summary = RESULTS / "lm-long/pilot/resampled" / f"{arm}-s{seed}/summary.json"
            assert "H100" in json.loads(summary.read_text())["device"]
