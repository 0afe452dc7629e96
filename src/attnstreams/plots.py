"""Figures (matplotlib, PNG). Imported lazily: the headless Agg backend, no display needed."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


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
