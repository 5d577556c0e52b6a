"""Spherical k-means, streaming assignment, the sparse neighbour graph, c-TF-IDF terms and agreement scores."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from quadselect.atomic import TMP_PREFIX
from quadselect.cluster import (
    ClusterTally,
    NeighbourGraph,
    adjusted_rand,
    assign,
    auto_gamma,
    default_num_clusters,
    distinctive_terms,
    kmeans_sample_size,
    load_neighbour_graph,
    neighbour_graph,
    purity,
    sample_rows,
    save_neighbour_graph,
    train_kmeans,
)
from quadselect.embed import l2_normalize, open_array, write_array
from quadselect.select.quad import QuadParams, resolve_params


def blobs(n_per: int, k: int, dim: int = 32, spread: float = 0.05, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """`k` tight groups of unit vectors around random directions, with their group labels."""
    rng = np.random.default_rng(seed)
    centres = l2_normalize(rng.standard_normal((k, dim)))
    labels = np.repeat(np.arange(k), n_per)
    return l2_normalize(centres[labels] + spread * rng.standard_normal((labels.size, dim))), labels


def test_default_num_clusters_rule() -> None:
    assert default_num_clusters(25_037) == 79
    assert default_num_clusters(600_000_000) == 12_247
    assert default_num_clusters(1) == 1
    assert default_num_clusters(3) == 1
    with pytest.raises(ValueError, match="empty"):
        default_num_clusters(0)
    assert kmeans_sample_size(1_000, 64) == 1_000
    assert kmeans_sample_size(10**6, 64) == 64 * 64


def test_kmeans_is_deterministic_given_the_seed() -> None:
    x, _ = blobs(60, 6, spread=0.3)
    first = train_kmeans(x, 6, seed=3, niter=10)
    np.testing.assert_array_equal(first, train_kmeans(x, 6, seed=3, niter=10))
    assert not np.array_equal(first, train_kmeans(x, 6, seed=4, niter=10))
    np.testing.assert_allclose(np.linalg.norm(first, axis=1), 1.0, rtol=1e-5)
    ids1, dist1 = assign(first, x)
    ids2, dist2 = assign(train_kmeans(x, 6, seed=3, niter=10), x)
    np.testing.assert_array_equal(ids1, ids2)
    np.testing.assert_array_equal(dist1, dist2)


def test_kmeans_takes_every_unsigned_32_bit_stage_seed() -> None:
    """Stage seeds are unsigned 32-bit (RunConfig.seed_for: `seed: 3` gives one above 2**31); faiss takes a signed
    int, and once overflowed on half of all run seeds. A seed and the same seed mod 2**31 give the same centroids."""
    x, _ = blobs(60, 6, spread=0.3)
    high = 2**32 - 5
    same = train_kmeans(x, 6, seed=high - 2**31, niter=5)
    np.testing.assert_array_equal(train_kmeans(x, 6, seed=high, niter=5), same)


def test_kmeans_converges_to_spherical_lloyd_fixed_point() -> None:
    """Each centroid is the normalized mean of the rows assigned to it (the spherical k-means update)."""
    x, _ = blobs(40, 5, spread=0.4, seed=2)
    centroids = train_kmeans(x, 5, seed=0, niter=50)
    ids, _ = assign(centroids, x)
    for c in range(5):
        np.testing.assert_allclose(centroids[c], l2_normalize(x[ids == c].sum(axis=0, keepdims=True))[0], atol=1e-5)


def test_kmeans_separates_two_groups() -> None:
    x, labels = blobs(50, 2)
    ids, _ = assign(train_kmeans(x, 2, seed=0), x)
    assert purity(labels, ids) == 1.0
    assert adjusted_rand(labels, ids) == pytest.approx(1.0)


def test_more_clusters_than_documents_is_a_clear_error() -> None:
    x, _ = blobs(2, 3)
    with pytest.raises(ValueError, match=r"K=7 clusters from 6 documents"):
        train_kmeans(x, 7, seed=0)
    with pytest.raises(ValueError, match="at least 1"):
        train_kmeans(x, 0, seed=0)


def test_assign_matches_brute_force_on_a_float16_memmap(tmp_path: Path) -> None:
    x, _ = blobs(50, 4, spread=0.5, seed=1)
    centroids = train_kmeans(x, 5, seed=0, niter=5)
    write_array(tmp_path / "shard.npy", x.astype(np.float16))
    stored = open_array(tmp_path / "shard.npy")
    ids, dist = assign(centroids, stored, block_rows=7)
    sims = l2_normalize(np.asarray(stored, dtype=np.float32)) @ centroids.T
    assert ids.dtype == np.int32 and dist.dtype == np.float32
    np.testing.assert_array_equal(ids, sims.argmax(axis=1))
    np.testing.assert_allclose(dist, 1.0 - sims.max(axis=1), atol=1e-5)
    with pytest.raises(ValueError, match="do not match"):
        assign(centroids, x[:, :8])


def test_zero_rows_get_distance_one() -> None:
    centroids = l2_normalize(np.eye(3, dtype=np.float32))
    _, dist = assign(centroids, np.zeros((2, 3), dtype=np.float32))
    np.testing.assert_allclose(dist, 1.0)


def test_sample_rows_is_seeded_and_draws_distinct_rows_from_all_shards(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    shards = []
    for i, rows in enumerate((30, 1, 45)):
        write_array(tmp_path / f"s{i}.npy", l2_normalize(rng.standard_normal((rows, 8))).astype(np.float16))
        shards.append(tmp_path / f"s{i}.npy")
    pool = l2_normalize(np.concatenate([np.asarray(open_array(s), dtype=np.float32) for s in shards]))
    a = sample_rows(shards, 40, seed=5)
    np.testing.assert_array_equal(a, sample_rows(shards, 40, seed=5))
    assert not np.array_equal(a, sample_rows(shards, 40, seed=6))
    # Every sampled row is a distinct row of the pool.
    matches = np.abs(a[:, None, :] - pool[None, :, :]).max(axis=2) < 1e-6
    assert (matches.sum(axis=1) == 1).all() and len(set(matches.argmax(axis=1))) == 40
    assert sample_rows(shards, 76, seed=0).shape == (76, 8)
    with pytest.raises(ValueError, match="cannot sample 77 rows from 76"):
        sample_rows(shards, 77, seed=0)


def test_neighbour_graph_is_the_symmetric_radius_graph_computed_in_blocks() -> None:
    centroids = l2_normalize(np.random.default_rng(2).standard_normal((40, 4)))
    gamma = 0.5
    graph = neighbour_graph(centroids, gamma, block_elements=100)
    assert graph.n_arms == 40
    pairs = {}
    for i in range(40):
        neigh, dist = graph.neighbours(i)
        assert np.all(np.diff(neigh) > 0), "neighbours sorted and unique"
        assert np.all(dist < gamma) and i not in neigh
        pairs.update({(i, int(j)): float(d) for j, d in zip(neigh, dist, strict=True)})
    assert all(pairs[(j, i)] == d for (i, j), d in pairs.items())
    dense = 1.0 - centroids @ centroids.T
    expected = {(i, j) for i in range(40) for j in range(40) if i != j and dense[i, j] < gamma}
    assert set(pairs) == expected and len(expected) > 40
    np.testing.assert_allclose([pairs[p] for p in sorted(pairs)], [dense[p] for p in sorted(pairs)], atol=1e-6)


@pytest.mark.parametrize("gamma", [0.0, -0.1])
def test_non_positive_gamma_is_a_clear_error(gamma: float) -> None:
    with pytest.raises(ValueError, match="γ must be > 0"):
        neighbour_graph(np.eye(3, dtype=np.float32), gamma)


def test_graph_from_dense_keeps_pairs_within_radius() -> None:
    dist = np.array([[0.0, 0.1, 0.5], [0.1, 0.0, 0.2], [0.5, 0.2, 0.0]])
    graph = NeighbourGraph.from_dense(dist, radius=0.3)
    assert graph.indptr.tolist() == [0, 1, 3, 4]
    assert graph.neighbours(1)[0].tolist() == [0, 2]
    np.testing.assert_allclose(graph.neighbours(1)[1], [0.1, 0.2])
    assert graph.neighbours(2)[0].tolist() == [1]


def test_graph_validation() -> None:
    with pytest.raises(ValueError, match="indices"):
        NeighbourGraph(np.array([0, 1]), np.array([5]), np.array([0.1]))
    with pytest.raises(ValueError, match="distances"):
        NeighbourGraph(np.array([0, 1, 1]), np.array([1]), np.array([-0.1]))
    with pytest.raises(ValueError, match="outside"):
        NeighbourGraph.from_dict({4: ([0], [0.1])}, n_arms=2)


def _on_circle(degrees: list[float]) -> np.ndarray:
    radians = np.deg2rad(degrees)
    return np.stack([np.cos(radians), np.sin(radians)], axis=1).astype(np.float32)


def test_auto_gamma_is_the_median_distance_to_the_fourth_nearest_other_centroid() -> None:
    # By hand: six centroids 10° apart. The 4th nearest other centroid lies 40°, 30°, 20°, 20°, 30°, 40° away, whose
    # median is 30°; the 2nd nearest lies 20°, 10°, 10°, 10°, 10°, 20° away (median 10°).
    six = _on_circle([0, 10, 20, 30, 40, 50])
    assert auto_gamma(six) == pytest.approx(1 - np.cos(np.deg2rad(30)), abs=1e-6)
    assert auto_gamma(six, neighbours=1) == pytest.approx(1 - np.cos(np.deg2rad(10)), abs=1e-6)
    # Fewer others than neighbours + 1: the farthest other (30°, 20°, 30° away).
    assert auto_gamma(_on_circle([0, 10, 30])) == pytest.approx(1 - np.cos(np.deg2rad(30)), abs=1e-6)
    assert auto_gamma(six[:1]) == 1e-6  # nobody to share with

    # Brute force, in float64, on centroids that are not unit yet.
    centroids = np.random.default_rng(7).standard_normal((31, 8)).astype(np.float32) * 3
    unit = centroids / np.linalg.norm(centroids, axis=1, keepdims=True)
    dense = 1.0 - unit.astype(np.float64) @ unit.T.astype(np.float64)
    np.fill_diagonal(dense, np.inf)
    for neighbours in (1, 3, 5):
        expected = np.median(np.sort(dense, axis=1)[:, neighbours])
        assert auto_gamma(centroids, neighbours=neighbours) == pytest.approx(expected, abs=1e-6)


def test_the_graph_records_its_radius_and_quad_auto_gamma_uses_it() -> None:
    centroids = l2_normalize(np.random.default_rng(8).standard_normal((20, 6)))
    gamma = auto_gamma(centroids)
    graph = neighbour_graph(centroids)
    assert graph.radius == gamma
    assert graph.indices.size and graph.distances.max() < gamma
    expected = neighbour_graph(centroids, gamma)
    np.testing.assert_array_equal(graph.indptr, expected.indptr)
    np.testing.assert_array_equal(graph.indices, expected.indices)
    assert neighbour_graph(centroids, 0.25).radius == 0.25

    cluster_ids = np.arange(200) % 20
    n_tokens = np.full(200, 10)
    # The library's quad_select with gamma="auto" shares credit within the very γ the cluster stage uses.
    assert resolve_params(QuadParams(), cluster_ids, n_tokens, 500, 20, graph).gamma == gamma
    assert resolve_params(QuadParams(gamma=0.1), cluster_ids, n_tokens, 500, 20, graph).gamma == 0.1
    assert resolve_params(QuadParams(), cluster_ids, n_tokens, 500, 20, None).gamma == 0.0
    unknown = NeighbourGraph(graph.indptr, graph.indices, graph.distances)
    with pytest.raises(ValueError, match="does not record one"):
        resolve_params(QuadParams(), cluster_ids, n_tokens, 500, 20, unknown)
    with pytest.raises(ValueError, match="radius"):
        NeighbourGraph(np.zeros(4), np.zeros(0), np.zeros(0), radius=0.0)


def test_neighbour_graph_save_load_roundtrip(tmp_path: Path) -> None:
    graph = neighbour_graph(l2_normalize(np.random.default_rng(4).standard_normal((25, 3))), 0.3)
    save_neighbour_graph(tmp_path / "graph.npz", graph)
    loaded = load_neighbour_graph(tmp_path / "graph.npz")
    np.testing.assert_array_equal(loaded.indptr, graph.indptr)
    np.testing.assert_array_equal(loaded.indices, graph.indices)
    np.testing.assert_allclose(loaded.distances, graph.distances, rtol=1e-7)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(TMP_PREFIX)] == []


def test_distinctive_terms_pick_each_clusters_own_words() -> None:
    texts = {
        0: ["The select statement reads rows from a table.", "An index makes a table query fast."],
        3: ["Thou art more lovely and more temperate, sweet love.", "Shall I compare thee, my love?"],
        5: ["The", "a 123"],
    }
    terms = distinctive_terms(texts, top_n=3)
    assert terms[0][0][0] == "table" and terms[3][0][0] == "love"
    assert len(terms[0]) == 3 and terms[0][0][1] >= terms[0][1][1] >= terms[0][2][1] > 0
    assert terms[5] == []
    assert distinctive_terms({1: ["the and of"]}, top_n=3) == {1: []}


def test_purity_and_adjusted_rand_by_hand() -> None:
    labels = ["a", "a", "a", "b", "b", "c"]
    clusters = [0, 0, 1, 1, 1, 1]
    # cluster 0 is all "a" (2), cluster 1's majority is "b" (2 of 4): purity 4/6.
    assert purity(labels, clusters) == pytest.approx(4 / 6)
    assert purity(labels, [0, 1, 2, 3, 4, 5]) == 1.0
    assert adjusted_rand(labels, [7, 7, 7, 9, 9, 8]) == pytest.approx(1.0)
    assert adjusted_rand(labels, clusters) < 0.5


def test_purity_and_adjusted_rand_from_counts_agree_with_scikit_learn() -> None:
    from sklearn.metrics import adjusted_rand_score
    from sklearn.metrics.cluster import contingency_matrix

    rng = np.random.default_rng(4)
    for n_labels, n_clusters in [(3, 5), (7, 40), (1, 4), (5, 1)]:
        labels = rng.choice([f"src{i}" for i in range(n_labels)], 500)
        clusters = rng.integers(0, n_clusters, 500)
        table = contingency_matrix(labels, clusters)
        assert adjusted_rand(labels, clusters) == pytest.approx(adjusted_rand_score(labels, clusters), abs=1e-12)
        assert purity(labels, clusters) == pytest.approx(table.max(axis=0).sum() / 500)


def test_the_cluster_tally_streams_the_same_counts_and_sample_however_the_pool_is_cut() -> None:
    rng = np.random.default_rng(5)
    n, k = 3_000, 12
    cluster_ids = rng.integers(0, k - 1, n)  # the last cluster stays empty
    n_tokens = rng.integers(1, 900, n)
    sources = rng.choice(["web", "code", "books", None], n).tolist()

    def tally(cuts: list[int]) -> ClusterTally:
        result = ClusterTally(k, seed=3, sample_docs=10)
        for lo, hi in itertools.pairwise([0, *cuts, n]):
            result.add(lo, cluster_ids[lo:hi], n_tokens[lo:hi], sources[lo:hi])
        return result

    whole, cut = tally([]), tally([1, 700, 701, 2_500])
    assert whole.docs.tolist() == np.bincount(cluster_ids, minlength=k).tolist() == cut.docs.tolist()
    assert whole.tokens.tolist() == [int(n_tokens[cluster_ids == c].sum()) for c in range(k)] == cut.tokens.tolist()
    assert whole.purity() == pytest.approx(purity(sources, cluster_ids))
    assert whole.adjusted_rand() == pytest.approx(adjusted_rand(sources, cluster_ids))
    for c, rows in whole.sample_rows().items():
        assert rows.tolist() == cut.sample_rows()[c].tolist()
        assert rows.size == min(10, int((cluster_ids == c).sum())) and (cluster_ids[rows] == c).all()
    other_seed = ClusterTally(k, seed=4, sample_docs=10)
    other_seed.add(0, cluster_ids, n_tokens, sources)
    assert any(set(other_seed.sample_rows()[c]) != set(whole.sample_rows()[c]) for c in range(k - 1))
