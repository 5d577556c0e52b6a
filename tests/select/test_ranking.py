"""Ranking a pool in chunks (`quadselect.select.ranking`) against a full sort of every key held at once: top-k, the
sampled orders and the perplexity band select exactly what the sort selects, for any chunk size; the median found by
narrowing histograms is `np.median`'s; and ranking a memory-mapped pool allocates far less than the pool's arrays."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from quadselect.select import ranking
from quadselect.select.baselines import perplexity_band_selection, topk_selection
from quadselect.select.ranking import finite_median


def _prefix(order: np.ndarray, n_tokens: np.ndarray, budget: int) -> np.ndarray:
    """The budget rule by hand: documents are taken while the tokens taken before them are under the budget."""
    taken, total = [], 0
    for doc in order:
        if total >= budget:
            break
        taken.append(int(doc))
        total += int(n_tokens[doc])
    return np.asarray(taken, dtype=np.int64)


def _sorted_keys(scores: np.ndarray, sampling: str, temperature: float, seed: int) -> np.ndarray:
    """Every finite document by descending key, ties in ascending position: the whole pool held and sorted."""
    finite = np.flatnonzero(np.isfinite(scores))
    keys = scores[finite]
    if sampling == "temperature":
        keys = (keys - keys.mean()) / keys.std()
    if sampling != "hard":
        keys = keys / temperature + np.random.default_rng(seed).gumbel(size=finite.size)
    return finite[np.argsort(-keys, kind="stable")]


def _pool(seed: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    scores = np.round(rng.normal(size=n), 1)  # rounded: many ties, which must stay in pool order
    scores[rng.random(n) < 0.05] = np.nan
    return scores, rng.integers(1, 300, size=n)


@pytest.mark.parametrize("chunk_docs", [7, 64, 1 << 22])
@pytest.mark.parametrize(("sampling", "temperature"), [("hard", 1.0), ("gumbel", 0.3), ("temperature", 2.0)])
def test_chunked_top_k_selects_what_a_full_sort_selects(monkeypatch, chunk_docs, sampling, temperature) -> None:
    monkeypatch.setattr(ranking, "CHUNK_DOCS", chunk_docs)
    scores, n_tokens = _pool(0, 1_000)
    for budget in (1, 500, 20_000, int(n_tokens.sum()) + 10):
        expected = _prefix(_sorted_keys(scores, sampling, temperature, seed=5), n_tokens, budget)
        got = topk_selection(scores, n_tokens, budget, sampling, temperature, seed=5)
        # (Chunked, the temperature's mean and deviation may differ from numpy's in the last bit: no two keys of
        # this seed are that close, so the order is the same.)
        assert got.tolist() == expected.tolist()


@pytest.mark.parametrize("chunk_docs", [5, 1 << 22])
@pytest.mark.parametrize("band", ["middle", "lowest"])
def test_the_perplexity_band_selects_what_a_full_sort_selects(monkeypatch, chunk_docs, band) -> None:
    monkeypatch.setattr(ranking, "CHUNK_DOCS", chunk_docs)
    losses, n_tokens = _pool(1, 400)
    losses = np.abs(losses) + 2
    finite = np.flatnonzero(np.isfinite(losses))
    key = np.abs(losses[finite] - np.median(losses[finite])) if band == "middle" else losses[finite]
    order = finite[np.argsort(key, kind="stable")]
    for budget in (10, 3_000, 40_000):
        got = perplexity_band_selection(losses, n_tokens, budget, band=band)  # type: ignore[arg-type]
        assert got.tolist() == _prefix(order, n_tokens, budget).tolist()


@pytest.mark.parametrize(
    "values",
    [
        np.random.default_rng(2).normal(size=10_001),  # odd count
        np.random.default_rng(3).exponential(size=10_000) ** 4,  # even count, long tail: many narrowing passes
        np.r_[np.full(6_000, 1.5), np.random.default_rng(4).normal(size=3_000)],  # the median among many ties
        np.r_[np.full(5_000, 1.0), np.full(5_000, np.nextafter(1.0, 2.0))],  # the middle pair two adjacent floats
        np.r_[np.full(200, np.nan), np.arange(7.0), np.full(9, np.inf)],  # non-finite values are left out
    ],
)
def test_the_median_by_narrowing_histograms_is_numpys(monkeypatch, values: np.ndarray) -> None:
    monkeypatch.setattr(ranking, "CHUNK_DOCS", 100)  # only 100 values may be gathered: the histograms must narrow
    monkeypatch.setattr(ranking, "HISTOGRAM_BINS", 16)
    assert finite_median(values) == np.median(values[np.isfinite(values)])


def test_no_finite_value_has_no_median() -> None:
    assert np.isnan(finite_median(np.full(3, np.nan)))


def test_ranking_a_memory_mapped_pool_allocates_far_less_than_its_arrays(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(ranking, "CHUNK_DOCS", 1 << 16)
    n = 4_000_000
    rng = np.random.default_rng(6)
    scores = np.lib.format.open_memmap(tmp_path / "scores.npy", mode="w+", dtype=np.float64, shape=(n,))
    n_tokens = np.lib.format.open_memmap(tmp_path / "n_tokens.npy", mode="w+", dtype=np.int64, shape=(n,))
    for start in range(0, n, 1 << 20):
        stop = min(n, start + (1 << 20))
        scores[start:stop] = rng.normal(size=stop - start)
        n_tokens[start:stop] = rng.integers(1, 400, size=stop - start)
    scores.flush(), n_tokens.flush()
    scores = np.load(tmp_path / "scores.npy", mmap_mode="r")
    n_tokens = np.load(tmp_path / "n_tokens.npy", mmap_mode="r")
    pool_bytes = scores.nbytes + n_tokens.nbytes
    budget = 2_000_000  # ~0.25% of the pool's tokens

    tracemalloc.start()
    try:
        selected = topk_selection(scores, n_tokens, budget)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < pool_bytes / 8, f"top-k allocated {peak / 1e6:.1f} MB on a pool of {pool_bytes / 1e6:.0f} MB"
    # The selection is the pool's best: no document left out scores above the lowest one taken.
    threshold = float(np.min(scores[selected]))
    assert int(np.count_nonzero(np.asarray(scores) > threshold)) == selected.size - 1
