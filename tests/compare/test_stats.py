"""The statistics of a comparison over seeds, against scipy and against hand computations on fixed numbers: the
t-interval of a mean, the paired t-test over matched seeds, and the seeded bootstrap interval of a mean difference."""

from __future__ import annotations

import math

import pytest
from scipy import stats

from quadselect.compare.stats import bootstrap_interval, paired, summarize


def test_summary_is_mean_sample_std_and_the_t_interval() -> None:
    s = summarize([4.0, 4.1, None, 4.3, math.nan])  # missing values are dropped
    assert s["n"] == 3 and s["values"] == [4.0, 4.1, 4.3]
    assert s["mean"] == pytest.approx(4.133333, rel=1e-6)
    assert s["std"] == pytest.approx(0.1527525, rel=1e-6)  # ddof = 1
    # mean ± t(0.975, 2 df) · std/√3 = 4.1333 ± 4.302653 · 0.0881917
    assert s["ci95"] == pytest.approx([3.753875, 4.512792], rel=1e-6)
    expected = stats.t.interval(0.95, 2, loc=12.4 / 3, scale=0.1527525 / math.sqrt(3))
    assert s["ci95"] == pytest.approx(list(expected), rel=1e-6)


def test_one_value_has_no_spread_and_none_has_no_mean() -> None:
    assert summarize([5.0]) == {"mean": 5.0, "std": None, "ci95": None, "n": 1, "values": [5.0]}
    assert summarize([None])["mean"] is None and summarize([])["n"] == 0


def test_the_paired_test_is_scipys_on_the_matched_seeds() -> None:
    a = {0: 4.0, 1: 4.1, 2: 4.3, 7: 1.0}  # seed 7 has no partner: left out
    b = {0: 5.0, 1: 5.0, 2: 5.5, 9: 9.0}
    c = paired(a, b)
    assert c["seeds"] == [0, 1, 2] and c["n_pairs"] == 3 and c["reason"] is None
    assert c["mean_a"] == pytest.approx(4.133333, rel=1e-6) and c["mean_b"] == pytest.approx(5.166667, rel=1e-6)
    assert c["mean_diff"] == pytest.approx(-1.033333, rel=1e-6)
    assert c["p"] == pytest.approx(stats.ttest_rel([4.0, 4.1, 4.3], [5.0, 5.0, 5.5]).pvalue, rel=1e-9)
    t = -1.033333 / (0.1527525 / math.sqrt(3))  # differences −1.0, −0.9, −1.2; df = 2: p = 1 − |t|/√(t² + 2)
    assert c["p"] == pytest.approx(1 - abs(t) / math.sqrt(t * t + 2), rel=1e-4)
    assert c["p"] == pytest.approx(0.0072054, rel=1e-4)
    lo, hi = c["ci95"]
    assert -1.2 - 1e-9 <= lo <= c["mean_diff"] <= hi <= -0.9 + 1e-9  # a bootstrap mean stays within their range


def test_pairing_is_by_seed_not_by_position() -> None:
    # Unpaired, a and b overlap; paired by seed, a is 0.1 lower on every seed but one.
    a = {0: 1.0, 1: 2.0, 2: 3.0}
    b = {2: 3.1, 0: 1.1, 1: 2.2}
    c = paired(a, b)
    assert c["mean_diff"] == pytest.approx(-0.133333, rel=1e-5)
    assert c["p"] == pytest.approx(stats.ttest_rel([1.0, 2.0, 3.0], [1.1, 2.2, 3.1]).pvalue, rel=1e-9)


def test_fewer_than_two_pairs_or_no_spread_gives_no_p_value_and_says_why() -> None:
    one = paired({0: 4.0, 1: 4.2}, {1: 5.0, 2: 5.1})
    assert one["p"] is None and one["ci95"] is None and one["n_pairs"] == 1
    assert one["mean_diff"] == pytest.approx(-0.8) and "1 matched seed" in one["reason"]
    none = paired({0: 4.0}, {1: 5.0, 2: None})
    assert none["p"] is None and none["mean_diff"] is None and "0 matched seeds" in none["reason"]
    flat = paired({0: 0.0, 1: 0.0, 2: 0.0}, {0: 0.0, 1: 0.0, 2: 0.0})  # e.g. a cloze accuracy of 0 everywhere
    assert flat["p"] is None and flat["mean_diff"] == 0.0 and "same for every seed" in flat["reason"]
    rounding = paired({0: 3.0, 1: 3.01, 2: 3.02}, {0: 3.03, 1: 3.04, 2: 3.05})  # −0.03 up to float rounding
    assert rounding["p"] is None and rounding["mean_diff"] == pytest.approx(-0.03)


def test_the_bootstrap_is_deterministic_for_a_seed_and_contains_the_true_difference() -> None:
    # A constructed difference: true mean 0.5, symmetric noise around it.
    diffs = [0.5 + e for e in (-0.3, 0.3, -0.1, 0.1, -0.2, 0.2, 0.05, -0.05)]
    first = bootstrap_interval(diffs, seed=3)
    assert bootstrap_interval(diffs, seed=3) == first
    assert bootstrap_interval(diffs, seed=4) != first
    lo, hi = first
    assert 0.2 < lo < 0.5 < hi < 0.8
    # The spread of a mean of 8: about ±1.96 · sd/√8 = ±0.13 around 0.5.
    assert hi - lo == pytest.approx(2 * 1.96 * stats.tstd(diffs) * math.sqrt(7 / 8) / math.sqrt(8), rel=0.15)
