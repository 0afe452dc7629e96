"""`attnstreams icl report DIR`: steps-to-threshold statistics and curves of a grid run;
`attnstreams icl merge`: grids trained in separate jobs as one folder to report on."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from attnstreams.experiments.icl.task import TEST_SETS
from attnstreams.experiments.icl.train import deviations
from attnstreams.run import stats
from attnstreams.run.config import ConfigError, differences, existing_folder
from attnstreams.run.logs import METRICS, refuse_overwrite, write_text_atomic
from attnstreams.run.plots import plot_bands, plot_paired

TITLES = {
    "mixed": "mixed (as training)",
    "icl": "ICL (bursty, novel classes)",
    "icl_flipped": "ICL-flipped (labels + 1)",
    "iwl": "IWL (i.i.d., known classes)",
}
# What each initialisation is of the authors' code: which JAX it reproduces matters, because
# their key handling draws tied tensors under JAX >= 0.5 and independent ones before it.
INIT_NOTES = {
    "jax": (
        " The initialisation is the authors' code as it draws under JAX >= 0.5 (`init = jax`: "
        "the read-out is W3[:32]/sqrt(2) and ReLU biases 2 and 3 are W3[0, 0]/sqrt(2)); under "
        "an older JAX, which the paper's runs most likely used, their code draws the read-out "
        "independently (`init = jax-legacy`), a setting not run here."
    ),
    "jax-legacy": (
        " The initialisation is the authors' code as it draws under JAX < 0.5 (`init = "
        "jax-legacy`: ReLU biases 2 and 3 equal, the read-out independent); their code under "
        "JAX >= 0.5 ties the read-out to W3 (`init = jax`)."
    ),
}
# paper.md anchors: the authors' code on one H100.
AUTHORS_MS_PER_STEP = 14.0
AUTHORS_S_PER_RUN = 1066.0


def plural(n: int, word: str) -> str:
    """'1 seed', '3 seeds': a count with its word."""
    return f"{n} {word}{'' if n == 1 else 's'}"


def load_runs(run: Path) -> tuple[dict, dict[str, dict[int, list[dict]]]]:
    """The grid's config and its metric rows grouped by variant and seed (sorted by step)."""
    run = existing_folder(run, "grid folder")
    if not (run / METRICS).is_file() or not (run / "config.json").is_file():
        raise ConfigError(f"{run} is not an icl grid folder (needs {METRICS} and config.json)")
    config = json.loads((run / "config.json").read_text())
    rows: dict[str, dict[int, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for line in (run / METRICS).read_text().splitlines():
        if line.strip():
            r = json.loads(line)
            if not {"variant", "seed", "step"} <= r.keys():
                raise ConfigError(
                    f"{run} is not an icl grid folder (its metrics have no variant/seed rows; "
                    "an lm run? try `attnstreams lm report`)"
                )
            rows[r["variant"]][r["seed"]].append(r)
    for by_seed in rows.values():
        for rs in by_seed.values():
            rs.sort(key=lambda r: r["step"])
    if not rows:
        raise ConfigError(f"{run / METRICS} holds no rows yet")
    return config, rows


def merge_grids(sources: list[str | Path], out: str | Path) -> Path:
    """Grids trained apart with the same settings as one grid folder `out`: config.json (every
    variant and seed), metrics.jsonl (every run's rows) and summary.json (each job's). A seed
    fixes a run's initial weights, class means and data whatever trains beside it, so the runs
    pair by seed as if trained together (a variant added later beside a finished grid, say).
    Refuses other settings, a variant and seed found in two sources, or jobs on the CPU and
    on a GPU (a seed's data is drawn on the device: they would not pair)."""
    if len(sources) < 2:
        raise ConfigError("merging needs at least two grid folders")
    refuse_overwrite(out, "config.json", METRICS, "summary.json")
    merged: dict | None = None
    owner: dict[tuple[str, int], Path] = {}
    lines, summaries = [], []
    for src in map(Path, sources):
        config, rows = load_runs(src)
        if merged is None:
            merged = config | {"variants": [], "seeds": []}
        elif config["config"] != merged["config"]:
            changed = "; ".join(differences(merged["config"], config["config"]))
            raise ConfigError(f"{src} has other settings than {sources[0]} ({changed})")
        merged["variants"] += [v for v in config["variants"] if v not in merged["variants"]]
        merged["seeds"] = sorted(set(merged["seeds"]) | set(config["seeds"]))
        for v, by_seed in rows.items():
            for seed, rs in by_seed.items():
                if (v, seed) in owner:
                    raise ConfigError(f"{owner[v, seed]} and {src} both hold {v} seed {seed}")
                owner[v, seed] = src
                lines += [json.dumps(r) for r in rs]
        if (src / "summary.json").is_file():
            summary = json.loads((src / "summary.json").read_text())
            summaries += summary if isinstance(summary, list) else [summary]
    if len({s.get("device") == "cpu" for s in summaries}) > 1:
        raise ConfigError(
            "these grids were trained on the CPU and on a GPU; a seed's data is drawn on the "
            "device, so their runs would not pair by seed"
        )
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / METRICS, "\n".join(lines) + "\n")
    if summaries:
        write_text_atomic(out / "summary.json", json.dumps(summaries, indent=1))
    return write_text_atomic(out / "config.json", json.dumps(merged, indent=1))


def steps_to(rows: list[dict], key: str, threshold: float) -> int | None:
    """First evaluated step at which accuracy reaches the threshold; None if never."""
    for r in rows:
        if r[key] >= threshold:
            return r["step"]
    return None


def _fmt(x, spec=".0f") -> str:
    return "–" if x is None else format(x, spec)


def _interval(lo, hi, spec=".0f", scale=1.0) -> str:
    return "" if lo is None else f" [{format(scale * lo, spec)}, {format(scale * hi, spec)}]"


def versus(
    seeds: list[int], base: list[int | None], variant: list[int | None], censor: float
) -> tuple[list[tuple[int, int, int]], dict, dict]:
    """A variant's steps to a threshold against the baseline's, seed by seed: the pairs where
    both got there (seed, base, variant), stats.paired on those pairs, and
    stats.censored_comparison over every seed (never-reached runs counted at `censor`)."""
    pairs = [(s, a, b) for s, a, b in zip(seeds, base, variant, strict=True) if None not in (a, b)]
    p = stats.paired([a for _, a, _ in pairs], [b for *_, b in pairs])
    return pairs, p, stats.censored_comparison(base, variant, censor)


def threshold_table(
    rows: dict[str, dict[int, list[dict]]],
    variants: list[str],
    seeds: list[int],
    baseline: str,
    test: str,
    thr: float,
    censor: float,
) -> tuple[list[str], dict]:
    """Markdown rows and the per-seed steps for one test set and threshold."""
    key = f"acc_{test}"
    per = {v: [steps_to(rows[v][s], key, thr) for s in seeds] for v in variants}
    lines = [
        f"**{TITLES[test]}: steps to {thr:.0%}**",
        "",
        "| variant | reached | mean | sd | median | paired Δ vs "
        f"{baseline} (mean, 95% t-CI) | change of the means (95% Fieller CI) | n pairs | "
        "exact p | sooner/later (sign p) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for v in variants:
        reached = [x for x in per[v] if x is not None]
        d = stats.describe(reached)
        cells = [
            v,
            f"{len(reached)}/{len(seeds)}",
            _fmt(d["mean"]),
            _fmt(d["sd"]),
            _fmt(d["median"]),
        ]
        if v == baseline:
            cells += ["", "", "", "", ""]
        else:
            pairs, p, c = versus(seeds, per[baseline], per[v], censor)
            if 0 < len(pairs) < stats.MIN_INTERVAL_N:
                # A mean of a few pairs is no estimate, and where runs never got there it
                # leaves out the slowest: every pair, and the change with those runs counted.
                delta = ", ".join(f"{b - a:+,} (seed {s})" for s, a, b in pairs)
                rel = stats.bound_phrase(c)
                if c["bound_kind"] not in (None, "exact"):
                    rel += f", never-reached runs at step {censor:,}"
            else:
                delta = f"{_fmt(p['mean'], '+.0f')}{_interval(p['ci_low'], p['ci_high'], '+.0f')}"
                rel = "–" if p["relative"] is None else f"{100 * p['relative']:+.1f} %"
                rel += _interval(p["rel_low"], p["rel_high"], "+.1f", 100)
            cells += [delta, rel, str(p["n"]), _fmt(p["p_exact"], ".3g")]
            cells.append(f"{c['sooner']}/{c['later']} ({_fmt(c['p_sign'], '.3g')})")
        lines.append("| " + " | ".join(cells) + " |")
    if len(seeds) < stats.MIN_INTERVAL_N:  # few seeds: every seed, no interval
        lines += ["", "| variant | " + " | ".join(f"seed {s}" for s in seeds) + " |"]
        lines.append("|---|" + "---|" * len(seeds))
        lines += [f"| {v} | " + " | ".join(_fmt(x) for x in per[v]) + " |" for v in variants]
    return lines, per


def _grid(run: Path) -> tuple[dict, dict, list[str], list[int], str, int]:
    """A grid folder's config and rows, its variants, the seeds every variant ran, the
    baseline the others are compared with, and the last step every one of those runs reached."""
    config, rows = load_runs(run)
    variants = [v for v in config["variants"] if v in rows]
    seeds = sorted(set.intersection(*(set(rows[v]) for v in variants)))
    done = min(rows[v][s][-1]["step"] for v in variants for s in seeds)
    return config, rows, variants, seeds, "none" if "none" in variants else variants[0], done


def grid_results(run: Path, thresholds: tuple[float, ...] = (0.5, 0.95)) -> dict:
    """The report's numbers as data (`icl report --json`): for each test set and threshold,
    every variant's steps per seed (None: never reached) and, against the baseline, the
    paired statistics and the comparison that counts never-reached runs."""
    _, rows, variants, seeds, baseline, done = _grid(Path(run))
    out: dict = {"baseline": baseline, "seeds": seeds, "step": done, "results": {}}
    for test in TEST_SETS:
        for thr in thresholds:
            per = {v: [steps_to(rows[v][s], f"acc_{test}", thr) for s in seeds] for v in variants}
            vs = {}
            for v in variants:
                if v != baseline:
                    _, paired, censored = versus(seeds, per[baseline], per[v], done)
                    vs[v] = {"paired": paired, "censored": censored}
            out["results"][f"{test}@{thr:g}"] = {"steps": per, "vs_baseline": vs}
    return out


def write_report(run: Path, thresholds: tuple[float, ...] = (0.5, 0.95)) -> Path:
    """Write report.md (with curves.png and steps_to_icl.png) into a grid folder."""
    run = Path(run)
    config, rows, variants, seeds, baseline, steps_done = _grid(run)
    summary = (
        json.loads((run / "summary.json").read_text()) if (run / "summary.json").exists() else {}
    )
    cfg = config["config"]
    last = {v: [rows[v][s][-1] for s in seeds] for v in variants}

    lines = [
        "# In-context classification: residual streams in a two-layer transformer",
        "",
        f"Variants {', '.join(variants)}; {plural(len(seeds), 'seed')} each "
        f"({seeds[0]}..{seeds[-1]}), "
        f"paired by seed (same initial weights, class means and data stream). {steps_done:,} of "
        f"{cfg['steps']:,} SGD steps (lr {cfg['lr']}, weight decay {cfg['weight_decay']}, batch "
        f"{cfg['batch']}); test sets of {cfg['eval_size']:,} sequences every {cfg['eval_every']} "
        "steps. Steps-to-threshold is the first evaluation at or above it; runs that never reach "
        "it are counted in *reached* and left out of the paired statistics (pairs need both). "
        "Intervals: Student t for the mean paired difference, Fieller for the change of the "
        "means; exact p: sign-flip permutation test of the mean difference; sign p: exact "
        "binomial test on the seeds whose order is known. Below "
        f"{stats.MIN_INTERVAL_N} seeds no interval is given, only every seed; below "
        f"{stats.MIN_INTERVAL_N} pairs a table row lists every pair and, in place of the change "
        "of the means, a bound that counts the runs that never got there at the last step.",
        "",
    ]
    for part in summary if isinstance(summary, list) else [summary] if summary else []:
        runs = part["runs"]
        per_step = 1000 * part["wall_s"] / max(part["steps"], 1)
        which = (
            f" ({', '.join(part['variants'])} x {plural(len(seeds), 'seed')})"
            if "variants" in part
            else ""
        )
        lines += [
            f"Hardware: {part['device']}, torch {part['torch']}. "
            f"Grid of {plural(runs, 'run')}{which}: "
            f"{part['wall_s']:.0f} s wall with evaluations ({per_step:.2f} ms per grid step, "
            f"{part['wall_s'] / runs:.1f} s per run).",
            "",
        ]
    lines += [
        f"For scale, another machine: the authors' code took {AUTHORS_MS_PER_STEP} ms a step on "
        f"an H100 (paper.md), ~{AUTHORS_S_PER_RUN:.0f} s a run.",
        "",
    ]
    dev = deviations(cfg)
    lines += [
        "Settings that differ from the authors' experiment: "
        + (
            ", ".join(f"{k} = {o} (theirs: {t})" for k, (o, t) in dev.items())
            if dev
            else "none (task, model, initialisation, optimizer and schedule are theirs)"
        )
        + "."
        + INIT_NOTES.get(cfg.get("init", ""), ""),
        "",
    ]

    tables, verdicts = ["## Steps to threshold", ""], []
    for test in TEST_SETS:
        for thr in thresholds:
            table, per = threshold_table(rows, variants, seeds, baseline, test, thr, steps_done)
            tables += table + [""]
            if test == "icl":
                verdicts += _verdicts(per, baseline, variants, thr, steps_done) + [""]
    lines += ["## Result", "", *verdicts, *tables]

    lines += [
        "## Final accuracy",
        "",
        (
            f"Mean ± sd over the {plural(len(seeds), 'seed')} at step {steps_done:,}."
            if len(seeds) > 1
            else f"One seed, at step {steps_done:,}."
        ),
        "",
        "| variant | " + " | ".join(TEST_SETS) + " |",
        "|---|" + "---|" * len(TEST_SETS),
    ]
    for v in variants:
        cells = []
        for t in TEST_SETS:
            acc = np.array([r[f"acc_{t}"] for r in last[v]])
            cells.append(
                f"{acc.mean():.3f}" + (f" ± {acc.std(ddof=1):.3f}" if len(acc) > 1 else "")
            )
        lines.append(f"| {v} | " + " | ".join(cells) + " |")

    panels = {}
    for t in TEST_SETS:
        panels[TITLES[t]] = {}
        for v in variants:
            n = min(len(rows[v][s]) for s in seeds)
            x = [r["step"] for r in rows[v][seeds[0]][:n]]
            panels[TITLES[t]][v] = (x, [[r[f"acc_{t}"] for r in rows[v][s][:n]] for s in seeds])
    curves = plot_bands(
        panels,
        run / "curves.png",
        ylabel="accuracy",
        hlines=tuple(thresholds),
        hline_labels={t: f"threshold {100 * t:g}%" for t in thresholds},
    )
    thr = max(thresholds)
    per_seed = {v: [steps_to(rows[v][s], "acc_icl", thr) for s in seeds] for v in variants}
    lines += [
        "",
        "## Curves",
        "",
        _curves_caption(len(seeds)),
        "",
        f"![accuracy curves]({curves.name})",
        "",
    ]
    if any(x is not None for xs in per_seed.values() for x in xs):
        paired_png = plot_paired(
            per_seed,
            seeds,
            run / "steps_to_icl.png",
            ylabel=f"steps to {thr:.0%} ICL accuracy",
            title="per seed (lines join a seed across variants; runs that never got there: "
            "not drawn)",
        )
        lines += [f"![steps to threshold per seed]({paired_png.name})", ""]
    else:
        (run / "steps_to_icl.png").unlink(missing_ok=True)
        lines += [f"No run reached {thr:.0%} ICL accuracy, so there is no per-seed plot.", ""]
    return write_text_atomic(run / "report.md", "\n".join(lines) + "\n")


def _curves_caption(n_seeds: int) -> str:
    """What curves.png draws: plot_bands shows a band from 5 seeds on, each seed's line below."""
    if n_seeds >= stats.MIN_INTERVAL_N:
        shown = f"Each line: the mean over the {n_seeds} seeds, its band ± 1 sd"
    elif n_seeds > 1:
        shown = f"Thick lines: the mean over the {n_seeds} seeds; thin lines: each seed"
    else:
        shown = "One seed a line"
    return f"{shown}; dashed: the thresholds, each labelled on its line."


def _pct(sooner: float) -> str:
    return f"{abs(sooner):.1f}% {'sooner' if sooner >= 0 else 'later'}"


def _pct_range(lo: float, hi: float) -> str:
    """An interval of 'percent sooner' in words: '17.0% to 22.9% sooner', '7.9% to 14.2%
    later', '0.2% later to 1.9% sooner'."""
    if lo >= 0:
        return f"{lo:.1f}% to {hi:.1f}% sooner"
    if hi <= 0:
        return f"{-hi:.1f}% to {-lo:.1f}% later"
    return f"{-lo:.1f}% later to {hi:.1f}% sooner"


def _verdicts(per: dict, baseline: str, variants: list[str], thr: float, censor: int) -> list[str]:
    """Plain sentences: did each variant reach the ICL threshold sooner than the baseline?"""
    claim = " (the paper: the value stream reaches 95% about 24% sooner)" if thr == 0.95 else ""
    out = [f"**ICL accuracy {thr:.0%}**{claim}:"]
    for v in variants:
        if v == baseline:
            continue
        pairs = [(a, b) for a, b in zip(per[baseline], per[v], strict=True) if None not in (a, b)]
        never_b = sum(x is None for x in per[baseline])
        never_v = sum(x is None for x in per[v])
        c = stats.censored_comparison(per[baseline], per[v], censor)
        order = (
            f"{c['sooner']} of {len(per[v])} seeds sooner, {c['later']} later "
            f"(sign test p = {_fmt(c['p_sign'], '.3g')})"
        )
        never = f"never reached in {censor:,} steps: {baseline} {never_b}, {v} {never_v}"
        if len(pairs) >= 2 and never_b == never_v == 0:
            p = stats.paired([a for a, _ in pairs], [b for _, b in pairs])
            sooner = -100 * p["relative"]
            head = f"- **{v}**: {_pct(sooner)}"
            if p["rel_low"] is not None:
                lo, hi = -100 * p["rel_high"], -100 * p["rel_low"]
                head += f" (95% CI {_pct_range(lo, hi)}"
                if thr == 0.95 and v == "value":
                    head += "; the paper's 24% is " + ("inside" if lo <= 24 <= hi else "outside")
                head += ")"
                diff = (
                    f"mean Δ {p['mean']:+.0f} steps, 95% CI [{p['ci_low']:.0f}, "
                    f"{p['ci_high']:.0f}], exact p = {_fmt(p['p_exact'], '.3g')}"
                )
            else:
                seeds = ", ".join(f"{a}->{b}" for a, b in pairs)
                diff = (
                    f"{len(pairs)} seeds, no interval below {stats.MIN_INTERVAL_N}: {seeds}; "
                    f"exact p = {_fmt(p['p_exact'], '.3g')}"
                )
            out.append(f"{head} than {baseline} ({diff}); {order}.")
        elif c["sooner"] + c["later"] == 0:
            out.append(f"- **{v}**: no comparison possible ({never}).")
        else:
            out.append(
                f"- **{v}**: {stats.bound_phrase(c)} than {baseline}, counting runs that never "
                f"got there at the last step ({never}); {order}."
            )
    return out
