"""The centroid neighbour graph the bandit shares credit along (docs/method.md, "Diversity"), and the one rule for γ.

Clusters i ≠ j are neighbours when their centroids lie at cosine distance d(i, j) < γ. The graph is sparse (CSR),
never a dense K×K matrix: a typical cluster has only a few neighbours. γ is on the cosine-distance scale of
`cluster.kmeans` (the paper's γ = 0.2 means cos > 0.8); "auto" picks it from the centroids with `auto_gamma`, the
rule both the cluster stage and the library's `quad_select` use.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from quadselect.atomic import atomic_path
from quadselect.cluster.kmeans import centroid_index
from quadselect.embed import l2_normalize

log = logging.getLogger(__name__)

GRAPH_BLOCK_ELEMENTS = 1 << 22
AUTO_GAMMA_NEIGHBOURS = 3
MIN_GAMMA = 1e-6


@dataclass(frozen=True)
class NeighbourGraph:
    """Sparse centroid neighbourhoods in CSR form: arm i's neighbours are `indices[indptr[i]:indptr[i+1]]` at
    centroid distances `distances[indptr[i]:indptr[i+1]]`. An arm listed as its own neighbour is ignored.

    `radius` is the γ the graph was cut at (every listed pair is closer than it), when known: `neighbour_graph` and
    `from_dense` record it, and `quad_select`'s gamma="auto" shares credit within it (`gamma_of`). A graph built from
    a mapping, or read back from a file, does not know it.
    """

    indptr: np.ndarray
    indices: np.ndarray
    distances: np.ndarray
    radius: float | None = None

    def __post_init__(self) -> None:
        indptr = np.asarray(self.indptr, dtype=np.int64)
        indices = np.asarray(self.indices, dtype=np.int64)
        distances = np.asarray(self.distances, dtype=np.float64)
        if indptr.ndim != 1 or indptr.size == 0 or indptr[0] != 0 or np.any(np.diff(indptr) < 0):
            raise ValueError("indptr must be a non-decreasing 1-D array starting at 0 (CSR layout)")
        if indices.shape != distances.shape or indices.ndim != 1 or indptr[-1] != indices.size:
            raise ValueError("indices and distances must be 1-D, equally long, and end where indptr ends")
        n_arms = indptr.size - 1
        if indices.size and (indices.min() < 0 or indices.max() >= n_arms):
            raise ValueError(f"neighbour indices must lie in [0, {n_arms})")
        if distances.size and not (np.all(np.isfinite(distances)) and distances.min() >= 0):
            raise ValueError("neighbour distances must be finite and non-negative")
        if self.radius is not None and not self.radius > 0:
            raise ValueError(f"the radius γ a graph was cut at must be > 0, got {self.radius}")
        object.__setattr__(self, "indptr", indptr)
        object.__setattr__(self, "indices", indices)
        object.__setattr__(self, "distances", distances)

    @property
    def n_arms(self) -> int:
        return self.indptr.size - 1

    def neighbours(self, arm: int) -> tuple[np.ndarray, np.ndarray]:
        """(neighbour indices, distances) of one arm."""
        lo, hi = self.indptr[arm], self.indptr[arm + 1]
        return self.indices[lo:hi], self.distances[lo:hi]

    @classmethod
    def empty(cls, n_arms: int) -> NeighbourGraph:
        """No neighbours: every reward is credited to its own arm only."""
        return cls(np.zeros(n_arms + 1, dtype=np.int64), np.zeros(0, dtype=np.int64), np.zeros(0))

    @classmethod
    def from_dense(cls, distances: np.ndarray, radius: float) -> NeighbourGraph:
        """Keep the pairs i ≠ j of a K×K centroid distance matrix with d(i, j) < radius."""
        distances = np.asarray(distances, dtype=np.float64)
        if distances.ndim != 2 or distances.shape[0] != distances.shape[1]:
            raise ValueError(f"a dense distance matrix must be square, got shape {distances.shape}")
        keep = distances < radius
        np.fill_diagonal(keep, False)
        rows, cols = np.nonzero(keep)
        indptr = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=distances.shape[0]))])
        return cls(indptr, cols, distances[rows, cols], float(radius))

    @classmethod
    def from_dict(cls, mapping: Mapping[int, tuple[Sequence[int], Sequence[float]]], n_arms: int) -> NeighbourGraph:
        """Build from {arm: (neighbour indices, distances)}; arms missing from the mapping have no neighbours."""
        extra = set(mapping) - set(range(n_arms))
        if extra:
            raise ValueError(f"arms {sorted(extra)[:5]} are outside [0, {n_arms})")
        pairs = [mapping.get(arm, ((), ())) for arm in range(n_arms)]
        indices = [np.asarray(neigh, dtype=np.int64) for neigh, _ in pairs]
        dists = [np.asarray(dist, dtype=np.float64) for _, dist in pairs]
        for arm, (neigh, dist) in enumerate(zip(indices, dists, strict=True)):
            if neigh.shape != dist.shape:
                raise ValueError(f"arm {arm}: {neigh.size} neighbours but {dist.size} distances")
        indptr = np.concatenate([[0], np.cumsum([neigh.size for neigh in indices])])
        return cls(indptr, np.concatenate(indices), np.concatenate(dists))


def auto_gamma(centroids: np.ndarray, neighbours: int = AUTO_GAMMA_NEIGHBOURS) -> float:
    """THE γ rule: the median over clusters of the cosine distance to the (neighbours+1)-th nearest other centroid,
    clipped to [1e-6, 2], so a typical cluster shares rewards with about `neighbours` others whatever the embedder's
    geometry (the paper's γ = 0.2 is a distance on its own embedder's scale). With fewer than 2 clusters there is no
    one to share with: 1e-6.
    """
    k = centroids.shape[0]
    if k < 2:
        return MIN_GAMMA
    want = min(neighbours + 1, k - 1)
    index = centroid_index(np.ascontiguousarray(l2_normalize(centroids)))
    sims, _ = index.search(np.ascontiguousarray(l2_normalize(centroids)), want + 1)
    return float(np.clip(np.median(1.0 - sims[:, want]), MIN_GAMMA, 2.0))


def gamma_of(graph: NeighbourGraph | None) -> float:
    """The γ to share credit with along `graph`: the radius it was cut at, and 0 (no sharing) without a graph.

    A graph from `neighbour_graph(centroids)` was cut at `auto_gamma(centroids)`, so the bandit then uses the very γ
    the cluster stage uses; a graph that does not record its radius needs γ given explicitly.
    """
    if graph is None:
        return 0.0
    if graph.radius is None:
        raise ValueError(
            "gamma='auto' takes γ from the neighbour graph's radius, and this graph does not record one: build it "
            "with quadselect.cluster.neighbour_graph(centroids) (γ by the auto rule) or NeighbourGraph.from_dense, "
            "or pass gamma explicitly"
        )
    return graph.radius


def neighbour_graph(
    centroids: np.ndarray, gamma: float | Literal["auto"] = "auto", *, block_elements: int = GRAPH_BLOCK_ELEMENTS
) -> NeighbourGraph:
    """All pairs i ≠ j of clusters whose centroids lie at cosine distance d(i, j) < γ, as a symmetric CSR graph that
    records γ as its radius; "auto": γ = `auto_gamma(centroids)`.

    Computed in row blocks of about `block_elements` similarities, so memory is one block plus the graph itself,
    never a dense K×K matrix. Each pair is computed once (j > i) and mirrored, so the graph is exactly symmetric.
    """
    gamma = auto_gamma(centroids) if gamma == "auto" else float(gamma)
    if not gamma > 0:
        raise ValueError(
            f"the neighbour radius γ must be > 0, got {gamma}: it is a cosine distance in (0, 2], "
            "and clusters closer than γ share bandit credit (the paper uses 0.2)"
        )
    c = np.ascontiguousarray(l2_normalize(centroids))
    k = c.shape[0]
    block = max(1, block_elements // max(k, 1))
    rows, cols, dists = [], [], []
    for start in range(0, k, block):
        stop = min(start + block, k)
        d = 1.0 - c[start:stop] @ c[start:].T
        r, q = np.nonzero(d < gamma)
        upper = q > r
        r, q = r[upper], q[upper]
        rows.append(r + start)
        cols.append(q + start)
        dists.append(np.clip(d[r, q], 0.0, None))
    i = np.concatenate([*rows, *cols]).astype(np.int64)
    j = np.concatenate([*cols, *rows]).astype(np.int64)
    d = np.concatenate([*dists, *dists]).astype(np.float32)
    order = np.lexsort((j, i))
    indptr = np.concatenate([[0], np.cumsum(np.bincount(i, minlength=k))])
    log.info("neighbour graph: %d clusters, %d pairs within γ=%g", k, i.size // 2, gamma)
    return NeighbourGraph(indptr, j[order], d[order], gamma)


def save_neighbour_graph(path: str | os.PathLike[str], graph: NeighbourGraph) -> None:
    """Write the CSR arrays to one .npz, atomically."""
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(
            fh,
            indptr=graph.indptr.astype(np.int64),
            indices=graph.indices.astype(np.int32),
            distances=graph.distances.astype(np.float32),
        )


def load_neighbour_graph(path: str | os.PathLike[str]) -> NeighbourGraph:
    """The CSR arrays written by `save_neighbour_graph` (without the radius, which the file does not hold)."""
    with np.load(path, allow_pickle=False) as data:
        return NeighbourGraph(data["indptr"], data["indices"], data["distances"])
