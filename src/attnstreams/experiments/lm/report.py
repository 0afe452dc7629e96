"""`attnstreams lm report DIR`: what emerged in an LM grid, when, and what each stream did.

Arms are compared with the baseline seed by seed, at the last evaluation step that every run of
both reached (a grid stopped early compares where it stands, and says so). Final numbers: paired
differences with t-intervals and exact sign-flip p (no interval below 5 seeds). Emergence: the
step each run first shows an ability; runs that never do are counted, and their comparison is
censored (stats.censored_comparison).
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from attnstreams.experiments.lm.arms import arm_name, parse_arm
from attnstreams.run import stats
from attnstreams.run.config import ConfigError, existing_folder
from attnstreams.run.logs import write_text_atomic
from attnstreams.run.plots import plot_bands, plot_intervals

METRICS = {  # key: (title, higher is better)
    "val_loss": ("held-out loss (nats/token)", False),
    "val_bpb": ("held-out bits per byte", False),
    "ioi_accuracy": ("IOI accuracy (templated set)", True),
    "ioi_logit_diff": ("IOI log-prob difference IO - S", True),
    "ioi_p_io": ("IOI P(IO), templated set", True),
    "ioi_p_s": ("IOI P(S), templated set", False),
    # The authors' quantity (small-LM/IOI_task.py): the probability of the right name and of
    # the repeated name after each of the paper's 4 prompts, averaged over its two orders
    "paper_ioi_p_io": ("P(right name), paper's prompts", True),
    "paper_ioi_p_s": ("P(repeated name), paper's prompts", False),
    "paper_ioi_accuracy": ("IOI accuracy (paper's 8 prompts)", True),
    "induction_score": ("induction score (first - second copy loss)", True),
    "prefix_matching": ("prefix matching (best head)", True),
    "icl_score": ("ICL score (late - early token loss)", False),
    "context_gain": ("context gain (short - whole context loss)", True),
    "real_val_loss": ("held-out loss on the --real-eval corpus", False),
}
#: key: (what, threshold, consecutive evaluations above it)
ABILITIES = {
    "ioi_accuracy": ("IOI accuracy > 0.6", 0.6, 2),
    "induction_score": ("induction score > 1.0 nats", 1.0, 2),
    "prefix_matching": ("a prefix-matching head > 0.3", 0.3, 2),
}
#: Thresholds the long-training pilot's curves reach (results/lm-long/pilot, fixed there before
#: the grid ran): none of the abilities above appears on this corpus, but these rises do, in
#: every pilot run, before 50M tokens. `lm report --thresholds pilot` adds them.
PILOT_THRESHOLDS = "induction_score>0.5,context_gain>0.3,paper_ioi_p_io>0.02"
CURVES = (
    "val_bpb",
    "ioi_accuracy",
    "ioi_logit_diff",
    "induction_score",
    "prefix_matching",
    "context_gain",
    "icl_score",
)
#: Long runs (evaluated on a log-spaced schedule): every quantity the question needs.
LONG_CURVES = (
    "val_loss",
    "paper_ioi_p_io",
    "paper_ioi_p_s",
    "ioi_accuracy",
    "ioi_logit_diff",
    "ioi_p_io",
    "induction_score",
    "prefix_matching",
    "context_gain",
    "icl_score",
)
#: What the ranking table orders the arms by, where the runs have it (3 arms or more).
RANKED = (
    "val_loss",
    "val_bpb",
    "paper_ioi_p_io",
    "ioi_accuracy",
    "ioi_logit_diff",
    "induction_score",
    "context_gain",
)
#: The measures of the comparison's one table (`summary`), at equal tokens.
SUMMARY = ("val_loss", "paper_ioi_p_io", "induction_score", "context_gain")
#: The arm every arm is also compared with in the ranking: the paper's value stream.
REFERENCE = "value"
UNITS = {"val_loss": "nats/token", "val_bpb": "bits/byte", "ioi_accuracy": "accuracy"}
UNITS |= dict.fromkeys(("ioi_p_io", "ioi_p_s", "paper_ioi_p_io", "paper_ioi_p_s"), "probability")
UNITS |= dict.fromkeys(("ioi_logit_diff", "induction_score", "context_gain", "icl_score"), "nats")
UNITS |= {"prefix_matching": "attention", "paper_ioi_accuracy": "accuracy"}
CHANCE = {"ioi_accuracy": (0.5,), "paper_ioi_accuracy": (0.5,), "ioi_logit_diff": (0.0,)}
CHANCE |= {"context_gain": (0.0,), "icl_score": (0.0,)}


#: What may differ between runs compared in one report besides the arm and the seed: how a run
#: was executed, not what it computes (precision is compared: bf16 and fp32 differ).
RUN_ONLY = ("stream", "residual", "seed", "compile", "cuda_graphs", "parallel", "ddp_bucket_mb",
            "checkpoints", "nonfinite", "init_from")  # fmt: skip


def run_settings(saved: dict) -> dict:
    """A run's settings that every run of a report must share: training, model shape, data
    (but the corpus path, which moves between machines) and evaluation. The token files
    themselves are not in a run's config: their digests are in the data folder's train.json."""
    model = {k: v for k, v in (saved.get("model") or {}).items() if k not in RUN_ONLY}
    data = {k: v for k, v in (saved.get("data") or {}).items() if k != "data"}
    evals = {k: saved.get(k) for k in ("ioi_names", "ioi_prompts", "icl_positions", "icl_stories")}
    training = {k: v for k, v in saved["config"].items() if k not in RUN_ONLY}
    return {"config": training, "model": model, "data": data, **evals}


def settings_differ(a: dict, b: dict) -> str | None:
    """The first setting (as 'config.lr') two saved runs differ in, or None. A key one of them
    lacks is not compared: a config written before the key existed ran with its default."""
    sa, sb = run_settings(a), run_settings(b)
    for k in sa:
        if isinstance(sa[k], dict):
            for j in sa[k].keys() & sb[k].keys():
                if sa[k][j] != sb[k][j]:
                    return f"{k}.{j}"
        elif sa[k] is not None and sb[k] is not None and sa[k] != sb[k]:
            return k
    return None


def run_configs(folder: Path) -> list[Path]:
    """The config.json of every run in a grid folder, or of the one run a run's folder holds."""
    single = folder / "config.json"
    return [single] if single.is_file() else sorted(folder.glob("*/config.json"))


