"""Mixture curves: linear interpolation along a curve on hand-computed numbers, and Quad against a family's curve,
seed by seed, paired."""

from __future__ import annotations

import pytest
from scipy import stats

from quadselect.compare.curves import curve_at, mixture_comparisons


def test_curve_at_interpolates_within_the_segment_that_spans_y() -> None:
    # random (x 2.0, y 3.0) → λ 0.5 (x 2.5, y 2.6) → top-k (x 3.5, y 2.0)
    curve = [(2.0, 3.0), (2.5, 2.6), (3.5, 2.0)]
    assert curve_at(curve, 2.8) == pytest.approx(2.25)  # halfway along the first segment
    assert curve_at(curve, 2.3) == pytest.approx(3.0)  # halfway along the second
    assert curve_at(curve, 2.6) == pytest.approx(2.5)  # on a point
    assert curve_at(curve, 1.9) is None and curve_at(curve, 3.1) is None  # beyond the ends
    assert curve_at([(2.0, 3.0), (4.0, 3.0)], 3.0) == 2.0  # a flat segment: its broad end


def _run(label: str, seed: int, general: float, reference: float, **extra: object) -> dict:
    return {"label": label, "seed": seed, "general_bpb": general, "reference_bpb": reference, **extra}


def test_quad_is_compared_with_the_curve_at_its_own_reference_metric_paired_over_seeds() -> None:
    runs = []
    quad_points = {0: (2.2, 2.8), 1: (2.3, 2.5), 2: (2.1, 2.75)}
    for seed in range(3):
        shift = 0.1 * seed
        runs += [
            _run("random", seed, 2.0 + shift, 3.0),
            _run("mix:random+topk_influence@0.5", seed, 2.5 + shift, 2.6, family="random+topk_influence", position=0.5),
            _run("topk_influence", seed, 3.5 + shift, 2.0),
            _run("quad", seed, *quad_points[seed]),
        ]
    [row] = mixture_comparisons(runs, ["random+topk_influence"], "general_bpb", "reference_bpb")
    # seed 0: y 2.8 → x 2.25; seed 1: y 2.5 on the second segment (t = 1/6) → 2.6 + 1/6 = 2.7667; seed 2: y 2.75 →
    # 2.2 + 0.3125 = 2.5125 (the curve of seed s is shifted right by 0.1 s)
    curve = [2.25, 2.6 + 1.0 / 6.0, 2.2 + 0.3125]
    quad = [2.2, 2.3, 2.1]
    assert row["mean_b"] == pytest.approx(sum(curve) / 3)
    assert row["mean_diff"] == pytest.approx((sum(quad) - sum(curve)) / 3)
    assert row["p"] == pytest.approx(stats.ttest_rel(quad, curve).pvalue)
    assert row["family"] == "random+topk_influence" and row["beyond_curve_seeds"] == []


def test_a_seed_where_quad_is_beyond_the_curve_is_left_out_and_said() -> None:
    runs = [
        _run("random", 0, 2.0, 3.0),
        _run("topk_influence", 0, 3.5, 2.0),
        _run("quad", 0, 2.2, 1.9),  # more on target than top-k itself
        _run("random", 1, 2.0, 3.0),
        _run("topk_influence", 1, 3.5, 2.0),
        _run("quad", 1, 2.2, 2.5),
    ]
    [row] = mixture_comparisons(runs, ["random+topk_influence"], "general_bpb", "reference_bpb")
    assert row["beyond_curve_seeds"] == [0] and row["seeds"] == [1] and row["p"] is None
    assert "beyond the curve's ends with seeds [0]" in row["reason"]
