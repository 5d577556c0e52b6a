"""Ranking a whole pool by a per-document key without holding the pool (docs/scaling.md, "What grows with the pool").

Top-k influence, the quality classifier and perplexity filtering each give every document a key and take documents
by descending key until the budget is full (`quadselect.select.budget`). Sorting the pool's keys needs them all in
memory (8 bytes a document, ~5 GB at 600M documents, plus the sort's own copy). Here the keys are read in chunks —
from memory maps, so the pool's values stay on disk — and only the documents that can still be in the budget's prefix
are kept: after each chunk, the candidates and the chunk's documents are sorted together and cut to the prefix that
fills the budget. That is exact: adding documents to a ranking only pushes a document further back, so a document
outside the prefix of the documents read so far is outside the prefix of the whole pool. Memory is the selection's
size plus one chunk, and the selection is the one a full sort would give (ties in ascending position).

The perplexity band needs the median of the pool's losses: `finite_median` finds it exactly by narrowing a value
range with histograms until the values left in it fit in one chunk.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator

import numpy as np

from quadselect.select.budget import as_token_counts, take_to_budget

CHUNK_DOCS = 1 << 22
"""Documents read at a time (32 MB of float64 keys)."""
HISTOGRAM_BINS = 4096
"""Bins of each narrowing pass of `finite_median`: a pass cuts the value range holding the median ~4096-fold."""


def finite_chunks(values: np.ndarray, chunk_docs: int | None = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(positions, values) of the finite values of each chunk of `values` (a memory map or an array), in order."""
    chunk_docs = chunk_docs or CHUNK_DOCS
    for start in range(0, len(values), chunk_docs):
        part = np.asarray(values[start : start + chunk_docs], dtype=np.float64)
        finite = np.flatnonzero(np.isfinite(part))
        yield finite + start, part[finite]


def top_to_budget(
    keyed_chunks: Iterable[tuple[np.ndarray, np.ndarray]], n_tokens: np.ndarray, budget_tokens: int
) -> np.ndarray:
    """Documents by descending key (ties in ascending position) up to the budget, by the rule of
    `take_to_budget`, from chunks of (positions, keys) whose positions ascend from chunk to chunk.

    Holds the candidates (at most the budget's documents) and one chunk. Once the budget is full, a chunk's
    document whose key is not above the last candidate's can never enter: it ranks after it (an equal key at a later
    position ranks later)."""
    n_tokens = as_token_counts(n_tokens)
    positions, keys = np.zeros(0, np.int64), np.zeros(0)
    if budget_tokens <= 0:
        return positions
    full = False
    for chunk_positions, chunk_keys in keyed_chunks:
        if full:
            above = chunk_keys > keys[-1]
            chunk_positions, chunk_keys = chunk_positions[above], chunk_keys[above]
        if chunk_positions.size == 0:
            continue
        positions = np.concatenate([positions, np.asarray(chunk_positions, dtype=np.int64)])
        keys = np.concatenate([keys, np.asarray(chunk_keys, dtype=np.float64)])
        order = np.lexsort((positions, -keys))
        kept = take_to_budget(order, n_tokens[positions], budget_tokens)
        full = int(n_tokens[positions[kept]].sum()) >= budget_tokens
        positions, keys = positions[kept], keys[kept]
    return positions


def finite_count_and_moments(values: np.ndarray) -> tuple[int, float, float]:
    """Count, mean and (population) standard deviation of the finite values, in two chunked passes."""
    count, total = 0, 0.0
    for _, part in finite_chunks(values):
        count, total = count + part.size, total + float(part.sum())
    if count == 0:
        return 0, 0.0, 0.0
    mean = total / count
    squares = sum(float(np.square(part - mean).sum()) for _, part in finite_chunks(values))
    return count, mean, math.sqrt(squares / count)


def finite_median(values: np.ndarray) -> float:
    """The median of the finite values (NaN if there are none), as `np.median` of them gives it: the middle value,
    or the mean of the two middle ones."""
    count = sum(part.size for _, part in finite_chunks(values))
    if count == 0:
        return float("nan")
    middle = count // 2
    if count % 2:
        return _kth_smallest(values, middle)
    return (_kth_smallest(values, middle - 1) + _kth_smallest(values, middle)) / 2


def _kth_smallest(values: np.ndarray, k: int) -> float:
    """The k-th smallest finite value (from 0), exactly, holding at most one chunk of values: each pass counts the
    values of the range [lo, hi] holding it in `HISTOGRAM_BINS` equal bins and keeps the bin where it falls, until
    the values left in the range fit in a chunk (or are all equal)."""
    lo, hi, below = -np.inf, np.inf, 0  # the k-th value is in [lo, hi]; `below` values are smaller than lo
    while True:
        in_range = sum(part.size for part in _within(values, lo, hi))
        if in_range <= CHUNK_DOCS:
            gathered = np.concatenate([np.zeros(0), *_within(values, lo, hi)])
            return float(np.partition(gathered, k - below)[k - below])
        smallest = min(float(part.min()) for part in _within(values, lo, hi) if part.size)
        largest = max(float(part.max()) for part in _within(values, lo, hi) if part.size)
        if smallest == largest:
            return smallest
        edges = np.linspace(smallest, largest, HISTOGRAM_BINS + 1)
        counts = sum(np.histogram(part, bins=edges)[0] for part in _within(values, lo, hi))
        ends = below + np.cumsum(counts)
        b = int(np.searchsorted(ends, k, side="right"))  # the bin holding rank k
        below = int(ends[b - 1]) if b else below
        # np.histogram's bins are [edge, next edge), but the last holds the largest value too.
        lo = float(edges[b])
        hi = float(edges[b + 1]) if b == HISTOGRAM_BINS - 1 else float(np.nextafter(edges[b + 1], -np.inf))


def _within(values: np.ndarray, lo: float, hi: float) -> Iterator[np.ndarray]:
    """The finite values in [lo, hi], chunk by chunk."""
    for _, part in finite_chunks(values):
        yield part[(part >= lo) & (part <= hi)]