def load_grid(grid: Path | list[Path]) -> tuple[dict[str, dict[int, list[dict]]], dict]:
    """Metric rows of every run folder in a grid (or in several grids trained apart: `lm report
    A B`), by arm and seed; and one run's config. Runs whose settings differ other than in arm
    and seed (`run_settings`), or an arm and seed found twice, are refused."""
    runs: dict[str, dict[int, list[dict]]] = defaultdict(dict)
    config = None
    where: dict[tuple[str, int], Path] = {}
    for one in [grid] if isinstance(grid, (str, Path)) else grid:
        # one run's folder: reported as a grid of one run
        for cfg_path in run_configs(existing_folder(Path(one), "grid folder")):
            metrics = cfg_path.parent / "metrics.jsonl"
            if not metrics.exists():
                continue
            saved = json.loads(cfg_path.read_text())
            if "config" not in saved or "stream" not in saved["config"]:
                raise ConfigError(f"{cfg_path.parent} is not a run of `lm train` or `lm grid`")
            rows = [json.loads(ln) for ln in metrics.read_text().splitlines() if ln.strip()]
            if not rows:
                continue
            c = saved["config"]
            key = (arm_name(c["stream"], c.get("residual", "plain")), c["seed"])
            diff = None if config is None else settings_differ(config, saved)
            if diff:
                raise ConfigError(
                    f"{cfg_path.parent} differs from {where[next(iter(where))]} in {diff}: "
                    "a report compares runs that differ only in arm and seed"
                )
            if key in where:
                raise ConfigError(
                    f"{key[0]} seed {key[1]} is in both {where[key]} and {cfg_path.parent}: "
                    "report each run once"
                )
            where[key] = cfg_path.parent
            runs[key[0]][key[1]] = rows
            config = config or saved
    if not runs:
        raise ConfigError(
            f"{grid} holds no LM runs: give an `lm grid` folder (run folders with config.json "
            "and metrics.jsonl) or one run's folder"
        )
    return runs, config


def first_step(rows: list[dict], key: str, threshold: float, times: int) -> int | None:
    """The first evaluation step from which `key` stays above threshold `times` evaluations in
    a row; None if it never does within the run."""
    streak = 0
    for i, r in enumerate(rows):
        v = r.get(key)
        streak = streak + 1 if v is not None and v > threshold else 0
        if streak == times:
            return rows[i - times + 1]["step"]
    return None


def _at(rows: list[dict], step: int) -> dict:
    return next(r for r in rows if r["step"] == step)


def _common_step(runs: dict[int, list[dict]], other: dict[int, list[dict]], seeds) -> int:
    """The last evaluation step that every run of both arms reached."""
    steps = [{r["step"] for r in arm[s]} for arm in (runs, other) for s in seeds]
    common = set.intersection(*steps)
    return max(common) if common else 0


def _digits(key: str) -> int:
    """Decimals a quantity is printed with: probabilities start near 1e-4, so 4."""
    return 4 if UNITS.get(key) == "probability" else 3


def _mean_sd(v: np.ndarray, d: int = 3) -> str:
    """Mean ± sd; under stats.MIN_INTERVAL_N (5) seeds every seed's value instead of the sd."""
    if len(v) < stats.MIN_INTERVAL_N:
        each = f" ({', '.join(f'{x:.{d}f}' for x in v)})" if len(v) > 1 else ""
        return f"{v.mean():.{d}f}{each}"
    return f"{v.mean():.{d}f} ± {v.std(ddof=1):.{d}f}"


def _p(x: float | None) -> str:
    return "–" if x is None else f"{x:.3g}"


Ability = tuple[str, str, float, int]  # key, what, threshold, consecutive evaluations


