"""The bounded driver's pieces (docs/scaling.md, "What grows with the pool"): the on-disk cluster index against a
brute-force grouping, Quad on memory-mapped arrays against Quad on the same arrays in memory, and Quad's own memory
on a 2M-document pool far below the pool's arrays."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from quadselect.select import members as members_module
from quadselect.select import quad as quad_module
from quadselect.select.members import ClusterMembers, cluster_totals
from quadselect.select.quad import QuadParams, QuadSelector


def _on_disk(path: Path, array: np.ndarray) -> np.ndarray:
    np.save(path, array)
    return np.load(path, mmap_mode="r")


def test_the_on_disk_index_groups_every_cluster_in_ascending_order(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(members_module, "CHUNK_DOCS", 37)  # many chunks, clusters spread across them
    rng = np.random.default_rng(0)
    cluster_ids = rng.integers(0, 9, 1_000).astype(np.int32)  # cluster 9 (of 10) is empty
    index = ClusterMembers.on_disk(_on_disk(tmp_path / "ids.npy", cluster_ids), 10, tmp_path / "members.npy")
    for c in range(10):
        np.testing.assert_array_equal(index.of(c), np.flatnonzero(cluster_ids == c))
    assert index.sizes.tolist() == np.bincount(cluster_ids, minlength=10).tolist()
    n_tokens = rng.integers(1, 500, cluster_ids.size)
    sizes, tokens = cluster_totals(cluster_ids, n_tokens, 10)
    assert tokens.tolist() == [float(n_tokens[cluster_ids == c].sum()) for c in range(10)]
    assert sizes.tolist() == index.sizes.tolist()


def test_quad_on_memory_maps_selects_what_it_selects_in_memory(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(members_module, "CHUNK_DOCS", 101)
    monkeypatch.setattr(quad_module, "ORDER_CACHE_DOCS", 50)  # cluster orders evicted and rebuilt between pulls
    rng = np.random.default_rng(1)
    cluster_ids = rng.integers(0, 12, 3_000).astype(np.int32)
    n_tokens = rng.integers(20, 400, cluster_ids.size)
    quality = rng.normal(0, 1, 12)[cluster_ids] + rng.normal(0, 0.5, cluster_ids.size)
    params = QuadParams(pilot_docs=40, docs_per_arm=6)
    budget = int(n_tokens.sum() * 0.1)

    in_memory = QuadSelector(cluster_ids, n_tokens, budget, lambda d: quality[d], params, seed=5).run()
    mapped_ids = _on_disk(tmp_path / "ids.npy", cluster_ids)
    index = ClusterMembers.on_disk(mapped_ids, 12, tmp_path / "members.npy")
    mapped = QuadSelector(
        mapped_ids,
        _on_disk(tmp_path / "tokens.npy", n_tokens),
        budget,
        lambda d: quality[d],
        params,
        seed=5,
        members=index,
    ).run()
    np.testing.assert_array_equal(mapped.selected, in_memory.selected)
    np.testing.assert_array_equal(mapped.scored, in_memory.scored)
    assert mapped.trajectory == in_memory.trajectory
    # Every document is taken at most once, and none of the pilot's is taken again.
    taken = np.concatenate([mapped.scored, mapped.selected, mapped.pilot])
    assert np.intersect1d(mapped.pilot, np.concatenate([mapped.scored, mapped.selected])).size == 0
    assert np.unique(np.concatenate([mapped.scored, mapped.pilot])).size == mapped.scored.size + mapped.pilot.size
    assert set(mapped.selected.tolist()) <= set(taken.tolist())


def test_quads_memory_does_not_grow_with_the_pool(tmp_path: Path, monkeypatch) -> None:
    """2M documents in 2,000 clusters: the pool's two arrays are 24 MB and grouping them in memory takes more than
    that again; on memory maps Quad allocates a small fraction of it (chunks, pulled clusters, what it scored and
    selected: about 10,000 documents here)."""
    monkeypatch.setattr(members_module, "CHUNK_DOCS", 1 << 16)
    monkeypatch.setattr(quad_module, "ORDER_CACHE_DOCS", 1 << 16)
    n, k = 2_000_000, 2_000
    rng = np.random.default_rng(2)
    cluster_ids = _on_disk(tmp_path / "ids.npy", rng.integers(0, k, n).astype(np.int32))
    n_tokens = _on_disk(tmp_path / "tokens.npy", rng.integers(50, 500, n))
    index = ClusterMembers.on_disk(cluster_ids, k, tmp_path / "members.npy")
    pool_bytes = cluster_ids.nbytes + n_tokens.nbytes
    quality = rng.normal(0, 1, k)

    def score(docs: np.ndarray) -> np.ndarray:
        return quality[cluster_ids[docs]] + 0.1 * np.sin(docs.astype(float))

    tracemalloc.start()
    try:
        selector = QuadSelector(cluster_ids, n_tokens, 1_000_000, score, QuadParams(), seed=0, members=index)
        result = selector.run()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.selected_tokens >= 1_000_000 and result.docs_scored < 20_000
    assert peak < pool_bytes / 8, f"Quad allocated {peak / 1e6:.1f} MB on a pool of {pool_bytes / 1e6:.0f} MB"


@pytest.mark.parametrize("bounds", [[0, 3, 2], [1, 3], [0, 2]])
def test_an_index_with_bounds_that_do_not_cover_its_array_is_refused(bounds: list[int]) -> None:
    with pytest.raises(ValueError, match="bounds"):
        ClusterMembers(np.arange(3), np.asarray(bounds))
