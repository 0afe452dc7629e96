"""`attnstreams lm report DIR`: curves and paired final numbers of an LM grid."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np
from scipy import stats as sps

from . import stats
from .config import ConfigError
from .plots import plot_bands
from .runlog import write_text_atomic

METRICS = {  # key: (title, higher is better)
    "val_loss": ("held-out loss", False),
    "ioi_accuracy": ("IOI accuracy (templated set)", True),
    "ioi_logit_diff": ("IOI log-prob difference IO - S", True),
    "paper_ioi_accuracy": ("IOI accuracy (paper's 8 prompts)", True),
    "induction_score": ("induction score (first - second copy loss)", True),
    "icl_score": ("ICL score (late - early loss)", False),
}


def load_grid(grid: Path) -> dict[str, dict[int, list[dict]]]:
    """Metric rows of every run folder `<stream>-s<seed>` in a grid, by stream and seed."""
    runs: dict[str, dict[int, list[dict]]] = defaultdict(dict)
    for cfg_path in sorted(Path(grid).glob("*/config.json")):
        metrics = cfg_path.parent / "metrics.jsonl"
        if not metrics.exists():
            continue
        cfg = json.loads(cfg_path.read_text())["config"]
        rows = [json.loads(ln) for ln in metrics.read_text().splitlines() if ln.strip()]
        if rows:
            runs[cfg["stream"]][cfg["seed"]] = rows
    if not runs:
        raise ConfigError(f"{grid} holds no LM runs (folders with config.json and metrics.jsonl)")
    return runs


def write_report(grid: Path) -> Path:
    grid = Path(grid)
    runs = load_grid(grid)
    arms = list(runs)
    baseline = "none" if "none" in runs else arms[0]
    seeds = sorted(set.intersection(*(set(runs[a]) for a in arms)))
    if not seeds:
        raise ConfigError("no seed was run for every arm")
    final = {a: {s: runs[a][s][-1] for s in seeds} for a in arms}
    tokens = min(final[a][s]["tokens"] for a in arms for s in seeds)
    lines = [
        "# Language models with residual streams: IOI and in-context metrics",
        "",
        f"Arms {', '.join(arms)}; seeds {seeds} (paired: same data order and initial weights "
        f"where shapes agree); final step {final[arms[0]][seeds[0]]['step']:,} "
        f"({tokens:,} training tokens a run). Every checkpoint is evaluated with its own "
        "architecture in eval mode (no dropout); names are scored by the log-probability of "
        "the whole name.",
        "",
        "## Final numbers",
        "",
        "Each arm: mean ± sd over the seeds (one seed: its value). Paired Δ: mean difference "
        "with its t-interval (none below 5 seeds); exact p: sign-flip permutation test.",
        "",
        f"| metric | {' | '.join(arms)} | paired Δ vs {baseline} (mean, 95% CI) | paired t p | "
        "exact p |",
        "|---|" + "---|" * (len(arms) + 3),
    ]
    for key, (title, _) in METRICS.items():
        if key not in final[baseline][seeds[0]]:
            continue
        vals = {a: np.array([final[a][s][key] for s in seeds], dtype=float) for a in arms}
        cells = [  # mean ± sd over seeds; one seed: its value alone
            f"{v.mean():.3f}" + (f" ± {v.std(ddof=1):.3f}" if len(v) > 1 else "")
            for v in vals.values()
        ]
        for a in arms:
            if a == baseline:
                continue
            p = stats.paired(vals[baseline], vals[a])
            few = len(seeds) < 2  # no test on one pair
            t = "–" if few else f"{sps.ttest_rel(vals[a], vals[baseline]).pvalue:.3g}"
            ci = f"[{p['ci_low']:+.3f}, {p['ci_high']:+.3f}]" if p["ci_low"] is not None else ""
            exact = "–" if few or p["p_exact"] is None else f"{p['p_exact']:.3g}"
            lines.append(
                f"| {title} ({a}) | " + " | ".join(cells) + f" | {p['mean']:+.3f} {ci} | "
                f"{t} | {exact} |"
            )
    extra = [r for a in arms for s in seeds if (r := final[a][s]).get("real_val_loss") is not None]
    if extra:
        lines += [
            "",
            "Held-out loss on real TinyStories text: "
            + ", ".join(
                f"{a} {np.mean([final[a][s]['real_val_loss'] for s in seeds]):.3f}" for a in arms
            )
            + ".",
        ]

    panels = {}
    for key, (title, _) in METRICS.items():
        if key not in final[baseline][seeds[0]]:
            continue
        panels[title] = {}
        for a in arms:
            n = min(len(runs[a][s]) for s in seeds)
            x = [r["tokens"] / 1e6 for r in runs[a][seeds[0]][:n]]
            panels[title][a] = (x, [[r[key] for r in runs[a][s][:n]] for s in seeds])
    png = plot_bands(panels, grid / "curves.png", xlabel="training tokens (M)")
    lines += ["", "## Curves", "", f"![curves]({png.name})", ""]
    return write_text_atomic(grid / "report.md", "\n".join(lines) + "\n")
