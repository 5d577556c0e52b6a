"""Duplicate ids over a whole role, claimed as one ordered read claims them (`normalize.IdRegistry`: the first
document keeps its id, a later one gets `<id>~dupN` with the smallest N ≥ 2 not claimed before it), with the driver's
memory bounded by the duplicates, not the pool.

An ordered read keeps every id's hash in a set: dozens of bytes a document, ~40 GB at 600M documents. Here each
document's hash and its position in reading order are spread over bucket files on disk by the hash's leading bits;
each bucket, sorted on its own, gives every hash's first position and the positions that repeat an earlier hash.
"Was this id claimed before position p?" is then: its hash first occurs before p, or an earlier rename created it.
Only the repeats are walked, in order, with the renames they make. A rename `x~dup2` that a later document carries
as its own id makes that document a repeat as well: it is queued when the rename is made.

Memory: one bucket (`BUCKET_DOCS` documents, 16 bytes each) while sorting, then the repeats and their renames. Disk:
16 bytes a document while the reduction runs.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Iterable
from contextlib import ExitStack
from pathlib import Path

import numpy as np

from quadselect.data.normalize import id_hash

BUCKET_DOCS = 1 << 22
"""Documents per bucket, on average: what one sort holds (64 MB)."""
RECORD = np.dtype([("hash", "<u8"), ("position", "<i8")])


class FirstPositions:
    """Each id hash's first position in reading order, one sorted table per bucket on disk (memory-mapped)."""

    def __init__(self, directory: Path, bits: int) -> None:
        self.directory, self.bits = directory, bits
        self._tables: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # opened once: a role may hold many repeats

    def bucket_of(self, hashes: np.ndarray) -> np.ndarray:
        return (hashes >> np.uint64(64 - self.bits)).astype(np.int64) if self.bits else np.zeros(hashes.size, np.int64)

    def of(self, key: int) -> int | None:
        """The first position of hash `key`, None when no document has it."""
        bucket = int(self.bucket_of(np.asarray([key], dtype=np.uint64))[0])
        if bucket not in self._tables:
            hashes = np.load(self.directory / f"hashes-{bucket}.npy", mmap_mode="r")
            self._tables[bucket] = hashes, np.load(self.directory / f"first-{bucket}.npy", mmap_mode="r")
        hashes, first = self._tables[bucket]
        at = int(np.searchsorted(hashes, np.uint64(key)))
        if at == hashes.size or int(hashes[at]) != key:
            return None
        return int(first[at])


def resolve_duplicates(
    hash_parts: Iterable[np.ndarray], total: int, id_of: Callable[[int], str], work: Path
) -> dict[int, str]:
    """The renames {position: new id} of an ordered read of `total` documents whose id hashes (uint64, never 0)
    come in `hash_parts`, in reading order. `id_of(position)` is the id string of a document to rename; it is called
    for those alone, in ascending position. `work` is an empty folder for the bucket files."""
    bits = max(0, math.ceil(math.log2(max(1.0, total / BUCKET_DOCS))))
    first = FirstPositions(work, bits)
    repeats = _spill_and_sort(hash_parts, total, first, work)
    renames: dict[int, str] = {}
    created: set[int] = set()

    def claimed_before(key: int, position: int) -> bool:
        if key in created:
            return True
        found = first.of(key)
        return found is not None and found < position

    queue = repeats.tolist()  # ascending: already a heap
    while queue:
        position = heapq.heappop(queue)
        original, n = id_of(position), 2
        while claimed_before(id_hash(f"{original}~dup{n}"), position):
            n += 1
        renamed = f"{original}~dup{n}"
        key = id_hash(renamed)
        created.add(key)
        renames[position] = renamed
        carrier = first.of(key)  # a later document whose own id is this rename: a repeat now
        if carrier is not None and carrier > position:
            heapq.heappush(queue, carrier)
    return renames


def _spill_and_sort(hash_parts: Iterable[np.ndarray], total: int, first: FirstPositions, work: Path) -> np.ndarray:
    """Write (hash, position) records to the bucket files, then sort each bucket into its first-position table;
    returns the positions that repeat an earlier document's hash, ascending."""
    buckets = 1 << first.bits
    start = 0
    with ExitStack() as stack:
        files = [stack.enter_context(open(work / f"bucket-{b}.bin", "wb")) for b in range(buckets)]
        for hashes in hash_parts:
            records = np.empty(hashes.size, dtype=RECORD)
            records["hash"], records["position"] = hashes, np.arange(start, start + hashes.size)
            start += hashes.size
            of_bucket = first.bucket_of(records["hash"])
            order = np.argsort(of_bucket, kind="stable")
            bounds = np.searchsorted(of_bucket[order], np.arange(buckets + 1))
            for b in np.flatnonzero(np.diff(bounds)):
                records[order[bounds[b] : bounds[b + 1]]].tofile(files[b])
    if start != total:
        raise RuntimeError(f"{start} id hashes for {total} documents")
    repeats = []
    for b in range(buckets):
        path = work / f"bucket-{b}.bin"
        records = np.fromfile(path, dtype=RECORD)
        path.unlink()
        records = records[np.lexsort((records["position"], records["hash"]))]
        is_first = np.r_[True, records["hash"][1:] != records["hash"][:-1]] if records.size else np.zeros(0, bool)
        np.save(work / f"hashes-{b}.npy", records["hash"][is_first])
        np.save(work / f"first-{b}.npy", records["position"][is_first])
        repeats.append(records["position"][~is_first])
    return np.sort(np.concatenate([np.zeros(0, np.int64), *repeats]))
