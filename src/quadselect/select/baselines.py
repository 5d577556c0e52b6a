"""Baselines every comparison includes (docs/method.md), each filling the same token budget by the rule of
`budget.py` (never more than one document over). Each returns document indices in the order they were taken.
DSIR lives in `dsir.py`; the selection methods of the same names (`quadselect.select.methods`) call these.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from quadselect.select.budget import as_token_counts, take_to_budget
from quadselect.select.ranking import finite_chunks, finite_median, top_to_budget
from quadselect.select.sampling import Sampling, sampling_keys


def random_selection(n_tokens: np.ndarray, budget_tokens: int, seed: int = 0) -> np.ndarray:
    """Uniformly random documents (a seeded permutation) up to the budget: the baseline with neither quality nor
    diversity targeting."""
    n_tokens = as_token_counts(n_tokens)
    order = np.random.default_rng(seed).permutation(n_tokens.size)
    return take_to_budget(order, n_tokens, budget_tokens)


def topk_selection(
    scores: np.ndarray,
    n_tokens: np.ndarray,
    budget_tokens: int,
    sampling: Sampling = "hard",
    temperature: float = 1.0,
    seed: int = 0,
) -> np.ndarray:
    """The highest-scoring documents up to the budget (quality without diversity; it needs the whole pool scored,
    the cost Quad avoids), or documents sampled by score (`sampling`, `quadselect.select.sampling`). Hard top-k
    keeps ties in pool order; documents with a non-finite score are never taken. `scores` may be a memory map: it
    is read in chunks, never whole (`quadselect.select.ranking`)."""
    n_tokens = as_token_counts(n_tokens)
    _check_aligned(scores, n_tokens, "scores")
    return top_to_budget(sampling_keys(scores, sampling, temperature, seed), n_tokens, budget_tokens)


def cluster_balanced_selection(
    cluster_ids: np.ndarray, n_tokens: np.ndarray, budget_tokens: int, seed: int = 0
) -> np.ndarray:
    """Random documents with an equal share of tokens per cluster (diversity without quality).

    Greedy water-filling: the next document always comes from the cluster that has received the fewest tokens so
    far (among clusters with documents left), drawn at random within it. A cluster smaller than its share simply
    runs out, and the others keep sharing what remains equally. Implemented as one sort: a document's key is the
    number of tokens its cluster already holds when it is reached in that cluster's random order.
    """
    n_tokens = as_token_counts(n_tokens)
    cluster_ids = np.asarray(cluster_ids, dtype=np.int64)
    if cluster_ids.shape != n_tokens.shape:
        raise ValueError(f"{cluster_ids.size} cluster ids but {n_tokens.size} token counts")
    rng = np.random.default_rng(seed)
    shuffled = rng.permutation(n_tokens.size)
    grouped = shuffled[np.argsort(cluster_ids[shuffled], kind="stable")]
    tokens = n_tokens[grouped]
    cumulative = np.cumsum(tokens)
    starts = np.flatnonzero(np.r_[True, np.diff(cluster_ids[grouped]) != 0]) if grouped.size else grouped
    group_offset = np.repeat(cumulative[starts] - tokens[starts], np.diff(np.r_[starts, grouped.size]))
    held_before = cumulative - tokens - group_offset
    # Ties in held_before (e.g. every cluster's first document at 0) are broken at random, not by cluster id.
    tie_break = rng.random(grouped.size)
    order = grouped[np.lexsort((tie_break, held_before))]
    return take_to_budget(order, n_tokens, budget_tokens)


def perplexity_band_selection(
    losses: np.ndarray,
    n_tokens: np.ndarray,
    budget_tokens: int,
    band: Literal["middle", "lowest"] = "middle",
) -> np.ndarray:
    """Perplexity filtering under the proxy, from each document's mean next-token loss (log-perplexity).

    "middle" (default) keeps the band around the median loss, growing outward until the budget is full: Marion et
    al. 2023 ("When Less is More: Investigating Data Pruning for Pretraining LLMs at Scale") found that keeping the
    middle of the perplexity distribution beat keeping the lowest-perplexity documents, which over-select
    repetitive, boilerplate text. "lowest" is the classic filter (CCNet-style), lowest loss first. Documents with a
    non-finite loss (nothing to score) are never taken.
    """
    n_tokens = as_token_counts(n_tokens)
    _check_aligned(losses, n_tokens, "losses")
    if band == "middle":
        median = finite_median(losses)
        keys = ((positions, -np.abs(values - median)) for positions, values in finite_chunks(losses))
    elif band == "lowest":
        keys = ((positions, -values) for positions, values in finite_chunks(losses))
    else:
        raise ValueError(f"band must be 'middle' or 'lowest', got {band!r}")
    return top_to_budget(keys, n_tokens, budget_tokens)


def _check_aligned(values: np.ndarray, n_tokens: np.ndarray, name: str) -> None:
    if np.shape(values) != n_tokens.shape:
        raise ValueError(f"{name} has shape {np.shape(values)}, token counts {n_tokens.shape}: one value per document")
