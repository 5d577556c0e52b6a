"""Baselines on tiny synthetic pools, and the shared budget rule."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quadselect.select.baselines import (
    cluster_balanced_selection,
    perplexity_band_selection,
    random_selection,
    topk_selection,
)
from quadselect.select.budget import take_to_budget


def test_take_to_budget_keeps_the_document_that_crosses_the_line() -> None:
    tokens = np.array([5, 5, 5, 5])
    assert take_to_budget(np.arange(4), tokens, 10).tolist() == [0, 1]
    assert take_to_budget(np.arange(4), tokens, 11).tolist() == [0, 1, 2]
    assert take_to_budget(np.arange(4), tokens, 11, used_tokens=6).tolist() == [0]
    assert take_to_budget(np.arange(4), tokens, 0).tolist() == []
    assert take_to_budget(np.arange(4), tokens, 100).tolist() == [0, 1, 2, 3]
    assert take_to_budget(np.array([3, 2]), tokens, 7).tolist() == [3, 2]


@settings(max_examples=200, deadline=None, derandomize=True)
@given(
    tokens=st.lists(st.integers(0, 300), min_size=0, max_size=80),
    fraction=st.floats(0.0, 1.2),
    seed=st.integers(0, 1000),
)
def test_every_baseline_obeys_the_budget(tokens: list[int], fraction: float, seed: int) -> None:
    n_tokens = np.asarray(tokens, dtype=np.int64)
    budget = int(fraction * n_tokens.sum())
    rng = np.random.default_rng(seed)
    scores = rng.normal(size=n_tokens.size)
    clusters = rng.integers(0, 4, n_tokens.size)
    selections = [
        random_selection(n_tokens, budget, seed),
        topk_selection(scores, n_tokens, budget),
        cluster_balanced_selection(clusters, n_tokens, budget, seed),
        perplexity_band_selection(scores, n_tokens, budget),
        perplexity_band_selection(scores, n_tokens, budget, band="lowest"),
    ]
    for selected in selections:
        taken = [int(n_tokens[i]) for i in selected]  # the budget rule, recomputed here
        assert not taken or sum(taken[:-1]) < budget, "more than one document over the budget"
        assert len(set(selected.tolist())) == selected.size
        if selected.size < n_tokens.size:
            assert n_tokens[selected].sum() >= budget, "a selection stops short only when the pool runs out"


def test_random_is_seeded() -> None:
    tokens = np.full(100, 10)
    a, b, c = random_selection(tokens, 200, 1), random_selection(tokens, 200, 1), random_selection(tokens, 200, 2)
    assert a.tolist() == b.tolist() and a.tolist() != c.tolist()
    assert a.size == 20


def test_topk_takes_the_best_and_skips_missing_scores() -> None:
    scores = np.array([0.1, 0.9, np.nan, 0.5, 0.7])
    tokens = np.array([10, 10, 10, 10, 10])
    assert topk_selection(scores, tokens, 30).tolist() == [1, 4, 3]
    assert topk_selection(scores, tokens, 1000).tolist() == [1, 4, 3, 0]


def test_cluster_balanced_shares_tokens_equally_and_redistributes_small_clusters() -> None:
    clusters = np.array([0] * 2 + [1] * 10 + [2] * 10)
    tokens = np.ones(clusters.size, dtype=np.int64)
    selected = cluster_balanced_selection(clusters, tokens, 12, seed=0)
    assert np.bincount(clusters[selected], minlength=3).tolist() == [2, 5, 5]

    rng = np.random.default_rng(1)
    clusters = rng.integers(0, 5, 500)
    tokens = rng.integers(20, 60, 500)
    selected = cluster_balanced_selection(clusters, tokens, 5000, seed=3)
    per_cluster = np.bincount(clusters[selected], weights=tokens[selected], minlength=5)
    assert per_cluster.max() - per_cluster.min() <= 2 * tokens.max()
    assert selected.tolist() != cluster_balanced_selection(clusters, tokens, 5000, seed=4).tolist()


def test_perplexity_band_middle_and_lowest() -> None:
    losses = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, np.inf])
    tokens = np.full(8, 10)
    middle = perplexity_band_selection(losses, tokens, 30)
    assert sorted(middle.tolist()) == [2, 3, 4]
    assert perplexity_band_selection(losses, tokens, 30, band="lowest").tolist() == [0, 1, 2]
    assert 7 not in perplexity_band_selection(losses, tokens, 1000).tolist()
    with pytest.raises(ValueError, match="band"):
        perplexity_band_selection(losses, tokens, 30, band="highest")  # type: ignore[arg-type]


def test_misaligned_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="one value per document"):
        topk_selection(np.zeros(3), np.ones(4, dtype=np.int64), 10)
    with pytest.raises(ValueError, match="integers"):
        random_selection(np.array([1.5, 2.0]), 10)
