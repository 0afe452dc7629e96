"""`attnstreams reproduce`: the paper's experiments end to end, written up as report.md."""

from __future__ import annotations

import platform
import time
from pathlib import Path

import torch
from tqdm import tqdm

from attnstreams import __version__, amicl
from attnstreams.run.config import ConfigError
from attnstreams.run.logs import CSVLog, new_run_dir, write_text_atomic
from attnstreams.run.plots import plot_attention, plot_sweep


def _fmt_range(lo: float, hi: float) -> str:
    return f"{lo:.3f}" if lo == hi else f"{lo:.2f} to {hi:.2f}"


def amicl_section(out: Path, quick: bool, seed: int) -> str:
    """AMICL table, sweeps over a / length / dim, and attention maps (paper.md section 1)."""
    n_table, n_sweep = QUICK_AMICL_TRIALS if quick else (200_000, 20_000)
    lines = [
        "## 1. AMICL: associative memory for in-context learning",
        "",
        f"Dot product + argmax, {n_table:,} trials a row (paper: 1,000). z is the gap to the "
        "reported value in standard errors of the difference (ours and the paper's 1,000 trials); "
        "a row holds when z < 3.",
        "",
        "| setting | a | paper | ours | z | holds |",
        "|---|---|---|---|---|---|",
    ]
    base = amicl.AMICLConfig()
    fields = ["accuracy", "stderr", "trials", "correct", "seed", *amicl.FIELD_NAMES]
    with CSVLog(out / "amicl_table.csv", fields) as log:
        for override, reported in tqdm(amicl.PAPER_TABLE, desc="AMICL table", disable=None):
            cfg = base.with_(**override)
            trials = n_table if cfg.dim * cfg.length <= 2000 else n_table // 4
            res = amicl.run(cfg, trials, seed)
            log.write(res.to_dict())
            z = amicl.paper_z(res, reported)
            setting = f"D={cfg.dim}, K={cfg.classes}, T={cfg.length}"
            lines.append(
                f"| {setting} | {cfg.a} | {_fmt_range(*reported)} | {res.accuracy:.4f} "
                f"± {res.stderr:.4f} | {z:.1f} | {'yes' if z < 3 else '**no**'} |"
            )

    sweeps = [
        (
            "a",
            [round(0.05 * i, 2) for i in range(41)],
            base.with_(classes=50),
            ["dot", "pearson"],
            "paper: 0 below a≈0.75, a steep rise through a=1, ≈0.95 by a=1.35, 1.0 above 1.5; "
            'Pearson: same onset, plateau near 0.87. The paper\'s "≈0.45 at a=1" is read off '
            "its figure's steep part: the nearest points plotted are a=0.99 and 1.01, and the "
            "notebook's own logic gives ≈0.27 and ≈0.39 there and 0.325 at exactly a=1, as in "
            "the table; here K=50 (the notebook draws from K-1=49), so a=1 lands a little lower",
        ),
        ("length", [10, 20, 50, 100, 200, 500, 1000], base, ["dot"], "paper: 1.0 throughout (a=2)"),
        (
            "dim",
            [10, 20, 40, 100, 500, 1000],
            base,
            ["dot"],
            "paper: about 0.73, 0.95, 0.99, then 1.0 (a=2)",
        ),
    ]
    lines += ["", "### Sweeps", ""]
    for over, values, cfg0, sims, paper in sweeps:
        rows = []
        with CSVLog(out / f"amicl_sweep_{over}.csv", ["series", *fields]) as log:
            for sim in sims:
                configs = amicl.sweep_configs(cfg0.with_(similarity=sim), over, values)
                trials = n_sweep if over == "a" else max(200, n_sweep // 4)
                for res in tqdm(
                    amicl.sweep(configs, trials, seed),
                    total=len(configs),
                    desc=f"AMICL sweep {over} ({sim})",
                    disable=None,
                ):
                    row = {"series": sim, **res.to_dict()}
                    log.write(row)
                    rows.append(row)
        fixed = {"a": cfg0.a, "dim": cfg0.dim, "classes": cfg0.classes, "length": cfg0.length}
        fixed.pop(over)
        names = {"a": "a", "dim": "D", "classes": "K", "length": "T"}
        png = plot_sweep(
            rows,
            over,
            out / f"amicl_sweep_{over}.png",
            title=f"AMICL accuracy vs {over} ("
            + ", ".join(f"{names[k]}={v:g}" for k, v in fixed.items())
            + f"; {trials:,} trials a point, ± 1.96 SE)",
        )
        lines += [
            f"**Accuracy vs {over}** ({paper}).",
            "",
            f"![accuracy vs {over}]({png.name})",
            "",
        ]
        shown = [r for r in rows if over != "a" or r["a"] in (0.5, 0.75, 1.0, 1.25, 1.35, 1.5, 2.0)]
        lines.append(
            " | ".join(f"{r['series']} {over}={r[over]}: {r['accuracy']:.3f}" for r in shown)
        )
        lines.append("")

    lines += [
        "### Attention maps",
        "",
        f"One trial each (D={base.dim}, K={base.classes}, T={base.length}, seed {seed}). Rows: "
        "query position t; the last row is the query, whose label is hidden. Columns: key "
        "position i. Attention is causal (i <= t), so all three panels are blank above the "
        "diagonal. Left: scores k_i·q_t; middle: their softmax over the row "
        f"(β={base.beta:g}: the scores are small, so the weights stay near 1/(t+1) and fade "
        "down the rows); right: the argmax, one cell a row. In every row but the last the key "
        "is that position's own query (k_t = q_t), so a row's own cell is usually its best "
        "match: the bright diagonal. The last key alone is a random vector, so that the query "
        "cannot pick its own position, whose value is the hidden (zero) label: the query "
        "row's own cell, bottom right, is dark, a chance match that still counts. The read-out "
        "is the value at the last row's argmax.",
        "",
    ]
    for a in (2.0, 1.0):
        maps, answer = amicl.attention_trial(base.with_(a=a), seed)
        png = plot_attention(
            maps, out / f"amicl_attention_a{a:g}.png", title=f"AMICL attention, a={a}"
        )
        where = ", ".join(map(str, answer["labels"]))
        verdict = "right" if answer["right"] else "wrong"
        lines += [
            f"![attention maps a={a}]({png.name})",
            "",
            f"a={a:g}: the query's argmax picks key {answer['picked']}; the right label sits "
            f"at {where}: the read-out is **{verdict}**.",
            "",
        ]
    return "\n".join(lines)


QUICK_ICL = {"steps": 1000, "batch": 64, "eval_every": 250, "eval_size": 400}
QUICK_AMICL_TRIALS = (20_000, 2_000)  # table rows, sweep points


def icl_section(out: Path, quick: bool, seed: int) -> str:
    """Experiment 1 (paper.md section 3): a ToyICL grid and its paired statistics."""
    from attnstreams.experiments.icl.report import write_report
    from attnstreams.experiments.icl.train import ICLGrid, ICLTrainConfig, train

    device = "cuda" if torch.cuda.is_available() and not quick else "cpu"
    if quick:  # CPU-sized: shows the pipeline, far too short for ICL to emerge
        variants, seeds = ["none", "value"], [seed, seed + 1, seed + 2]
        cfg = ICLTrainConfig(**QUICK_ICL)
    else:
        variants = [
            "none",
            "value",
            "key",
            "query",
            "value-learned",
            "value-first",
            "value-first-learned",
        ]
        seeds = list(range(seed, seed + 10))
        cfg = ICLTrainConfig(precision="tf32")
    run_dir = out / "icl"
    grid = ICLGrid(variants, seeds, cfg, device, compile=device == "cuda")
    summary = train(grid, run_dir)
    report = write_report(run_dir)
    text = report.read_text()
    result = text[text.index("## Result") + len("## Result") : text.index("## Steps to threshold")]
    return "\n".join(
        [
            "## 2. In-context classification with a two-layer transformer",
            "",
            f"{len(variants)} variants x {len(seeds)} seeds x {cfg.steps:,} steps (batch "
            f"{cfg.batch}) on {summary['device']} in {summary['wall_s']:.0f} s"
            + (
                ": a CPU-sized smoke run, far too short for in-context learning to emerge; the "
                "full grid's result is in results/icl-grid/ of the repository."
                if quick
                else "."
            ),
            "Full statistics: [icl/report.md](icl/report.md).",
            result.replace("## ", "### "),
            "![accuracy curves](icl/curves.png)",
            "",
        ]
    )


QUICK_LM = {
    "steps": 150,
    "batch": 16,
    "block_size": 64,
    "warmup": 10,
    "eval_every": 50,
    "eval_batches": 4,
    "ioi_prompts": 100,
    "dropout": 0.0,
}
QUICK_LM_TOKENS = 300_000


def lm_section(out: Path, quick: bool, seed: int) -> str:
    """Experiment 2 (paper.md section 4): baseline vs value-stream LMs with IOI metrics."""
    from attnstreams.experiments.icl.report import plural
    from attnstreams.experiments.lm.data import DataConfig
    from attnstreams.experiments.lm.grid import run_grid
    from attnstreams.experiments.lm.report import write_report
    from attnstreams.experiments.lm.train import LMTrainConfig

    device = "cuda" if torch.cuda.is_available() and not quick else "cpu"
    if quick:  # tiny preset on generated stories: the pipeline, not the paper's scale
        data = DataConfig(
            vocab_size=1024,
            tokenizer_docs=2000,
            train_tokens=QUICK_LM_TOKENS,
            val_tokens=20_000,
            seed=seed,
        )
        cfg = LMTrainConfig(preset="tiny", **QUICK_LM)
        seeds = [seed]
    else:
        data = DataConfig(train_tokens=100_000_000, seed=seed)
        cfg = LMTrainConfig(steps=6104, eval_every=500, compile=device == "cuda")
        seeds = [seed, seed + 1, seed + 2]
    grid_dir = out / "lm"
    run_grid(["none", "value"], seeds, data, cfg, grid_dir, device)
    text = write_report(grid_dir).read_text()
    start = text.index("## Numbers at the end")
    table = text[text.index("| metric", start) : text.index("\n## ", start + 1)].strip()
    return "\n".join(
        [
            "## 3. Language models: IOI and in-context metrics",
            "",
            f"`{cfg.preset}` preset, baseline vs value stream, {plural(len(seeds), 'seed')}, "
            f"{cfg.steps} "
            f"steps of {cfg.batch} x {cfg.block_size or 'preset'} tokens on generated stories"
            + (
                " (CPU-sized: far from where IOI could emerge; the real-text GPU result is in "
                "results/lm-real/)."
                if quick
                else "."
            ),
            "Full report: [lm/report.md](lm/report.md).",
            "",
            table,
            "",
            "![LM curves](lm/curves.png)",
            "",
        ]
    )


def reproduce(out: str | Path | None, quick: bool = True, seed: int = 0) -> Path:
    """Run every section and write report.md; returns its path. A folder that holds any of
    its outputs is refused before anything is written (a reproduction starts afresh)."""
    if out is not None and Path(out).is_dir():
        held = sorted(
            p.name
            for p in Path(out).iterdir()
            if p.name in ("report.md", "icl", "lm") or p.name.startswith("amicl_")
        )
        if held:
            raise ConfigError(
                f"{out} already holds a reproduction ({', '.join(held)}): choose another "
                "--out or remove them (a reproduction does not resume)"
            )
    run_dir = new_run_dir(out)
    t0 = time.perf_counter()
    sections = [
        amicl_section(run_dir, quick, seed),
        icl_section(run_dir, quick, seed),
        lm_section(run_dir, quick, seed),
    ]
    took = time.perf_counter() - t0
    device = (
        torch.cuda.get_device_name() if torch.cuda.is_available() else platform.processor() or "CPU"
    )
    header = [
        f"# attnstreams reproduction{' (quick)' if quick else ''}",
        "",
        f"attnstreams {__version__}, torch {torch.__version__}, {device}, "
        f"{torch.get_num_threads()} threads; seed {seed}; {took:.0f} s; "
        f"{time.strftime('%Y-%m-%d %H:%M')}.",
        f"Command: `attnstreams reproduce{' --quick' if quick else ''} --seed {seed}`.",
        "",
    ]
    return write_text_atomic(run_dir / "report.md", "\n".join(header + sections) + "\n")


def reproduction_results(run_dir: Path) -> dict:
    """A reproduction's numbers as data (`reproduce --json`): the AMICL table's rows, the toy
    grid's steps to threshold with their statistics, and the LM arms against the baseline."""
    import csv

    from attnstreams.experiments.icl.report import grid_results
    from attnstreams.experiments.lm.report import final_comparisons, load_grid

    with (run_dir / "amicl_table.csv").open() as f:
        table = list(csv.DictReader(f))
    runs, _ = load_grid(run_dir / "lm")
    arms = list(runs)
    rows, _ = final_comparisons(runs, arms, "none" if "none" in runs else arms[0])
    lm = [
        {k: c[k] for k in ("key", "arm", "step", "seeds", "paired")}
        | {"base": c["base"].tolist(), "values": c["values"].tolist()}
        for c in rows
    ]
    return {"amicl": table, "icl": grid_results(run_dir / "icl"), "lm": lm}
