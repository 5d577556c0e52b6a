"""Normalized document shards: Parquet files of bounded size with `doc_id, text, n_tokens, source`.

Shards are the unit of streaming and of resumption for every later stage: memory is bounded by one shard, and a stage
killed midway redoes only the shards it had not finished.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from quadselect.atomic import atomic_path, read_json, write_json

SHARD_SCHEMA = pa.schema(
    [
        ("doc_id", pa.string()),
        ("text", pa.large_string()),
        ("n_tokens", pa.int32()),
        ("source", pa.string()),
    ]
)
# What `prepare` reads, before token counting: `doc_id` is null where the record had no usable id (it is generated
# from `record`, the record's index among its read task's, when tokens are counted).
RAW_SCHEMA = pa.schema(
    [
        ("doc_id", pa.string()),
        ("record", pa.int64()),
        ("text", pa.large_string()),
        ("source", pa.string()),
        ("n_tokens", pa.int32()),  # null until counted: counted while reading when the tokenizer is given
    ]
)
INDEX_FILE = "index.json"
# Rows read per step when writing exported documents.
READ_BATCH = 2_000


def shard_name(i: int, prefix: str = "shard") -> str:
    return f"{prefix}-{i:05d}.parquet"


class ShardWriter:
    """Writes record batches into shards of at most `max_docs` documents and `max_bytes` text bytes.

    Each shard is written to a temporary file and renamed when closed, so a shard on disk is always complete.
    """

    def __init__(
        self, directory: Path, schema: pa.Schema, *, max_docs: int, max_bytes: int, prefix: str = "shard"
    ) -> None:
        self.directory = directory
        self.prefix = prefix
        self.schema = schema
        self.max_docs = max_docs
        self.max_bytes = max_bytes
        self.shards: list[dict[str, int | str]] = []
        self._writer: pq.ParquetWriter | None = None
        self._ctx = None
        self._docs = 0
        self._bytes = 0
        directory.mkdir(parents=True, exist_ok=True)

    def write(self, columns: dict[str, list]) -> None:
        """Append documents (column lists of equal length), starting new shards at the size limits."""
        n = len(columns["doc_id"])
        start = 0
        while start < n:
            if self._writer is None:
                self._open()
            end = start
            while end < n and self._docs < self.max_docs:
                size = len(columns["text"][end].encode("utf-8"))
                if self._docs > 0 and self._bytes + size > self.max_bytes:
                    break
                self._docs += 1
                self._bytes += size
                end += 1
            if end > start:
                part = {k: v[start:end] for k, v in columns.items()}
                assert self._writer is not None
                self._writer.write_table(pa.Table.from_pydict(part, schema=self.schema))
                start = end
            if start < n:
                self._close_shard()

    def _open(self) -> None:
        self._ctx = atomic_path(self.directory / shard_name(len(self.shards), self.prefix))
        tmp = self._ctx.__enter__()
        self._writer = pq.ParquetWriter(tmp, self.schema, compression="zstd")
        self._docs = 0
        self._bytes = 0

    def _close_shard(self) -> None:
        if self._writer is None:
            return
        self._writer.close()
        assert self._ctx is not None
        self._ctx.__exit__(None, None, None)
        name = shard_name(len(self.shards), self.prefix)
        self.shards.append({"file": name, "docs": self._docs, "bytes": self._bytes})
        self._writer = None
        self._ctx = None

    def close(self) -> list[dict[str, int | str]]:
        self._close_shard()
        return self.shards


@dataclass(frozen=True)
class ShardSet:
    """A directory of finished shards and its index."""

    directory: Path

    @property
    def files(self) -> list[Path]:
        return [self.directory / s["file"] for s in self.index["shards"]]

    @property
    def index(self) -> dict:
        return read_json(self.directory / INDEX_FILE)

    @property
    def num_docs(self) -> int:
        return sum(int(s["docs"]) for s in self.index["shards"])

    def iter_tables(self, columns: list[str] | None = None) -> Iterator[pa.Table]:
        for file in self.files:
            yield pq.read_table(file, columns=columns)

    def read(self, columns: list[str] | None = None) -> pa.Table:
        """The whole set as one table; only for sets known to be small (reference, eval, tests)."""
        tables = list(self.iter_tables(columns))
        return pa.concat_tables(tables) if tables else SHARD_SCHEMA.empty_table()


def read_rows(shards: ShardSet, rows: np.ndarray, columns: list[str]) -> pa.Table:
    """Rows by global position (concatenation of the shards in order), returned in the order of `rows`.

    Only shards holding requested rows are opened, so sampling a few documents from a large pool is cheap."""
    rows = np.asarray(rows, dtype=np.int64)
    starts = np.cumsum([0] + [int(s["docs"]) for s in shards.index["shards"]])
    order = np.argsort(rows, kind="stable")
    parts = []
    for i, file in enumerate(shards.files):
        lo, hi = np.searchsorted(rows[order], [starts[i], starts[i + 1]])
        if hi > lo:
            local = rows[order[lo:hi]] - starts[i]
            parts.append(pq.read_table(file, columns=columns).take(pa.array(local)))
    if not parts:
        return pa.table({c: [] for c in columns})
    table = pa.concat_tables(parts)
    return table.take(pa.array(np.argsort(order, kind="stable")))


def write_index(directory: Path, shards: list[dict], **extra: object) -> None:
    write_json(directory / INDEX_FILE, {"shards": shards, **extra})


def write_documents(item: dict[str, Any], pool_dir: str) -> int:
    """Write the pool rows `item["rows"]`, in that order, to the export file `item["path"]` (`item["format"]`: jsonl,
    gzipped, or parquet) atomically; returns how many. A task of its own (it imports nothing heavy), so the executor
    writes export shards in parallel."""
    pool = ShardSet(Path(pool_dir))
    rows = np.asarray(item["rows"], dtype=np.int64)
    with atomic_path(item["path"]) as tmp:
        if item["format"] == "jsonl":
            # mtime=0 and no file name (gzip would store the random temporary name): the same selection gives
            # byte-identical files.
            with open(tmp, "wb") as raw, gzip.GzipFile(filename="", fileobj=raw, mode="wb", mtime=0) as fh:
                for start in range(0, rows.size, READ_BATCH):
                    table = read_rows(pool, rows[start : start + READ_BATCH], ["doc_id", "text", "source", "n_tokens"])
                    for record in table.to_pylist():
                        fh.write((json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8"))
        else:
            tables = [
                read_rows(pool, rows[start : start + READ_BATCH], ["doc_id", "text", "source", "n_tokens"])
                for start in range(0, rows.size, READ_BATCH)
            ]
            pq.write_table(pa.concat_tables(tables), tmp, compression="zstd")
    return int(rows.size)


def read_documents(paths: Iterable[str | Path]) -> Iterator[str]:
    """The texts of files `write_documents` wrote (JSONL.gz or Parquet), file after file, streamed: what a trainer
    reads of an exported selection."""
    for path in map(Path, paths):
        if path.name.endswith(".parquet"):
            yield from pq.read_table(path, columns=["text"])["text"].to_pylist()
        else:
            with gzip.open(path, "rt", encoding="utf-8") as fh:
                for line in fh:
                    yield json.loads(line)["text"]
