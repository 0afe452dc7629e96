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


def censored_comparison(baseline: list, variant: list, censor: float) -> dict:
    """Seed-paired times-to-event where None means "never within the run" (right-censored).

    sooner/later count the pairs whose order is known (both reached, or only one did); the
    sign test is exact on those. `bound` is the relative change of the means with censored
    runs counted at `censor`: when only the baseline is censored the true change is at least
    this large a speed-up, when only the variant is, at least this large a slow-down.
    """
    sooner = later = ties = unknown = 0
    for a, b in zip(baseline, variant, strict=True):
        if a is None and b is None:
            unknown += 1
        elif a is None or (b is not None and b < a):
            sooner += 1
        elif b is None or b > a:
            later += 1
        else:
            ties += 1
    n = sooner + later
    p = float(stats.binomtest(sooner, n, 0.5).pvalue) if n else None
    a = np.array([censor if x is None else x for x in baseline], dtype=float)
    b = np.array([censor if x is None else x for x in variant], dtype=float)
    bound = float(b.mean() / a.mean() - 1.0) if a.mean() else None
    return {
        "sooner": sooner,
        "later": later,
        "ties": ties,
        "unknown": unknown,
        "p_sign": p,
        "bound": bound,
    }
