"""The statistics of a method comparison over a few seeds: a metric's mean, spread and 95% t-interval, and the paired
comparison of two methods trained with the same seeds (paired t-test, bootstrap interval of the mean difference).

With 3 seeds a "gap larger than 2σ" rule ignores that the two runs of one seed share their training seed and
evaluation sample; pairing by seed removes that shared part of the noise, and the t distribution accounts for how few
seeds there are.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy import stats

LEVEL = 0.95
RESAMPLES = 10_000


def summarize(values: Sequence[float | None]) -> dict[str, Any]:
    """Mean, sample standard deviation, 95% t-interval of the mean, count and the values (missing ones dropped).

    The spread and the interval are None below two values: one seed says nothing about the next one."""
    arr = np.asarray([v for v in values if v is not None and not math.isnan(v)], dtype=np.float64)
    if arr.size == 0:
        return {"mean": None, "std": None, "ci95": None, "n": 0, "values": []}
    mean = float(arr.mean())
    std = float(arr.std(ddof=1)) if arr.size > 1 else None
    ci = None
    if std == 0.0:  # every seed gave the same value (scipy's interval would be NaN)
        ci = [mean, mean]
    elif std is not None:
        lo, hi = stats.t.interval(LEVEL, arr.size - 1, loc=mean, scale=std / math.sqrt(arr.size))
        ci = [float(lo), float(hi)]
    return {"mean": mean, "std": std, "ci95": ci, "n": int(arr.size), "values": arr.tolist()}


def bootstrap_interval(diffs: Sequence[float], *, resamples: int = RESAMPLES, seed: int = 0) -> list[float]:
    """Percentile bootstrap 95% interval of the mean of `diffs`: resample the pairs with replacement, seeded, so the
    same numbers always give the same interval."""
    arr = np.asarray(diffs, dtype=np.float64)
    picks = np.random.default_rng(seed).integers(0, arr.size, size=(resamples, arr.size))
    lo, hi = np.percentile(arr[picks].mean(axis=1), [50 * (1 - LEVEL), 50 * (1 + LEVEL)])
    return [float(lo), float(hi)]


def paired(
    a: Mapping[int, float | None], b: Mapping[int, float | None], *, resamples: int = RESAMPLES, seed: int = 0
) -> dict[str, Any]:
    """Compare `a` with `b` (seed → value) on the seeds both measured: mean of a − b, its bootstrap 95% interval and
    the two-sided paired t-test's p-value.

    `p` is None, with a `reason`, when the test cannot be made: fewer than two matched seeds, or differences that do
    not vary from seed to seed (no spread to test against)."""
    seeds = sorted(s for s in a.keys() & b.keys() if _number(a[s]) and _number(b[s]))
    xa = np.asarray([a[s] for s in seeds], dtype=np.float64)
    xb = np.asarray([b[s] for s in seeds], dtype=np.float64)
    diffs = xa - xb
    out: dict[str, Any] = {
        "seeds": seeds,
        "n_pairs": len(seeds),
        "mean_a": float(xa.mean()) if seeds else None,
        "mean_b": float(xb.mean()) if seeds else None,
        "mean_diff": float(diffs.mean()) if seeds else None,
        "ci95": None,
        "p": None,
        "reason": None,
    }
    if len(seeds) < 2:
        out["reason"] = f"{len(seeds)} matched seed{'s' if len(seeds) != 1 else ''}: a paired test needs 2 or more"
    elif np.ptp(diffs) <= 1e-9 * max(1.0, float(np.abs(xa).max()), float(np.abs(xb).max())):  # rounding noise only
        out["reason"] = "the difference is the same for every seed: no spread to test against"
    else:
        out["ci95"] = bootstrap_interval(diffs, resamples=resamples, seed=seed)
        out["p"] = float(stats.ttest_rel(xa, xb).pvalue)
    return out


def _number(value: float | None) -> bool:
    return value is not None and not math.isnan(value)
