"""Duplicate ids resolved from bucket files (`quadselect.data.id_claims`) against one ordered read with an
`IdRegistry` (a set of every hash, the reference): the same renames on adversarial ids (ids that are earlier
renames, chains of renames, renames colliding with later ids), for any bucket size and any cut into parts; and the
memory it allocates on a 4M-document role, far below a set of its hashes."""

from __future__ import annotations

import random
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from quadselect.data import id_claims
from quadselect.data.id_claims import resolve_duplicates
from quadselect.data.normalize import IdRegistry, id_hash


def _ordered_read(ids: list[str]) -> dict[int, str]:
    registry, renames = IdRegistry(), {}
    for position, doc_id in enumerate(ids):
        replacement = registry.claim(doc_id)
        if replacement is not None:
            renames[position] = replacement
    return renames


def _adversarial_ids(rng: random.Random) -> list[str]:
    """Few distinct ids, many of them shaped like the renames the others will get."""
    bases = [f"x{rng.randrange(4)}" for _ in range(3)]
    ids = []
    for _ in range(rng.randrange(1, 80)):
        base = rng.choice(bases)
        ids.append(
            rng.choice([base, base, f"{base}~dup{rng.randrange(2, 5)}", f"{base}~dup2~dup2", f"u{rng.randrange(99)}"])
        )
    return ids


@pytest.mark.parametrize("bucket_docs", [1, 5, 1 << 22])
def test_the_renames_are_an_ordered_reads(tmp_path: Path, monkeypatch, bucket_docs: int) -> None:
    monkeypatch.setattr(id_claims, "BUCKET_DOCS", bucket_docs)  # 1: as many buckets as the next power of two
    for seed in range(80):
        rng = random.Random(seed)
        ids = _adversarial_ids(rng)
        hashes = np.asarray([id_hash(i) for i in ids], dtype=np.uint64)
        cuts = sorted(rng.sample(range(1, len(ids)), min(3, len(ids) - 1))) if len(ids) > 1 else []
        asked: list[int] = []

        def id_of(position: int, ids: list[str] = ids, asked: list[int] = asked) -> str:
            asked.append(position)
            return ids[position]

        work = tmp_path / f"{bucket_docs}-{seed}"
        work.mkdir()
        renames = resolve_duplicates(iter(np.split(hashes, cuts)), len(ids), id_of, work)
        expected = _ordered_read(ids)
        assert renames == expected, (seed, ids)
        assert asked == sorted(expected), "ids are read for the renamed documents alone, in order"


def test_a_count_that_is_not_the_documents_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="3 id hashes for 4 documents"):
        resolve_duplicates(iter([np.arange(1, 4, dtype=np.uint64)]), 4, str, tmp_path)


def test_a_four_million_document_role_holds_a_bucket_not_its_hashes(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(id_claims, "BUCKET_DOCS", 1 << 15)
    n, part = 4_000_000, 1 << 15
    rng = np.random.default_rng(0)
    hashes = rng.integers(1, 2**63, size=n, dtype=np.uint64)
    hashes[[10, 1_500_000]] = hashes[5]  # two repeats of an early id
    ids = {5: "early", 10: "early", 1_500_000: "early"}

    tracemalloc.start()
    try:
        parts = (hashes[start : start + part] for start in range(0, n, part))
        renames = resolve_duplicates(parts, n, ids.__getitem__, tmp_path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert renames == {10: "early~dup2", 1_500_000: "early~dup3"}
    # A set of the hashes, as an ordered read keeps, takes ~60 bytes a document; the array alone 8.
    assert peak < hashes.nbytes / 8, f"{peak / 1e6:.1f} MB allocated for {n:,} documents"