def abilities(spec: str = "") -> list[Ability]:
    """The paper's ABILITIES, then more thresholds: `spec` a comma list of KEY>VALUE (KEY a
    metric where higher is better), or `pilot` (PILOT_THRESHOLDS)."""
    out = [(key, *v) for key, v in ABILITIES.items()]
    for item in filter(None, (x.strip() for x in spec.split(","))):
        if item == "pilot":
            out += abilities(PILOT_THRESHOLDS)[len(ABILITIES) :]
            continue
        key, sep, value = item.partition(">")
        higher = [k for k, (_, up) in METRICS.items() if up]
        if not sep or key not in higher:
            raise ConfigError(
                f"a threshold is KEY>VALUE with KEY one of {', '.join(higher)}, or 'pilot' "
                f"(got {item!r})"
            )
        try:
            thr = float(value)
        except ValueError:
            raise ConfigError(f"threshold {item!r}: {value!r} is not a number") from None
        unit = UNITS.get(key, "")
        what = f"{METRICS[key][0].split(' (')[0]} > {thr:g}" + (" nats" if unit == "nats" else "")
        out.append((key, what, thr, 2))
    return out


def write_report(
    grid: Path | list[Path],
    title: str | None = None,
    thresholds: str = "",
    cost: Path | None = None,
    out: Path | None = None,
    only: str = "",
) -> Path:
    """Write report.md (and its plots) into an LM grid folder, or for several grids trained
    apart (`load_grid`) into `out` (default: the first); `thresholds` adds abilities to the
    paper's (`abilities`); `cost` (rows of `benchmarks/lm_throughput.py --json`) adds the
    comparison at equal GPU time; `only` (a comma list) keeps those arms, in that order."""
    table = abilities(thresholds)
    grids = [Path(grid)] if isinstance(grid, (str, Path)) else [Path(g) for g in grid]
    runs, config = load_grid(grids)
    if only:
        keep = [a.strip() for a in only.split(",") if a.strip()]
        missing = [a for a in keep if a not in runs]
        if missing or not keep:
            what = f"{', '.join(missing)} not among the runs" if missing else "names no arm"
            raise ConfigError(f"--arms {only!r}: {what} ({', '.join(runs)})")
        runs = {a: runs[a] for a in keep}
    grid = Path(out) if out is not None else grids[0]
    grid.mkdir(parents=True, exist_ok=True)
    arms = list(runs)
    baseline = "none" if "none" in runs else arms[0]
    cfg, data = config["config"], config.get("data") or {}
    vocab = (config.get("model") or {}).get("vocab_size")
    costs = None if cost is None else step_times(cost, cfg["preset"], arms, vocab)
    ratios = None if costs is None else step_ratios(costs, baseline)
    planned = cfg["steps"]
    finished = {
        a: sorted(s for s, rows in runs[a].items() if rows[-1]["step"] >= planned) for a in arms
    }
    lines = [
        f"# {title or 'Language models with residual streams: what emerges, and when'}",
        "",
        _setting_line(cfg, data, config, planned),
        "",
        "Runs finished (of those started): "
        + "; ".join(f"{a} {len(finished[a])}/{len(runs[a])}" for a in arms)
        + ". Each arm is compared with "
        + f"{baseline} on the seeds both ran, at the last evaluation step every one of those "
        "runs reached (named in each row); the same seed means the same data order and, where "
        "shapes agree, the same initial weights.",
        "",
        *_stack_lines(grids),
        *(
            ["Runs from " + ", ".join(f"`{g}`" for g in grids) + " (trained apart).", ""]
            if len(grids) > 1
            else []
        ),
    ]
    # 3 arms or more: each also against the paper's value stream, and a ranking
    ref = REFERENCE if len(arms) >= 3 and REFERENCE in runs and REFERENCE != baseline else None
    lines += _emergence_section(runs, arms, baseline, table, ref)
    if len(arms) >= 3:
        lines += [
            "## In one table",
            "",
            f"Each arm against {baseline}, paired by seed at the end of training (as in the "
            "ranking below): the mean difference with its 95% t-interval (none below 5 seeds) "
            "and, in brackets, the arm's rank on that measure (1: best). Seeds: the arm's runs."
            + (
                f" With the step costs of `{Path(cost).name}`: the held-out loss after "
                f'{baseline}\'s GPU time (as in "At equal GPU time"), and the step time, peak '
                f"memory and parameters against {baseline}'s."
                if costs
                else ""
            )
            + ' Each ability some run shows (as in "What emerged"): the arm\'s runs that show '
            "it, and the median step at which they first do (runs that never do are not in it).",
            "",
            *summary(runs, arms, baseline, costs, table),
            "",
        ]
        lines += _ranking_section(runs, arms, baseline, ref, grid / "ranking.png")
    lines += _final_section(runs, arms, baseline)
    if ratios is not None:
        lines += _equal_time_section(runs, arms, baseline, ratios, Path(cost).name)
    lines += _template_section(runs, arms, baseline)
    long = bool(cfg.get("eval_log"))
    if long:
        lines += _crossings_section(runs, arms, table)
        lines += _changes_section(runs, arms)
    png = _curves(runs, arms, grid / "curves.png", LONG_CURVES if long else CURVES, long)
    lines += [
        "## Curves",
        "",
        "Mean over seeds, band ± 1 sd (under 5 seeds: each seed's own thin line); x: training "
        + ("tokens, log scale" if long else "tokens")
        + "; dashed: chance or zero.",
        "",
    ]
    lines += [f"![curves]({png.name})", ""]
    return write_text_atomic(grid / "report.md", "\n".join(lines) + "\n")


