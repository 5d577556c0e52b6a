"""Per-document arrays of a whole pool, read in chunks: what lets the select stage's driver hold memory in proportion
to the number of clusters and the selection, never to the pool (docs/scaling.md, "What grows with the pool").

The arrays (cluster ids, token counts) may be memory maps of files in the run directory; everything here streams
them `CHUNK_DOCS` documents at a time. `ClusterMembers` is the one index Quad needs over them: the documents of each
cluster, found without sorting the pool in memory.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from quadselect.atomic import atomic_path

CHUNK_DOCS = 1 << 22
"""Documents per streamed pass: 4M (32 MB of int64), small next to any model and large enough to run at memory speed."""


def iter_chunks(array: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
    """(start, array[start : start + CHUNK_DOCS]) over the whole array: a memory map is paged in a chunk at a time."""
    chunk = CHUNK_DOCS
    for start in range(0, len(array), chunk):
        yield start, np.asarray(array[start : start + chunk])


def check_token_counts(n_tokens: np.ndarray) -> None:
    """Token counts must be a 1-D integer array of non-negative values (checked chunk by chunk, without a copy)."""
    if n_tokens.ndim != 1:
        raise ValueError(f"token counts must be a 1-D array, got shape {n_tokens.shape}")
    if n_tokens.size and not np.issubdtype(n_tokens.dtype, np.integer):
        raise ValueError(f"token counts must be integers, got dtype {n_tokens.dtype}")
    if any(part.min() < 0 for _, part in iter_chunks(n_tokens) if part.size):
        raise ValueError("token counts must be non-negative")


def check_cluster_ids(cluster_ids: np.ndarray) -> int:
    """Cluster ids must be a 1-D integer array of non-negative values; returns the largest (-1 when empty)."""
    if cluster_ids.ndim != 1 or (cluster_ids.size and not np.issubdtype(cluster_ids.dtype, np.integer)):
        raise ValueError(f"cluster ids must be a 1-D integer array, got shape {cluster_ids.shape} {cluster_ids.dtype}")
    largest = -1
    for _, part in iter_chunks(cluster_ids):
        if part.size:
            if part.min() < 0:
                raise ValueError("cluster ids must be non-negative")
            largest = max(largest, int(part.max()))
    return largest


def cluster_totals(cluster_ids: np.ndarray, n_tokens: np.ndarray, n_clusters: int) -> tuple[np.ndarray, np.ndarray]:
    """Documents (int64) and tokens (float64, as `np.bincount` weighs them) of every cluster, chunk by chunk."""
    sizes = np.zeros(n_clusters, dtype=np.int64)
    tokens = np.zeros(n_clusters, dtype=np.float64)
    for start, ids in iter_chunks(cluster_ids):
        sizes += np.bincount(ids, minlength=n_clusters)
        tokens += np.bincount(ids, weights=np.asarray(n_tokens[start : start + ids.size]), minlength=n_clusters)
    return sizes, tokens


class ClusterMembers:
    """The documents of each cluster, ascending: `of(c)` is cluster c's slice of one array of document indices
    grouped by cluster (`grouped`, possibly a memory map) between `bounds[c]` and `bounds[c + 1]`."""

    def __init__(self, grouped: np.ndarray, bounds: np.ndarray) -> None:
        if bounds.ndim != 1 or bounds[0] != 0 or bounds[-1] != len(grouped) or np.any(np.diff(bounds) < 0):
            raise ValueError(f"cluster bounds must rise from 0 to {len(grouped)}")
        self.grouped, self.bounds = grouped, bounds

    @property
    def n_clusters(self) -> int:
        return int(self.bounds.size - 1)

    @property
    def sizes(self) -> np.ndarray:
        return np.diff(self.bounds)

    def of(self, cluster: int) -> np.ndarray:
        return np.asarray(self.grouped[self.bounds[cluster] : self.bounds[cluster + 1]])

    @classmethod
    def in_memory(cls, cluster_ids: np.ndarray, n_clusters: int) -> ClusterMembers:
        """For arrays that fit in memory (the library's in-memory use): a stable argsort."""
        ids = np.asarray(cluster_ids)
        grouped = np.argsort(ids, kind="stable").astype(np.int64, copy=False)
        return cls(grouped, _bounds(np.bincount(ids, minlength=n_clusters)))

    @classmethod
    def on_disk(cls, cluster_ids: np.ndarray, n_clusters: int, path: Path) -> ClusterMembers:
        """A counting sort streamed into a memory-mapped `.npy` file (`path`, written atomically): two passes over
        `cluster_ids`, O(K + chunk) memory. Each chunk's documents go to their clusters' next free places, so
        every cluster's documents stay in ascending order, as `in_memory` gives them."""
        sizes = np.zeros(n_clusters, dtype=np.int64)
        for _, ids in iter_chunks(cluster_ids):
            sizes += np.bincount(ids, minlength=n_clusters)
        bounds = _bounds(sizes)
        with atomic_path(path) as tmp:
            grouped = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.int64, shape=(len(cluster_ids),))
            free = bounds[:-1].copy()
            for start, ids in iter_chunks(cluster_ids):
                order = np.argsort(ids, kind="stable")
                ranked = ids[order]
                rank = np.arange(ranked.size) - np.searchsorted(ranked, ranked, side="left")  # place within its cluster
                grouped[free[ranked] + rank] = start + order
                free += np.bincount(ids, minlength=n_clusters)
            grouped.flush()
            del grouped
        return cls(np.load(path, mmap_mode="r"), bounds)


def _bounds(sizes: np.ndarray) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
