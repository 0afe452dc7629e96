"""Figures (matplotlib, PNG). Imported lazily: the headless Agg backend, no display needed."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from attnstreams.run.stats import MIN_INTERVAL_N  # noqa: E402

LINE_STYLES = ("-", "-.", ":")  # a curve's style, one for each pass through the colour cycle


def _save(fig, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp, dpi=120, bbox_inches="tight")
    plt.close(fig)
    tmp.replace(path)
    return path


def plot_sweep(
    rows: list[dict], over: str, path: Path, title: str = "", series: str = "series"
) -> Path:
    """Accuracy against the swept parameter, one line per series, +/- 1.96 binomial SE."""
    by_series: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        by_series[str(r.get(series, ""))].append(r)
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for name, rs in by_series.items():
        rs = sorted(rs, key=lambda r: r[over])
        x = [r[over] for r in rs]
        y = [r["accuracy"] for r in rs]
        e = [1.96 * r["stderr"] for r in rs]
        ax.errorbar(x, y, yerr=e, marker="o", ms=3, capsize=2, label=name or None)
    if over in ("length", "dim", "classes") and min(r[over] for r in rows) > 0:
        ax.set_xscale("log")
    ax.set_xlabel(over)
    ax.set_ylabel("accuracy")
    ax.set_ylim(-0.03, 1.03)
    ax.grid(alpha=0.3)
    if len(by_series) > 1 or next(iter(by_series)):
        ax.legend(fontsize=8)
    ax.set_title(title, fontsize=9)
    return _save(fig, path)


def plot_attention(maps: dict, path: Path, title: str = "") -> Path:
    """Side-by-side heat maps (query position down, key position across)."""
    fig, axes = plt.subplots(1, len(maps), figsize=(4.8 * len(maps), 4), constrained_layout=True)
    for i, (ax, (name, m)) in enumerate(zip(axes, maps.items(), strict=True)):
        im = ax.imshow(m.numpy(), cmap="viridis", interpolation="nearest")
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("key position")
        if i == 0:
            ax.set_ylabel("query position")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.yaxis.get_major_locator().set_params(integer=True)
        fig.colorbar(im, ax=ax, shrink=0.8)
    fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def plot_bands(
    panels: dict[str, dict[str, tuple]],
    path: Path,
    ylabel: str | dict[str, str] = "",
    xlabel: str = "step",
    hlines: tuple[float, ...] | dict[str, tuple[float, ...]] = (),
    logx: bool = False,
    ylims: dict[str, tuple[float, float]] | None = None,
    hline_labels: dict[float, str] | None = None,
) -> Path:
    """One panel per entry; in each, one line per label: the mean over seeds and a +/- 1 sd
    band, or under 5 seeds every seed's own thin line beside the mean (a band of 2 seeds says
    little). panels[title][label] = (x (P,), y (seeds, P)). ylabel and hlines (dashed
    reference lines, such as chance) apply to every panel or, as dicts, by title;
    hline_labels[value] is written on the line at that value wherever one is drawn (dashed
    lines all look alike, so a legend could not tell them apart); ylims fixes some panels'
    ranges (an accuracy from 0 to 1, not auto-scaled to a 1e-3 wobble)."""

    n = len(panels)
    cols = 2 if n > 1 else 1
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(
        rows, cols, figsize=(5.2 * cols, 3.6 * rows), squeeze=False, constrained_layout=True
    )
    colours = len(plt.rcParams["axes.prop_cycle"].by_key()["color"])
    for ax, (title, lines) in zip(axes.flat, panels.items(), strict=False):  # spare axes: off
        for i, (label, (x, y)) in enumerate(lines.items()):
            y = np.asarray(y, dtype=float)
            mean = y.mean(0)
            # Past the colour cycle a colour comes back: another line style tells them apart.
            ls = LINE_STYLES[i // colours % len(LINE_STYLES)]
            (line,) = ax.plot(x, mean, label=f"{label} (n={y.shape[0]})", lw=1.4, ls=ls)
            if y.shape[0] >= MIN_INTERVAL_N:
                sd = y.std(0)
                ax.fill_between(x, mean - sd, mean + sd, alpha=0.2)
            elif y.shape[0] > 1:
                for seed in y:
                    ax.plot(x, seed, color=line.get_color(), lw=0.6, alpha=0.5)
        for h in hlines.get(title, ()) if isinstance(hlines, dict) else hlines:
            ax.axhline(h, color="grey", lw=0.6, ls="--")
            if hline_labels and h in hline_labels:  # x in axes units: at the left, any scale
                ax.text(
                    0.01,
                    h,
                    hline_labels[h],
                    transform=ax.get_yaxis_transform(),
                    fontsize=7,
                    color="grey",
                    va="bottom",
                )
        ax.set_title(title, fontsize=10)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel.get(title, "") if isinstance(ylabel, dict) else ylabel)
        if logx:
            ax.set_xscale("log")
        if ylims and title in ylims:
            ax.set_ylim(*ylims[title])
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right" if hline_labels else "best")  # labels: left
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    return _save(fig, path)


def plot_paired(
    values: dict[str, list], seeds: list, path: Path, ylabel: str, title: str = ""
) -> Path:
    """Per-seed values of each variant, a line joining each seed across variants."""

    fig, ax = plt.subplots(figsize=(1.3 * len(values) + 2.5, 3.6))
    names = list(values)
    v = np.array([[np.nan if x is None else x for x in values[k]] for k in names], dtype=float)
    for j in range(v.shape[1]):
        ax.plot(range(len(names)), v[:, j], color="grey", alpha=0.4, lw=0.8)
    for i in range(len(names)):
        ax.scatter(np.full(v.shape[1], i), v[i], s=14, zorder=3)
    ax.set_xticks(range(len(names)), names, rotation=20, fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3, axis="y")
    return _save(fig, path)


def plot_intervals(panels: dict[str, list[dict]], path: Path, xlabel: str = "") -> Path:
    """A forest plot a panel: each row's mean difference and its interval (None below 5 pairs:
    no whisker), every pair's own difference as a dot, and a line at 0 (no difference). Rows:
    dicts of label, mean, low, high, each; drawn top to bottom in the order given."""
    n = len(panels)
    rows = max(len(r) for r in panels.values())
    size = (6.5, (0.3 * rows + 1.1) * n + 0.4)
    fig, axes = plt.subplots(n, 1, figsize=size, squeeze=False, layout="constrained")
    for ax, (title, entries) in zip(axes.flat, panels.items(), strict=True):
        y = np.arange(len(entries))[::-1]
        for yi, e in zip(y, entries, strict=True):
            ax.scatter(e["each"], np.full(len(e["each"]), yi), s=9, color="grey", alpha=0.5)
            if e["low"] is not None:
                ax.plot([e["low"], e["high"]], [yi, yi], color="C0", lw=2)
            ax.scatter([e["mean"]], [yi], s=30, color="C0", zorder=3)
        ax.axvline(0, color="k", lw=0.8, ls="--")
        ax.set_yticks(y, [e["label"] for e in entries], fontsize=8)
        ax.set_title(title, fontsize=9)
        ax.tick_params(axis="x", labelsize=8)
        ax.grid(alpha=0.3, axis="x")
    axes.flat[-1].set_xlabel(xlabel, fontsize=8)
    return _save(fig, path)