def _stack_lines(grids: list[Path]) -> list[str]:
    """Which runs were trained in stacks (lm/stack.py), where any were."""
    stacks = [json.loads(p.read_text()).get("stack") for g in grids for p in run_configs(g)]
    sizes = sorted({s["size"] for s in stacks if s})
    if not sizes:
        return []
    n = sum(1 for s in stacks if s)
    return [
        f"{n} of {len(stacks)} runs trained in stacks of "
        + ", ".join(map(str, sizes))
        + " (`lm grid --stack`: one batched computation; a run's own weights, batches and "
        "evaluations, but other dropout masks than it draws alone).",
        "",
    ]


def _setting_line(cfg: dict, data: dict, config: dict, planned: int) -> str:
    parts = [
        f"Preset {cfg['preset']}",
        f"batch {cfg['batch']}",
        f"lr {cfg['lr']:g}",
        f"weight decay {cfg['weight_decay']:g}",
        f"dropout {'preset' if cfg['dropout'] is None else cfg['dropout']}",
        f"{planned:,} steps" + (f" ({cfg['epochs']:g} epochs)" if cfg.get("epochs") else ""),
    ]
    if data:
        parts.append(
            f"data {Path(str(data['data'])).name} ({data['tokenizer']} tokenizer"
            + (f", vocabulary {data['vocab_size']:,}" if data["tokenizer"] == "bpe" else "")
            + f", names {data.get('names', 'original')})"
        )
    if config.get("ioi_prompts"):
        parts.append(f"IOI set {config['ioi_prompts']:,} prompts over {config['ioi_names']} names")
    if config.get("icl_positions"):
        e, late = config["icl_positions"]
        parts.append(
            f"ICL score: token {late} minus token {e} of {config.get('icl_stories', '?')} "
            f"held-out stories; context gain: token {late} given its {e} preceding tokens "
            "against given the whole story"
        )
    return "; ".join(parts) + "."


def _sooner(runs, at: dict, a: str, other: str, bound: bool) -> str:
    """Arm `a` against `other`, seed by seed, on the step an ability appeared (None: never,
    censored at the run's end): how many seeds sooner / later / unknown, the exact sign p,
    and (bound) what that says of the mean step; dashes for the arm itself."""
    if a == other:
        return "– | – | –" if bound else "– | –"
    seeds = sorted(set(at[a]) & set(at[other]))
    if not seeds:
        return "no common seed | – | –" if bound else "no common seed | –"
    end = max(r["step"] for s in seeds for r in runs[a][s] + runs[other][s])
    c = stats.censored_comparison([at[other][s] for s in seeds], [at[a][s] for s in seeds], end)
    out = f"{c['sooner']} / {c['later']} / {c['unknown']} | {_p(c['p_sign'])}"
    return out + (f" | {stats.bound_phrase(c)}" if bound else "")


def _emergence_section(
    runs, arms, baseline, table: list[Ability], ref: str | None = None
) -> list[str]:
    lines = [
        "## What emerged",
        "",
        "An ability appears at the first evaluation from which it holds twice in a row. "
        "Runs that never show it are counted (censored at their last step).",
        "",
    ]
    rows, verdicts = [], []
    for key, what, thr, times in table:
        if not any(key in r for a in arms for rows in runs[a].values() for r in rows):
            continue
        at = {a: {s: first_step(r, key, thr, times) for s, r in runs[a].items()} for a in arms}
        total = sum(v is not None for a in arms for v in at[a].values())
        if total == 0:
            seen = value_range(runs, arms, key)
            where = (
                ""
                if seen is None
                else f" (highest at any evaluation {seen[0]:.3f}; runs end at "
                f"{seen[1]:.3f} to {seen[2]:.3f})"
            )
            verdicts.append(
                f"- **{what}: never**, in no run of any arm; no arm can be sooner{where}."
            )
            continue
        verdicts.append(f"- {what}: in {total} of {sum(len(at[a]) for a in arms)} runs.")
        for a in arms:
            got = [v for v in at[a].values() if v is not None]
            med = f"{int(np.median(got)):,}" if got else "–"
            cells = _sooner(runs, at, a, baseline, bound=True)
            if ref:
                cells += " | " + _sooner(runs, at, a, ref, bound=False)
            rows.append(f"| {what} | {a} | {len(got)}/{len(at[a])} | {med} | {cells} |")
    if rows:  # a table only where something emerged somewhere
        lines += [
            "| ability | arm | runs showing it | median step | vs "
            f"{baseline}: sooner / later / unknown | exact sign p | change of the mean step |"
            + (f" vs {ref}: sooner / later / unknown | exact sign p |" if ref else ""),
            "|---|---|---|---|---|---|---|" + ("---|---|" if ref else ""),
            *rows,
            "",
        ]
    return [*lines, *verdicts, ""]


def value_range(runs, arms, key: str) -> tuple[float, float, float] | None:
    """The highest value of `key` at any evaluation of any run, and the lowest and highest at
    the runs' last evaluations: what single runs did, which arm means hide. None when no last
    evaluation has the value."""
    rows = [rs for a in arms for rs in runs[a].values()]
    ends = [rs[-1][key] for rs in rows if rs[-1].get(key) is not None]
    if not ends:
        return None
    top = max(r[key] for rs in rows for r in rs if r.get(key) is not None)
    return top, min(ends), max(ends)


