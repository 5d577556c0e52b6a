"""The pool's per-document arrays a selection method reads (pool row, cluster, tokens), restricted to the eligible
rows and kept as memory maps in the select stage's work folder: at 600M documents they are ~10 GB, which the
driver must not hold (docs/scaling.md, "What grows with the pool").

They are written from the cluster stage's assignment files, one shard at a time, leaving out the `excluded` rows
(contaminated with `decontaminate: drop`, duplicates with `dedup: semantic`). A method's positions index these
arrays; `rows[position]` is the document's pool row.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from quadselect.atomic import atomic_path

FILES = {"rows": np.int64, "cluster_ids": np.int32, "n_tokens": np.int64}


@dataclass(frozen=True)
class EligibleArrays:
    rows: np.ndarray
    """The pool row of each eligible document, ascending."""
    cluster_ids: np.ndarray
    n_tokens: np.ndarray
    pool_docs: int
    pool_tokens: int

    @property
    def size(self) -> int:
        return int(self.rows.size)

    @classmethod
    def write(cls, assignments: Sequence[Path], pool_docs: int, excluded: np.ndarray, to: Path) -> EligibleArrays:
        """Stream the assignment files (in pool order) into memory maps in `to`, without the `excluded` pool
        rows (sorted, unique)."""
        to.mkdir(parents=True, exist_ok=True)
        size = pool_docs - excluded.size
        paths = {name: to / f"{name}.npy" for name in FILES}
        pool_tokens = 0
        with ExitStack() as stack:
            temporaries = {name: stack.enter_context(atomic_path(path)) for name, path in paths.items()}
            out = {
                name: np.lib.format.open_memmap(tmp, mode="w+", dtype=FILES[name], shape=(size,))
                for name, tmp in temporaries.items()
            }
            start = written = 0
            for path in assignments:
                table = pq.read_table(path, columns=["cluster", "n_tokens"])
                rows = np.arange(start, start + table.num_rows, dtype=np.int64)
                keep = np.ones(rows.size, dtype=bool)
                lo, hi = np.searchsorted(excluded, [start, start + rows.size])
                keep[excluded[lo:hi] - start] = False
                n_tokens = table["n_tokens"].to_numpy()
                pool_tokens += int(n_tokens.sum(dtype=np.int64))
                end = written + int(keep.sum())
                out["rows"][written:end] = rows[keep]
                out["cluster_ids"][written:end] = table["cluster"].to_numpy()[keep]
                out["n_tokens"][written:end] = n_tokens[keep]
                start, written = start + table.num_rows, end
            if (start, written) != (pool_docs, size):
                raise RuntimeError(f"the assignments hold {start} documents, the pool {pool_docs}")
            for array in out.values():
                array.flush()
            del out
        return cls.open(to, pool_docs, pool_tokens)

    @classmethod
    def open(cls, directory: Path, pool_docs: int, pool_tokens: int) -> EligibleArrays:
        arrays = {name: np.load(directory / f"{name}.npy", mmap_mode="r") for name in FILES}
        return cls(arrays["rows"], arrays["cluster_ids"], arrays["n_tokens"], pool_docs, pool_tokens)


def write_values(parts: Iterable[np.ndarray], size: int, to: Path) -> np.ndarray:
    """One float64 value per eligible document, written from `parts` (consecutive, in position order) into a memory
    map at `to` and opened read-only: whole-pool scores, losses or classifier probabilities, which a ranking method
    reads in chunks (`quadselect.select.ranking`) and the driver never holds."""
    written = 0
    with atomic_path(to) as tmp:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float64, shape=(size,))
        for part in parts:
            out[written : written + part.size] = part
            written += part.size
        if written != size:
            raise RuntimeError(f"{written} values for {size} eligible documents")
        out.flush()
        del out
    return np.load(to, mmap_mode="r")


def shard_values(shard_files: Sequence[Path]) -> Iterator[tuple[int, np.ndarray]]:
    """(first pool row, values) of each file of one value per pool document (`.npy`, in pool order), one at a time."""
    start = 0
    for path in shard_files:
        values = np.load(path, allow_pickle=False)
        yield start, values
        start += values.size


def eligible_parts(shard_files: Sequence[Path], rows: np.ndarray) -> Iterator[np.ndarray]:
    """The values of the eligible `rows` (ascending pool rows), shard by shard, from files of one value per pool
    document."""
    for start, values in shard_values(shard_files):
        lo, hi = np.searchsorted(rows, [start, start + values.size])
        yield values[np.asarray(rows[lo:hi]) - start]
