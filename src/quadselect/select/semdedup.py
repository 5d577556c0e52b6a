"""Semantic deduplication within clusters (SemDeDup: Abbas et al. 2023, "SemDeDup: Data-efficient learning at
web-scale through semantic deduplication"; docs/selection-methods.md, "Semantic dedup").

Exact and fuzzy dedup leave documents that say the same thing in other words (mirrors, templated pages, reworded
news). SemDeDup removes them from the embeddings the pool is clustered by: two documents are semantic duplicates when
the cosine similarity of their embeddings is above 1 − ε, and only pairs inside one k-means cluster are compared,
which makes the pairwise work Σ_c n_c² instead of N².

Which document of a group is kept: the paper's rule, the one farthest from its cluster's centroid (the least
prototypical; SemDeDup found keeping those trains better than keeping the most prototypical). Documents are visited
farthest first (ties in pool order), and a document is dropped when its similarity to a document *already kept* is
above 1 − ε. (The paper's code compares with every earlier document, dropped ones included; in a chain a ≈ b ≈ c
with a and c apart that drops c too, while here c is kept, since what it duplicated is gone.)

Memory is bounded by the largest cluster: one cluster's embeddings at a time, compared block by block.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

BLOCK = 1024
"""Documents compared at once: a block's similarities to what is kept, then within the block."""


@dataclass(frozen=True)
class DedupResult:
    """Positions (into the arrays the dedup was given) of the documents dropped, each with the kept document it
    duplicates and their cosine similarity; `kept` is every other position, ascending."""

    kept: np.ndarray
    removed: np.ndarray
    duplicate_of: np.ndarray
    similarity: np.ndarray


def dedup_cluster(embeddings: np.ndarray, centroid: np.ndarray, epsilon: float) -> tuple[np.ndarray, np.ndarray]:
    """One cluster's semantic dedup: for every document (row of unit `embeddings`), the row of the kept document it
    duplicates, or -1 where it is kept; and the similarity to that document (NaN where kept).

    Rows are visited farthest from `centroid` first; a row is dropped when its cosine similarity to a row already
    kept is above 1 − ε (the most similar kept row is named)."""
    embeddings = np.asarray(embeddings, dtype=np.float32)
    n = embeddings.shape[0]
    threshold = 1.0 - epsilon
    centroid_similarity = embeddings @ np.asarray(centroid, dtype=np.float32)
    order = np.lexsort((np.arange(n), centroid_similarity))  # least similar to the centroid (farthest) first
    duplicate_of = np.full(n, -1, dtype=np.int64)
    similarity = np.full(n, np.nan)
    kept: list[int] = []
    for start in range(0, n, BLOCK):
        rows = order[start : start + BLOCK]
        block = embeddings[rows]
        to_kept = block @ embeddings[kept].T if kept else np.zeros((rows.size, 0), np.float32)
        within = block @ block.T
        kept_in_block: list[int] = []  # positions in `rows`
        for i, row in enumerate(rows):
            best, best_row = _most_similar(to_kept[i], kept, within[i, kept_in_block], rows[kept_in_block])
            if best > threshold:
                duplicate_of[row], similarity[row] = best_row, best
            else:
                kept_in_block.append(i)
        kept.extend(rows[kept_in_block].tolist())
    return duplicate_of, similarity


def _most_similar(
    to_kept: np.ndarray, kept_rows: list[int], to_block: np.ndarray, block_rows: np.ndarray
) -> tuple[float, int]:
    """The highest similarity to a kept row (earlier blocks' or this block's) and that row; (-inf, -1) if none."""
    best, best_row = -np.inf, -1
    if to_kept.size:
        j = int(np.argmax(to_kept))
        best, best_row = float(to_kept[j]), kept_rows[j]
    if to_block.size:
        j = int(np.argmax(to_block))
        if float(to_block[j]) > best:
            best, best_row = float(to_block[j]), int(block_rows[j])
    return best, best_row


def semantic_dedup(
    cluster_ids: np.ndarray,
    centroids: np.ndarray,
    embeddings_of: Callable[[np.ndarray], np.ndarray],
    epsilon: float,
    progress: Callable[[int], None] | None = None,
) -> DedupResult:
    """Semantic dedup of documents by cluster. `cluster_ids[p]` is document p's cluster; `embeddings_of(positions)`
    returns those documents' unit embeddings (rows in the order asked), so that only one cluster's are read at a
    time. `progress(n)` is told of each cluster's n documents as they are done."""
    if not 0 < epsilon < 1:
        raise ValueError(f"ε must lie in (0, 1), got {epsilon}")
    cluster_ids = np.asarray(cluster_ids, dtype=np.int64)
    if cluster_ids.size == 0:
        empty = np.zeros(0, dtype=np.int64)
        return DedupResult(empty, empty, empty, np.zeros(0))
    by_cluster = np.argsort(cluster_ids, kind="stable")
    bounds = np.flatnonzero(np.r_[True, np.diff(cluster_ids[by_cluster]) != 0, True])
    duplicate_of = np.full(cluster_ids.size, -1, dtype=np.int64)
    similarity = np.full(cluster_ids.size, np.nan)
    for lo, hi in itertools.pairwise(bounds):
        positions = by_cluster[lo:hi]  # ascending: argsort is stable
        dup, sim = dedup_cluster(embeddings_of(positions), centroids[cluster_ids[positions[0]]], epsilon)
        dropped = dup >= 0
        duplicate_of[positions[dropped]] = positions[dup[dropped]]
        similarity[positions[dropped]] = sim[dropped]
        if progress is not None:
            progress(int(positions.size))
    removed = np.flatnonzero(duplicate_of >= 0)
    return DedupResult(
        kept=np.flatnonzero(duplicate_of < 0),
        removed=removed,
        duplicate_of=duplicate_of[removed],
        similarity=similarity[removed],
    )
