"""Trade-off curves: mixtures of two methods, and Quad's sweep, in the plane of general (breadth) against reference
(target) bits per byte, and the check that matters most: is Quad below the mixture curves?

Any method can be placed between random (broad, off-target) and top-k or DSIR (on-target, narrow) by mixing their
selections. A mixture family `a+b` is the curve through a's runs (share 0 from b), the mixture points (shares λ), and
b's runs (share 1), in order of the share. Quad is worth its machinery only if, at the reference BPB Quad reaches,
the curve's general BPB (interpolated linearly along it) is worse than Quad's. Each seed gives one curve (the runs of
every point with that seed: matched training) and one difference; the differences are tested as a paired
comparison, like every other claim (`compare/stats.py`).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

from quadselect.compare.stats import paired

QUAD = "quad"


def curve_at(points: Sequence[tuple[float, float]], y: float) -> float | None:
    """The x at which the polyline through `points` ((x, y) pairs, in the curve's order) first reaches `y`, by
    linear interpolation within the segment that spans it; None when no segment spans `y` (Quad is beyond the curve's
    ends: better on target than its on-target end, or worse than its broad end)."""
    for (x0, y0), (x1, y1) in itertools.pairwise(points):
        if min(y0, y1) <= y <= max(y0, y1):
            if y1 == y0:
                return min(x0, x1)
            t = (y - y0) / (y1 - y0)
            return x0 + t * (x1 - x0)
    return None


def family_members(records: Sequence[dict[str, Any]], family: str) -> dict[str, float]:
    """label → position of every run label on the curve of `family` (`a+b`: a at 0, the mixtures at λ, b at 1)."""
    a, b = family.split("+")
    members = {a: 0.0, b: 1.0}
    for r in records:
        if r.get("family") == family:
            members[r["label"]] = float(r["position"])
    return members


def seed_curves(
    records: Sequence[dict[str, Any]], members: dict[str, float], x: str, y: str
) -> dict[int, list[tuple[float, float]]]:
    """seed → the curve's points (x, y) of that seed, in order of position; a seed missing a point is left out (its
    curve would skip a segment)."""
    by_seed: dict[int, dict[float, tuple[float, float]]] = {}
    for r in records:
        if r["label"] in members and r.get(x) is not None and r.get(y) is not None:
            by_seed.setdefault(r["seed"], {})[members[r["label"]]] = (float(r[x]), float(r[y]))
    return {
        seed: [points[p] for p in sorted(points)] for seed, points in by_seed.items() if len(points) == len(members)
    }


def mixture_comparisons(
    records: Sequence[dict[str, Any]], families: Sequence[str], x: str, y: str, *, quad: str = QUAD
) -> list[dict[str, Any]]:
    """For each family, Quad's `x` against the family curve's `x` at Quad's `y`, seed by seed, paired: the same fields
    as `stats.paired` plus `family`, `metric` (x), `at` (y), and the seeds where Quad was beyond the curve."""
    quad_runs = {r["seed"]: r for r in records if r["label"] == quad}
    rows = []
    for family in families:
        curves = seed_curves(records, family_members(records, family), x, y)
        mine: dict[int, float | None] = {}
        theirs: dict[int, float | None] = {}
        beyond = []
        for seed, run in sorted(quad_runs.items()):
            if seed not in curves or run.get(x) is None or run.get(y) is None:
                continue
            at = curve_at(curves[seed], float(run[y]))
            if at is None:
                beyond.append(seed)
                continue
            mine[seed], theirs[seed] = float(run[x]), at
        row = {"a": quad, "b": f"mix:{family}", "family": family, "metric": x, "at": y, "higher_is_better": False}
        row.update(paired(mine, theirs))
        row["beyond_curve_seeds"] = beyond
        if beyond and row["p"] is None:
            row["reason"] = (
                f"Quad's {y} lies beyond the curve's ends with seeds {beyond} (no point of the curve to compare with)"
            )
        rows.append(row)
    return rows