def final_comparisons(runs, arms, baseline) -> tuple[list[dict], list[str]]:
    """Every metric of every arm against the baseline, seed by seed, at the last step every
    run of both reached: dicts of key, title, arm, step, seeds, the baseline's and the arm's
    values (base, values) and stats.paired of them; and the arms with no evaluation after
    step 0. The report's table and the docs' figures are both read from these."""
    compared, empty = {}, []  # arm: (seeds both arms ran, the last step all those runs reached)
    for a in arms:
        if a == baseline:
            continue
        seeds = sorted(set(runs[a]) & set(runs[baseline]))
        step = _common_step(runs[a], runs[baseline], seeds) if seeds else 0
        if step == 0:
            empty.append(a)
        else:
            compared[a] = seeds, step
    out = []
    for key, (title, _) in METRICS.items():
        for a, (seeds, step) in compared.items():
            rows_a = [_at(runs[a][s], step) for s in seeds]
            rows_b = [_at(runs[baseline][s], step) for s in seeds]
            if key not in rows_b[0] or key not in rows_a[0]:
                continue
            va = np.array([r[key] for r in rows_a], dtype=float)
            vb = np.array([r[key] for r in rows_b], dtype=float)
            out.append(
                {"key": key, "title": title, "arm": a, "step": step, "seeds": seeds}
                | {"base": vb, "values": va, "paired": stats.paired(vb, va)}
            )
    return out, empty


def ranking(runs, arms, baseline, reference: str | None = REFERENCE) -> dict[str, list[dict]]:
    """Per metric of RANKED: the arms best first (METRICS' direction) by their mean paired
    difference from the baseline on the seeds both ran, at the step all those runs reached
    (final_comparisons; the baseline's: 0), each with that difference and, where both
    ran, from `reference` (None: from no other). Entries: arm, values, vs_base, vs_ref
    (stats.paired or None), and but for the baseline's, diffs (arm - baseline, seed by seed)."""
    vs_base, _ = final_comparisons(runs, arms, baseline)
    vs_ref = {}
    if reference is not None and reference in runs and reference != baseline:
        vs_ref = {
            (c["key"], c["arm"]): c["paired"] for c in final_comparisons(runs, arms, reference)[0]
        }
    out = {}
    for key in RANKED:
        rows = [c for c in vs_base if c["key"] == key]
        if not rows:
            continue
        entries = [{"arm": baseline, "values": rows[0]["base"], "vs_base": None}]
        entries += [
            {"arm": c["arm"], "values": c["values"], "vs_base": c["paired"]}
            | {"diffs": c["values"] - c["base"]}
            for c in rows
        ]
        for e in entries:
            e["vs_ref"] = vs_ref.get((key, e["arm"]))
        sign = -1 if METRICS[key][1] else 1
        out[key] = sorted(entries, key=lambda e: sign * _shift(e))
    return out


def _shift(entry: dict) -> float:
    """A ranking entry's mean paired difference from the baseline (the baseline's own: 0)."""
    return 0.0 if entry["vs_base"] is None else float(entry["vs_base"]["mean"])


def _ci(p: dict, d: int) -> str:
    """A paired difference with its 95% t-interval (none below 5 seeds)."""
    ci = "" if p["ci_low"] is None else f" [{p['ci_low']:+.{d}f}, {p['ci_high']:+.{d}f}]"
    return f"{p['mean']:+.{d}f}{ci}"


def _delta(p: dict | None, d: int) -> str:
    """`_ci` and the exact p, or – (the arm itself)."""
    return "–" if p is None else f"{_ci(p, d)}, p {_p(p['p_exact'])}"


def _ranks(means: list[float], d: int) -> list[int]:
    """Ranks of means already in order, best first, equal at `d` decimals sharing one."""
    r = [round(m, d) for m in means]
    return [1 + sum(x != m for x in r[: r.index(m)]) for m in r]


def _ranking_plot(table: dict[str, list[dict]], baseline: str, path: Path) -> Path:
    """Each measure's Δ against the baseline, arms in rank order: mean, 95% interval, seeds."""
    panels = {}
    for key, entries in table.items():
        title, unit = METRICS[key][0], UNITS.get(key, "")
        panels[f"{title}: arm - {baseline}" + (f" [{unit}]" if unit not in title else "")] = [
            {"label": e["arm"], "mean": e["vs_base"]["mean"], "each": e["diffs"]}
            | {"low": e["vs_base"]["ci_low"], "high": e["vs_base"]["ci_high"]}
            for e in entries
            if e["vs_base"] is not None
        ]
    return plot_intervals(panels, path, "paired difference (dot: a seed; bar: 95% t-interval)")


