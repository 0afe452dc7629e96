"""Paired statistics for seed-matched comparisons (scipy.stats)."""

from __future__ import annotations

import math

import numpy as np
from scipy import stats


def describe(x) -> dict:
    x = np.asarray(x, dtype=float)
    if x.size == 0:
        return {"n": 0, "mean": None, "sd": None, "median": None}
    return {
        "n": int(x.size),
        "mean": float(x.mean()),
        "sd": float(x.std(ddof=1)) if x.size > 1 else None,
        "median": float(np.median(x)),
    }


def paired(baseline, variant, seed: int = 0) -> dict:
    """variant - baseline on matched pairs: mean, sd, median, 95% bootstrap CI of the mean
    difference, two-sided Wilcoxon signed-rank p, and the relative change of the means."""
    a = np.asarray(baseline, dtype=float)
    b = np.asarray(variant, dtype=float)
    if a.shape != b.shape:
        raise ValueError("paired samples must have the same length")
    d = b - a
    out = describe(d)
    out.update(ci_low=None, ci_high=None, p_wilcoxon=None, relative=None)
    if d.size == 0:
        return out
    if a.mean() != 0:
        out["relative"] = float(b.mean() / a.mean() - 1.0)
    if d.size >= 2:
        if np.all(d == d[0]):
            out["ci_low"] = out["ci_high"] = float(d[0])
        else:
            ci = stats.bootstrap(
                (d,),
                np.mean,
                confidence_level=0.95,
                n_resamples=10_000,
                method="percentile",
                random_state=np.random.default_rng(seed),
            ).confidence_interval
            out["ci_low"], out["ci_high"] = float(ci.low), float(ci.high)
    if np.any(d != 0):
        p = stats.wilcoxon(d).pvalue
        out["p_wilcoxon"] = None if math.isnan(p) else float(p)
    else:
        out["p_wilcoxon"] = 1.0
    return out
