"""Sampled top-k (`quadselect.select.sampling`) against its definition: an order drawn without replacement with
probability ∝ exp(s / τ) at each draw (Plackett–Luce), checked by the frequencies of many seeded draws against the
probabilities computed by hand; and the limits (hard top-k, uniform) and the budget rule."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from quadselect.select.baselines import topk_selection
from quadselect.select.budget import within_budget

DRAWS = 20_000


def score_order(scores: np.ndarray, sampling: str = "hard", temperature: float = 1.0, seed: int = 0) -> np.ndarray:
    """The whole order: one token per document and a budget no prefix short of every scored document fills."""
    return topk_selection(scores, np.ones(scores.size, dtype=np.int64), scores.size, sampling, temperature, seed)


def _plackett_luce(weights: np.ndarray, order: tuple[int, ...]) -> float:
    """P(the order's first elements are drawn in this order), drawing without replacement ∝ weights."""
    left, prob = weights.copy(), 1.0
    for i in order:
        prob *= left[i] / left.sum()
        left[i] = 0.0
    return prob


def _pair_frequencies(scores: np.ndarray, sampling: str, temperature: float) -> dict[tuple[int, int], float]:
    counts: dict[tuple[int, int], int] = {}
    for seed in range(DRAWS):
        order = score_order(scores, sampling, temperature, seed)
        key = (int(order[0]), int(order[1]))
        counts[key] = counts.get(key, 0) + 1
    return {key: n / DRAWS for key, n in counts.items()}


@pytest.mark.parametrize(("sampling", "temperature"), [("gumbel", 0.5), ("gumbel", 2.0), ("temperature", 1.0)])
def test_the_first_two_draws_follow_plackett_luce(sampling: str, temperature: float) -> None:
    scores = np.array([0.3, 1.1, -0.4, 0.8])
    values = (scores - scores.mean()) / scores.std() if sampling == "temperature" else scores
    weights = np.exp(values / temperature)
    observed = _pair_frequencies(scores, sampling, temperature)
    for pair in itertools.permutations(range(scores.size), 2):
        expected = _plackett_luce(weights, pair)
        # 4.5 standard errors of a binomial frequency over DRAWS draws: fails by chance about once in 10^5.
        tolerance = 4.5 * np.sqrt(expected * (1 - expected) / DRAWS)
        assert observed.get(pair, 0.0) == pytest.approx(expected, abs=tolerance), pair


def test_temperature_sampling_does_not_depend_on_the_scores_scale() -> None:
    """Standardized first: scores times 1000 plus an offset give the same order for a seed."""
    scores = np.random.default_rng(0).normal(size=50)
    for seed in range(5):
        a = score_order(scores, "temperature", 0.7, seed)
        b = score_order(1000 * scores + 3, "temperature", 0.7, seed)
        assert a.tolist() == b.tolist()


def test_the_limits_are_hard_top_k_and_a_uniform_order() -> None:
    scores = np.array([0.1, 0.9, 0.5, 0.7, 0.3])
    hard = score_order(scores, "hard")
    assert hard.tolist() == [1, 3, 2, 4, 0]
    assert score_order(scores, "gumbel", 1e-6, seed=3).tolist() == hard.tolist()
    firsts = np.bincount([score_order(scores, "gumbel", 1e6, seed)[0] for seed in range(DRAWS)], minlength=5)
    assert np.allclose(firsts / DRAWS, 0.2, atol=4.5 * np.sqrt(0.16 / DRAWS))


def test_documents_without_a_score_are_never_taken_and_the_budget_holds() -> None:
    rng = np.random.default_rng(1)
    scores = rng.normal(size=200)
    scores[::7] = np.nan
    n_tokens = rng.integers(1, 50, size=200)
    for sampling in ("hard", "gumbel", "temperature"):
        order = score_order(scores, sampling, 1.0, seed=4)
        assert sorted(order.tolist()) == np.flatnonzero(np.isfinite(scores)).tolist()
        selected = topk_selection(scores, n_tokens, 1500, sampling, 1.0, seed=4)
        assert within_budget(selected, n_tokens, 1500) and n_tokens[selected].sum() >= 1500
        assert np.isfinite(scores[selected]).all()


def test_a_seed_repeats_and_another_differs() -> None:
    scores = np.random.default_rng(2).normal(size=100)
    assert score_order(scores, "gumbel", 1.0, 7).tolist() == score_order(scores, "gumbel", 1.0, 7).tolist()
    assert score_order(scores, "gumbel", 1.0, 7).tolist() != score_order(scores, "gumbel", 1.0, 8).tolist()


def test_bad_knobs_are_errors() -> None:
    with pytest.raises(ValueError, match="temperature must be positive"):
        score_order(np.ones(3), "gumbel", 0.0)
    with pytest.raises(ValueError, match="unknown sampling"):
        score_order(np.ones(3), "softmax", 1.0)  # type: ignore[arg-type]