def _ranking_section(runs, arms, baseline, ref: str | None, png: Path) -> list[str]:
    table = ranking(runs, arms, baseline, ref)
    lines = [
        "## Ranking",
        "",
        "Each measure's arms best first by their mean paired difference from "
        f"{baseline} ({baseline}: 0) on the seeds both ran, at the last step all those runs "
        "reached (as in the table below); mean ± sd: the arm's own values on those seeds. "
        f"Δ: paired by seed, arm - {baseline}"
        + (f" and arm - {ref} (the paper's value stream)" if ref else "")
        + ", with the 95% t-interval (none below 5 seeds) and the exact sign-flip p. A rank "
        "is an order of means as shown (equal ones share it), not a finding: read it with its "
        "intervals.",
        "",
        f"| measure | rank | arm | seeds | mean ± sd | Δ vs {baseline} [95% CI], p |"
        + (f" Δ vs {ref} [95% CI], p |" if ref else ""),
        "|---|---|---|---|---|---|" + ("---|" if ref else ""),
    ]
    for key, entries in table.items():
        d = _digits(key)
        ranks = _ranks([_shift(e) for e in entries], d)
        for e, rank in zip(entries, ranks, strict=True):
            row = (
                f"| {METRICS[key][0]} | {rank} | {e['arm']} | {len(e['values'])} | "
                f"{_mean_sd(e['values'], d)} | {_delta(e['vs_base'], d)} |"
            )
            lines.append(row + (f" {_delta(e['vs_ref'], d)} |" if ref else ""))
    png = _ranking_plot(table, baseline, png)
    return [*lines, "", f"![ranking]({png.name})", ""]


def summary(
    runs, arms, baseline, costs: dict[str, dict] | None = None, table: list[Ability] = ()
) -> list[str]:
    """The comparison in one table, an arm a row (best held-out loss first): each SUMMARY
    measure's paired difference from the baseline with its interval and the arm's rank
    (`ranking`); with `costs` (`step_times`), the loss at equal GPU time and its rank
    (`equal_time`) and what a step costs; then each ability of `table` that some run shows:
    how many of the arm's runs show it, and the median of their first steps (`first_step`).
    The report's section, and README's table."""
    ranks = ranking(runs, arms, baseline, None)
    cols: dict[str, dict[str, str]] = {}  # column: arm: cell

    def ranked(column: str, deltas: dict[str, dict | None], d: int, higher: bool) -> None:
        means = {a: 0.0 if p is None else p["mean"] for a, p in deltas.items()}
        order = sorted(means, key=lambda a: -means[a] if higher else means[a])
        places = _ranks([means[a] for a in order], d)
        cols[column] = {
            a: ("–" if deltas[a] is None else _ci(deltas[a], d)) + f" ({r})"
            for a, r in zip(order, places, strict=True)
        }

    for key in (k for k in SUMMARY if k in ranks):
        deltas = {e["arm"]: e["vs_base"] for e in ranks[key]}
        ranked(f"{METRICS[key][0]}: Δ (rank)", deltas, _digits(key), METRICS[key][1])
    if costs is not None:
        base = costs[baseline]
        ratios = step_ratios(costs, baseline)
        timed = equal_time(runs, arms, baseline, ratios, "val_loss")
        deltas = {baseline: None} | {c["arm"]: c["paired"] for c in timed}
        ranked(f"{METRICS['val_loss'][0]} at equal GPU time: Δ (rank)", deltas, 3, False)
        cols["time a step"] = {a: f"{ratios[a]:.2f}x" for a in arms}
        if base["peak_gb"] is not None:
            cols["peak memory"] = {
                a: f"{costs[a]['peak_gb'] / base['peak_gb']:.2f}x"
                for a in arms
                if costs[a]["peak_gb"] is not None
            }
        if base["params"] is not None:
            cols["parameters added"] = {
                a: f"{costs[a]['params'] - base['params']:+,.0f}"
                for a in arms
                if costs[a]["params"] is not None
            }
    for key, what, thr, times in table:
        at = {a: [first_step(r, key, thr, times) for r in runs[a].values()] for a in arms}
        if any(v is not None for a in arms for v in at[a]):
            cols[f"{what}: runs, median step"] = {
                a: f"{len(got)}/{len(at[a])}" + (f", {int(np.median(got)):,}" if got else "")
                for a in arms
                for got in [[v for v in at[a] if v is not None]]
            }
    order = [e["arm"] for e in ranks["val_loss"]] if "val_loss" in ranks else arms
    order += [a for a in arms if a not in order]
    return [
        "| arm | seeds | " + " | ".join(cols) + " |",
        "|---|---|" + "---|" * len(cols),
        *(
            f"| {a} | {len(runs[a])} | " + " | ".join(c.get(a, "–") for c in cols.values()) + " |"
            for a in order
        ),
    ]


def _final_section(runs, arms, baseline) -> list[str]:
    rows, empty = final_comparisons(runs, arms, baseline)
    adjusted = stats.holm([c["paired"]["p_exact"] for c in rows])
    smallest = min((p for p in adjusted if p is not None), default=None)
    lines = [
        "## Numbers at the end",
        "",
        "Each arm: mean ± sd over the compared seeds. Paired Δ = arm - baseline, seed by seed, "
        "with its 95% t-interval (none below 5 seeds) and the exact sign-flip p; Holm p: that p "
        f"adjusted for all {len(rows)} comparisons of this table (below 0.05: a difference "
        f"with family-wise error under 5%; smallest here: {_p(smallest)}); then how many seeds "
        "the arm was below and above the baseline (ties in neither).",
        "",
        f"| metric | arm | step | seeds | {baseline} | arm | paired Δ [95% CI] | exact p | "
        "Holm p | seeds below / above |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| – | {a} | – | – | – | – | no evaluation after step 0 | – | – | – |" for a in empty
    ]
    for c, holm_p in zip(rows, adjusted, strict=True):
        p, d = c["paired"], _digits(c["key"])
        lines.append(
            f"| {c['title']} | {c['arm']} | {c['step']:,} | {len(c['seeds'])} | "
            f"{_mean_sd(c['base'], d)} | {_mean_sd(c['values'], d)} | {_ci(p, d)} | "
            f"{_p(p['p_exact'])} | {_p(holm_p)} | {p['below']} / {p['above']} |"
        )
    return [*lines, ""]


