"""Semantic dedup (`quadselect.select.semdedup`) against a brute-force reading of its rule on small sets: within
each cluster, visit documents farthest from the centroid first and drop one whose cosine similarity to a document
already kept is above 1 − ε. The blocked implementation is run with tiny blocks so that block boundaries are crossed."""

from __future__ import annotations

import numpy as np
import pytest

import quadselect.select.semdedup as semdedup
from quadselect.select.semdedup import dedup_cluster, semantic_dedup


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _brute_force(embeddings: np.ndarray, cluster_ids: np.ndarray, centroids: np.ndarray, epsilon: float) -> set[int]:
    """The removed documents, one pair of documents at a time in plain Python."""
    removed = set()
    for c in np.unique(cluster_ids):
        members = [int(i) for i in np.flatnonzero(cluster_ids == c)]
        distance = {i: 1 - float(embeddings[i] @ centroids[c]) for i in members}
        members.sort(key=lambda i: (-distance[i], i))
        kept: list[int] = []
        for i in members:
            if any(float(embeddings[i] @ embeddings[j]) > 1 - epsilon for j in kept):
                removed.add(i)
            else:
                kept.append(i)
    return removed


def _near_duplicate_set(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """60 documents in 3 clusters; a third are perturbed copies of others (some copies of copies: chains)."""
    rng = np.random.default_rng(seed)
    centroids = _unit(rng.normal(size=(3, 16)))
    base = _unit(centroids[rng.integers(0, 3, size=40)] + 0.6 * rng.normal(size=(40, 16)))
    copies = []
    for _ in range(20):
        source = np.vstack([base, *copies]) if copies else base
        noise = rng.uniform(0.01, 0.15) * rng.normal(size=(1, 16))
        copies.append(_unit(source[rng.integers(0, len(source))] + noise)[0])
    embeddings = np.vstack([base, np.array(copies)]).astype(np.float32)
    cluster_ids = np.argmax(embeddings @ centroids.T, axis=1)
    return embeddings, cluster_ids, centroids.astype(np.float32)


@pytest.mark.parametrize(("seed", "epsilon", "block"), [(0, 0.05, 4), (1, 0.02, 3), (2, 0.1, 1024), (3, 0.3, 5)])
def test_removes_what_brute_force_removes(
    seed: int, epsilon: float, block: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(semdedup, "BLOCK", block)
    embeddings, cluster_ids, centroids = _near_duplicate_set(seed)
    result = semantic_dedup(cluster_ids, centroids, lambda positions: embeddings[positions], epsilon)
    expected = _brute_force(embeddings, cluster_ids, centroids, epsilon)
    assert expected, "the set has no near-duplicates at this ε: the test would prove nothing"
    assert set(result.removed.tolist()) == expected
    assert sorted([*result.kept.tolist(), *result.removed.tolist()]) == list(range(len(embeddings)))
    # Each removed document names a kept one of its cluster that it is that similar to.
    kept = set(result.kept.tolist())
    for removed, of, similarity in zip(result.removed, result.duplicate_of, result.similarity, strict=True):
        assert of in kept and cluster_ids[of] == cluster_ids[removed]
        assert similarity == pytest.approx(float(embeddings[removed] @ embeddings[of]), abs=1e-5)
        assert similarity > 1 - epsilon


def test_keeps_the_copy_farthest_from_the_centroid() -> None:
    centroid = np.array([1.0, 0.0], dtype=np.float32)
    near = _unit(np.array([[1.0, 0.05], [1.0, 0.30]], dtype=np.float32))  # the second is farther from the centroid
    duplicate_of, _ = dedup_cluster(near, centroid, epsilon=0.1)
    assert duplicate_of.tolist() == [1, -1]


def test_a_chain_keeps_its_far_end() -> None:
    """a ≈ b ≈ c, a and c apart: a kept (farthest), b dropped as a's duplicate, c kept since b is gone (the rule
    compares with kept documents only; the paper's code would drop c as well)."""
    angles = np.radians([40.0, 33.0, 26.0])  # visited in this order: farthest from the centroid (0°) first
    chain = np.stack([np.cos(angles), np.sin(angles)], axis=1).astype(np.float32)
    epsilon = 1 - np.cos(np.radians(8.0))  # 7° apart is a duplicate, 14° is not
    duplicate_of, _ = dedup_cluster(chain, np.array([1.0, 0.0], dtype=np.float32), epsilon)
    assert duplicate_of.tolist() == [-1, 0, -1]


def test_reads_one_cluster_at_a_time() -> None:
    embeddings, cluster_ids, centroids = _near_duplicate_set(4)
    asked: list[np.ndarray] = []

    def embeddings_of(positions: np.ndarray) -> np.ndarray:
        asked.append(positions)
        return embeddings[positions]

    semantic_dedup(cluster_ids, centroids, embeddings_of, 0.05)
    assert len(asked) == np.unique(cluster_ids).size
    assert all(np.unique(cluster_ids[p]).size == 1 for p in asked)
    assert max(p.size for p in asked) == np.bincount(cluster_ids).max()


def test_epsilon_outside_the_open_unit_interval_is_an_error() -> None:
    with pytest.raises(ValueError, match=r"ε must lie in \(0, 1\)"):
        semantic_dedup(np.zeros(2, np.int64), np.ones((1, 2)), lambda p: np.ones((p.size, 2)), 1.0)
