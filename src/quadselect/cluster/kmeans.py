"""Spherical k-means over document embeddings, and the assignment of every document to its nearest centroid.

Distances are **cosine distances**, d(u, v) = 1 − cos(u, v), in [0, 2]: embeddings and centroids are unit vectors, so
d = 1 − ⟨u, v⟩.

Memory is bounded by the k-means sample and one shard, never by the pool: k-means trains on a seeded sample of at most
`POINTS_PER_CLUSTER × K` rows drawn file by file from the embedding files, and assignment runs on one array at a time,
in blocks. faiss runs on the GPU automatically when it sees one (faiss-gpu installed and `faiss.get_num_gpus() > 0`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import faiss
import numpy as np

from quadselect.embed import l2_normalize, open_array

POINTS_PER_CLUSTER = 64
ASSIGN_BLOCK_ROWS = 16_384


def default_num_clusters(n_docs: int) -> int:
    """K = round(√n / 2), at least 1 and at most n.

    Why: the number of arms should grow with the pool, but slower than it, so clusters also grow and each can feed
    the bandit many rounds of fresh documents. √n/2 gives 79 clusters of ~300 documents for the 25k-document demo pool
    and 12,247 for the paper's 600M documents (the paper used 10,000).
    """
    if n_docs < 1:
        raise ValueError(f"cannot cluster an empty pool (n_docs={n_docs})")
    return max(1, min(n_docs, round(math.sqrt(n_docs) / 2)))


def kmeans_sample_size(n_docs: int, k: int, points_per_cluster: int = POINTS_PER_CLUSTER) -> int:
    """All documents of a small pool, at most `points_per_cluster × K` of a large one (k-means centroids are means:
    64 points per cluster pin them down well, and more only costs time)."""
    return min(n_docs, points_per_cluster * k)


def sample_rows(paths: Sequence[str | os.PathLike[str]], size: int, seed: int) -> np.ndarray:
    """A seeded uniform sample (without replacement) of `size` rows of the row-wise concatenation of the .npy files
    `paths`, as unit float32 rows.

    Each file is memory-mapped, its chosen rows copied out, and unmapped before the next: pages touched through a
    memmap count towards the process's RSS for as long as the map is open, so holding every shard open while sampling
    would grow RSS towards the pool's size (measured in `benchmarks/bench_embed_cluster.py`).
    """
    counts = np.array([open_array(p).shape[0] for p in paths], dtype=np.int64)
    total = int(counts.sum())
    if not 0 <= size <= total:
        raise ValueError(f"cannot sample {size} rows from {total}")
    chosen = np.sort(np.random.default_rng(seed).choice(total, size=size, replace=False))
    starts = np.concatenate([[0], np.cumsum(counts)])
    out: np.ndarray | None = None
    for i, path in enumerate(paths):
        array = open_array(path)
        if out is None:
            out = np.empty((size, array.shape[1]), dtype=np.float32)
        lo, hi = np.searchsorted(chosen, [starts[i], starts[i + 1]])
        out[lo:hi] = array[chosen[lo:hi] - starts[i]]
        del array
    return l2_normalize(out if out is not None else np.zeros((0, 0), dtype=np.float32), copy=False)


def train_kmeans(sample: np.ndarray, k: int, *, seed: int = 0, niter: int = 20) -> np.ndarray:
    """Spherical k-means (centroids renormalized each iteration, assignment by largest cosine) on unit rows;
    returns (k, d) unit float32 centroids. The same sample, k, seed and niter give the same centroids.

    Seeds are random rows (faiss's default). Recent faiss (1.15 here) also offers k-means++ seeding; on the demo pool
    it did no better (K=64, static embedder: purity 0.757 vs 0.773 with random seeds, ARI 0.092 both) and cost 55%
    more time for 100k×384 into 1024 clusters, so it is not used.
    """
    x = _unit_rows(sample)
    n, dim = x.shape
    if k < 1:
        raise ValueError(f"the number of clusters must be at least 1, got K={k}")
    if k > n:
        raise ValueError(
            f"cannot make K={k} clusters from {n} documents: K must not exceed the number of documents. "
            f"Lower K, or leave it unset for the default rule (K={default_num_clusters(n)} here)."
        )
    if niter < 1:
        raise ValueError(f"niter must be at least 1, got {niter}")
    kmeans = faiss.Kmeans(
        dim,
        k,
        niter=niter,
        seed=seed % 2**31,  # faiss takes a signed 32-bit seed; run seeds are unsigned 32-bit (RunConfig.seed_for)
        spherical=True,
        gpu=_num_gpus(),
        # The caller already sampled; stop faiss from subsampling again or warning about few points per centroid.
        max_points_per_centroid=max(1, -(-n // k)),
        min_points_per_centroid=1,
    )
    kmeans.train(x)
    return l2_normalize(kmeans.centroids)


def assign(
    centroids: np.ndarray, vectors: np.ndarray, *, block_rows: int = ASSIGN_BLOCK_ROWS
) -> tuple[np.ndarray, np.ndarray]:
    """Nearest centroid of every row: (cluster ids int32, cosine distance 1 − cos float32), streamed in blocks of
    `block_rows` so a float16 memmap shard is never converted whole. A zero row (empty text) gets distance 1.

    Call it shard by shard, opening each shard's memmap just before and dropping it just after: that keeps RSS at
    about one shard, where holding all shards' maps open would let it grow to the pool's size.
    """
    centroids = np.ascontiguousarray(l2_normalize(centroids))
    if vectors.ndim != 2 or vectors.shape[1] != centroids.shape[1]:
        raise ValueError(f"vectors of shape {vectors.shape} do not match centroids of dimension {centroids.shape[1]}")
    index = centroid_index(centroids)
    n = vectors.shape[0]
    ids = np.empty(n, dtype=np.int32)
    dist = np.empty(n, dtype=np.float32)
    for start in range(0, n, block_rows):
        stop = min(start + block_rows, n)
        sims, nearest = index.search(np.ascontiguousarray(l2_normalize(vectors[start:stop])), 1)
        ids[start:stop] = nearest[:, 0]
        dist[start:stop] = np.clip(1.0 - sims[:, 0], 0.0, 2.0)
    return ids, dist


def centroid_index(centroids: np.ndarray) -> faiss.Index:
    """An exact inner-product index over unit `centroids` (on every GPU faiss sees): a search returns the nearest
    centroids by cosine, which is what assignment and the γ rule (`cluster.graph.auto_gamma`) both ask."""
    index = faiss.IndexFlatIP(centroids.shape[1])
    index.add(centroids)
    if _num_gpus() > 0:
        index = faiss.index_cpu_to_all_gpus(index)
    return index


def _unit_rows(x: np.ndarray) -> np.ndarray:
    """`x` itself when it already is C-contiguous unit float32 rows (what `sample_rows` returns), else a normalized
    copy: the k-means sample is the largest array of the stage, and a second copy would double its memory."""
    if x.dtype == np.float32 and x.ndim == 2 and x.flags.c_contiguous:
        norms = np.linalg.norm(x, axis=1)
        if np.all(np.abs(norms - 1.0) < 1e-4):
            return x
    return np.ascontiguousarray(l2_normalize(x))


def _num_gpus() -> int:
    return faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