def step_times(path: Path, preset: str, arms, vocab: int | None = None) -> dict[str, dict]:
    """Each arm's cost from the rows of `benchmarks/lm_throughput.py --json` for `preset` and
    the runs' vocabulary, in the first mode that timed every arm: ms a step, peak GB and
    parameters (an arm's rows averaged: the baseline is timed first and last)."""
    try:
        rows = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        rows = None
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise ConfigError(f"--cost {path}: not a JSON list of lm_throughput.py rows")
    by_mode: dict[str, dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:  # ours only (not the peer models), timed, of this preset and vocabulary
        same = r.get("preset") == preset and vocab in (None, r.get("vocab", vocab))
        if same and r.get("ms_per_step") and r.get("model") == "attnstreams":
            by_mode[r["mode"]][arm_name(*parse_arm(r["stream"]))].append(r)
    timed = next((m for m in by_mode.values() if all(a in m for a in arms)), None)
    if timed is None:  # no mode timed every arm
        seen = sorted({a for m in by_mode.values() for a in m})
        raise ConfigError(
            f"--cost {path}: no {preset} mode (vocabulary {vocab}) with a step time for every arm "
            f"({', '.join(arms)}); timed there: {', '.join(seen) or 'nothing'}"
        )

    def mean(rows: list[dict], key: str) -> float | None:
        values = [r.get(key) for r in rows]
        return None if None in values else float(np.mean(values))

    return {a: {k: mean(timed[a], k) for k in ("ms_per_step", "peak_gb", "params")} for a in arms}


def step_ratios(costs: dict[str, dict], baseline: str) -> dict[str, float]:
    """Each arm's time a step over the baseline's (`costs`: `step_times`)."""
    return {a: c["ms_per_step"] / costs[baseline]["ms_per_step"] for a, c in costs.items()}


def _interp(rows: list[dict], key: str, step: float) -> float:
    """`key` at `step`, linear between the evaluations either side."""
    have = [r for r in rows if r.get(key) is not None]
    return float(np.interp(step, [r["step"] for r in have], [r[key] for r in have]))


def equal_time(runs, arms, baseline, ratios: dict[str, float], key: str) -> list[dict]:
    """Each arm against the baseline after the same GPU time, seed by seed: the most time both
    runs of a seed spent (to the last step all runs of both reached), the baseline's value
    after that many of its steps and the arm's after that time over its cost ratio
    (interpolated between evaluations). Entries: arm, ratio, seeds, base_step, arm_step,
    base, values, paired."""
    out = []
    for a in arms:
        seeds = sorted(set(runs[a]) & set(runs[baseline]))
        if a == baseline or not seeds:
            continue
        r = ratios[a]
        end = _common_step(runs[a], runs[baseline], seeds)
        t = end * min(1.0, r)  # the time both spent, in the baseline's steps
        if t == 0 or key not in runs[a][seeds[0]][-1]:
            continue
        vb = np.array([_interp(runs[baseline][s], key, t) for s in seeds])
        va = np.array([_interp(runs[a][s], key, t / r) for s in seeds])
        out.append(
            {"arm": a, "ratio": r, "seeds": seeds, "base_step": t, "arm_step": t / r}
            | {"base": vb, "values": va, "paired": stats.paired(vb, va)}
        )
    return out


def _equal_time_section(runs, arms, baseline, ratios: dict[str, float], source: str) -> list[str]:
    lines = [
        "## At equal GPU time",
        "",
        f"Each arm's time a step over {baseline}'s is its step time in `{source}` "
        "(benchmarks/lm_throughput.py, one model alone on the card; the runs' own wall times "
        "are not used, since runs shared a card). Per seed, both runs are read after the same "
        f"time: {baseline} after the steps shown, the arm after that time over its ratio "
        "(linear between evaluations). Δ = arm - baseline, paired by seed, as above.",
        "",
        f"| measure | arm | time a step vs {baseline} | seeds | {baseline} step | arm step | "
        f"{baseline} | arm | paired Δ [95% CI] | exact p |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for key in ("val_loss", "val_bpb"):
        for c in equal_time(runs, arms, baseline, ratios, key):
            p, d = c["paired"], _digits(key)
            lines.append(
                f"| {METRICS[key][0]} | {c['arm']} | {c['ratio']:.3f} | {len(c['seeds'])} | "
                f"{c['base_step']:,.0f} | {c['arm_step']:,.0f} | {_mean_sd(c['base'], d)} | "
                f"{_mean_sd(c['values'], d)} | {_ci(p, d)} | {_p(p['p_exact'])} |"
            )
    return [*lines, ""]


def _template_section(runs, arms, baseline) -> list[str]:
    """IOI accuracy and difference of every template at each run's last evaluation."""
    last = {
        a: [rows[-1].get("ioi_by_template") for rows in runs[a].values() if rows[-1]["step"]]
        for a in arms
    }
    if not last[baseline] or not last[baseline][0]:
        return []
    keys = sorted(last[baseline][0], key=int)
    shown = [a for a in arms if last[a] and last[a][0]]
    lines = [
        "## IOI by template (last evaluation; accuracy / mean IO - S, mean over seeds)",
        "",
        "| template | " + " | ".join(shown) + " |",
        "|---|" + "---|" * len(shown),
    ]
    for k in keys:
        cells = []
        for a in shown:
            acc = np.mean([t[k][0] for t in last[a] if t and k in t])
            diff = np.mean([t[k][1] for t in last[a] if t and k in t])
            cells.append(f"{acc:.2f} / {diff:+.2f}")
        lines.append(f"| {k} | " + " | ".join(cells) + " |")
    return [*lines, ""]


#: Quantities whose steepest change is reported in long runs (held-out loss: its minimum).
CHANGES = ("paper_ioi_p_io", "ioi_accuracy", "ioi_p_io", "induction_score", "prefix_matching")
CHANGES += ("context_gain",)


def steepest(rows: list[dict], key: str) -> tuple[int, float, float] | None:
    """Where `key` moves most between two consecutive evaluations: (tokens at the end of
    that interval, the move, the move over the whole range the run covers). On a log-spaced
    schedule every interval is the same factor of training, so a large share means an abrupt
    change; None under 3 evaluations or when the quantity never moves."""
    pts = [(r["tokens"], r[key]) for r in rows if r.get(key) is not None]
    if len(pts) < 3:
        return None
    v = np.array([y for _, y in pts], dtype=float)
    span = float(v.max() - v.min())
    if span == 0:
        return None
    d = np.diff(v)
    i = int(np.abs(d).argmax())
    return pts[i + 1][0], float(d[i]), abs(float(d[i])) / span


def lowest(rows: list[dict], key: str = "val_loss") -> dict:
    """The evaluation row where `key` (held-out loss) is lowest: where memorisation, if any,
    begins."""
    return min((r for r in rows if key in r), key=lambda r: r[key])


def crossing(rows: list[dict], key: str, thr: float, times: int) -> int | None:
    """The training tokens at which an ability appears in a run (first_step); None: never."""
    step = first_step(rows, key, thr, times)
    return None if step is None else _at(rows, step)["tokens"]


def _crossings_section(runs, arms, table: list[Ability]) -> list[str]:
    lines = [
        "## When each ability appears (every run)",
        "",
        "Training tokens at the first evaluation from which it holds twice in a row; never: "
        "not within the run.",
        "",
        "| run | " + " | ".join(what for _, what, _, _ in table) + " |",
        "|---|" + "---|" * len(table),
    ]
    for a in arms:
        for seed, rows in sorted(runs[a].items()):
            got = [crossing(rows, key, thr, times) for key, _, thr, times in table]
            cells = ["never" if t is None else f"{t / 1e6:.1f}M" for t in got]
            lines.append(f"| {a} s{seed} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def _changes_section(runs, arms) -> list[str]:
    lines = [
        "## Where each quantity changes most (every run)",
        "",
        "For each run: the training tokens at which a quantity moved most between two "
        "consecutive evaluations (the schedule is log-spaced, so each interval is the same "
        "factor of training), the move, and its share of the run's whole range (1.0: all of "
        "it in one interval). Held-out loss: its lowest value, where, and how far the last "
        "evaluation is above it (a rise means memorisation).",
        "",
        "| run | held-out loss: min @ tokens, end - min | "
        + " | ".join(METRICS[k][0] for k in CHANGES)
        + " |",
        "|---|---|" + "---|" * len(CHANGES),
    ]
    for a in arms:
        for seed, rows in sorted(runs[a].items()):
            low, end = lowest(rows), rows[-1]["val_loss"] - lowest(rows)["val_loss"]
            cells = [f"{low['val_loss']:.3f} @ {low['tokens'] / 1e6:.1f}M, {end:+.3f}"]
            for key in CHANGES:
                got = steepest(rows, key)
                d = _digits(key)
                cells.append(
                    "–" if got is None else f"{got[0] / 1e6:.1f}M: {got[1]:+.{d}f} ({got[2]:.2f})"
                )
            lines.append(f"| {a} s{seed} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def _curves(runs, arms, path: Path, keys=CURVES, logx: bool = False) -> Path:
    panels = {}
    for key in keys:
        if not any(key in runs[a][s][0] for a in arms for s in runs[a]):
            continue
        title = METRICS[key][0]
        panels[title] = {}
        for a in arms:
            seeds = [s for s in runs[a] if len(runs[a][s]) > 1]
            if not seeds:
                continue
            n = min(len(runs[a][s]) for s in seeds)
            x = [r["tokens"] / 1e6 for r in runs[a][seeds[0]][:n]]
            panels[title][a] = (x, [[r[key] for r in runs[a][s][:n]] for s in seeds])
    titles = {METRICS[k][0]: k for k in keys}
    return plot_bands(
        panels,
        path,
        ylabel={t: UNITS.get(k, "") for t, k in titles.items()},
        xlabel="training tokens (M)",
        hlines={t: CHANCE.get(k, ()) for t, k in titles.items()},
        logx=logx,
        ylims={t: (0.0, 1.0) for t, k in titles.items() if UNITS.get(k) == "accuracy"},
    )
