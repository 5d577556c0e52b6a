"""`prepare`'s reading step in parallel: the inputs cut into independent read tasks, and the deterministic reduction
that makes their outputs what one ordered read of every input gives.

Reading, JSON parsing and the bad-input policies are CPU-bound Python, one core per reader, and on a cluster they
belong where the bytes are, not on the driver. So each input file (or byte range of a big JSONL file, or range of a
big Parquet file's row groups) is a task of its own (`plan_read_tasks`, `read_task`), run by the executor's `map`:
processes of this machine on the local executor, tasks on Ray. What a one-pass read kept as ordered state is made
independent of how the inputs are cut and of how many workers read them:

* the id of a record that has none, `<label>-<record index>`: each task counts its records from 0, and a task's
  offset is the number of records its source's earlier tasks read (applied when tokens are counted);
* duplicate ids: the reduction (`reduce_reads`) claims every task's ids in plan order, exactly as one ordered read
  would (the first keeps its id, a later one gets `~dupN`), from the 8-byte hashes the tasks wrote, not the texts,
  and without holding them all (`id_claims`: bucketed on disk, sorted a bucket at a time);
* line numbers in the problem report: a byte-range task counts lines from its range's first line, and the reduction
  adds the lines of the file's earlier ranges;
* the tokenizer's training sample, a seeded reservoir sample (Algorithm R) of the pool's documents in reading order:
  which positions the reservoir keeps depends only on the seed, the sample size and the number of documents, not on
  their texts, so once the tasks have counted the documents `reservoir_positions` replays the reservoir's draws over
  positions alone, and `sample_rows` reads those documents' openings back from the raw shards, shard by shard on the
  executor's workers. The sample is the one a single ordered read would draw.

A task writes its raw shards `raw/<role>/t<task>-<n>.parquet` and a per-document table for the reduction
(`t<task>.docs.parquet`: id hash, record index, file, line); the driver writes the task's marker `t<task>.json` (its
summary) once they are there, so a killed step redoes only the tasks without a marker.
"""

from __future__ import annotations

import functools
import logging
import tempfile
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tokenizers import Tokenizer

from quadselect.atomic import atomic_path
from quadselect.config import PrepareConfig, SourceSpec
from quadselect.data import storage
from quadselect.data.id_claims import resolve_duplicates
from quadselect.data.normalize import Located, generated_id, id_hash, iter_located
from quadselect.data.problems import Problem, ProblemReport
from quadselect.data.readers import Part, RawRecord, iter_source, read_file, source_files
from quadselect.data.shards import RAW_SCHEMA, ShardWriter
from quadselect.run_store import RunLocation

log = logging.getLogger(__name__)

COMPRESSED_SUFFIXES = (".gz", ".zst")
DOCS_SCHEMA = pa.schema([("id_hash", pa.uint64()), ("record", pa.int64()), ("file", pa.string()), ("line", pa.int64())])


def task_prefix(task: int) -> str:
    return f"t{task:05d}"


def marker_name(task: int) -> str:
    return f"{task_prefix(task)}.json"


# ---------------------------------------------------------------------------------------------------------- planning


def plan_read_tasks(specs: dict[str, list[SourceSpec]], split_bytes: int) -> list[dict[str, Any]]:
    """The read tasks of every role's sources, in the order one sequential read would see their records."""
    tasks: list[dict[str, Any]] = []
    for role, role_specs in specs.items():
        for index, spec in enumerate(role_specs):
            for part in _parts_of(spec, split_bytes):
                tasks.append({"task": len(tasks), "role": role, "spec": index, **part})
    return tasks


def _parts_of(spec: SourceSpec, split_bytes: int) -> list[dict[str, Any]]:
    """A source's tasks. A hub dataset, a saved `datasets` folder and a source with `max_docs` (which counts from
    its first record) are read in order by one task; a path source gives one task per file, and a file over
    `split_bytes` one per byte range (plain JSONL) or row-group range (Parquet); compressed files cannot be cut."""
    if spec.hub is not None or spec.max_docs is not None:
        return [{"kind": "source", "bytes": 0}]
    parts: list[dict[str, Any]] = []
    for file, fmt in source_files(spec):
        where = {"file": str(file), "url": isinstance(file, str), "format": fmt}
        if fmt == "hf_disk":
            parts.append({"kind": "source", "bytes": 0})
            continue
        size = _size(file)
        if fmt == "jsonl" and size > split_bytes and not str(file).lower().endswith(COMPRESSED_SUFFIXES):
            for start in range(0, size, split_bytes):
                end = min(start + split_bytes, size)
                parts.append({"kind": "range", **where, "start": start, "end": end, "bytes": end - start})
        elif fmt == "parquet" and size > split_bytes:
            parts.extend({"kind": "row_groups", **where, **groups} for groups in _row_group_ranges(file, split_bytes))
        else:
            parts.append({"kind": "file", **where, "bytes": size})
    return parts


def _exists(file: Path | str) -> bool:
    if isinstance(file, Path):
        return file.exists()
    filesystem, path = storage.filesystem(file)
    with storage.explained(file):
        return bool(filesystem.exists(path))


def _size(file: Path | str) -> int:
    return storage.file_info(file)["size"] if isinstance(file, str) else file.stat().st_size


def _row_group_ranges(file: Path | str, split_bytes: int) -> list[dict[str, int]]:
    """Consecutive row groups of about `split_bytes` (compressed) each, with the file row each range starts at."""
    with storage.open_binary(file) if isinstance(file, str) else open(file, "rb") as fh:
        meta = pq.ParquetFile(fh).metadata
    ranges, start, first_row, size, rows = [], 0, 0, 0, 0
    for i in range(meta.num_row_groups):
        group = meta.row_group(i)
        size += sum(group.column(j).total_compressed_size for j in range(group.num_columns))
        rows += group.num_rows
        if size >= split_bytes or i == meta.num_row_groups - 1:
            ranges.append({"start": start, "end": i + 1, "first_row": first_row, "bytes": size})
            start, first_row, size, rows = i + 1, first_row + rows, 0, 0
    return ranges


# ------------------------------------------------------------------------------------------------------ one task


def read_task(
    item: dict[str, Any],
    specs: dict[str, list[SourceSpec]],
    policy: PrepareConfig,
    shard_bytes: int,
    raw_dir: str,
    where: RunLocation,
    tokenizer_json: str | None = None,
) -> dict[str, Any]:
    """Read one task's records through the bad-input policies into raw shards in `raw_dir/<role>/`, with its
    per-document table; returns its summary, which the driver keeps as the task's marker. A task redone after a
    kill first removes what its earlier attempt left. With `tokenizer_json` (a given tokenizer's `tokenizers`
    pipeline) the task also counts each document's tokens, so the documents are tokenized by as many processes as
    read them, in the same pass (a trained tokenizer does not exist yet: its counts come later)."""
    spec = specs[item["role"]][item["spec"]]
    prefix = task_prefix(item["task"])
    out = Path(raw_dir) / item["role"]
    local = where.writable(out / f"{prefix}.docs.parquet").parent
    for leftover in local.glob(f"{prefix}[-.]*"):
        leftover.unlink()
    report = ProblemReport(max_examples=policy.report_examples)
    part = _part(item)
    writer = ShardWriter(local, RAW_SCHEMA, max_docs=policy.shard_max_docs, max_bytes=shard_bytes, prefix=prefix)
    per_source: dict[str, Counter[str]] = defaultdict(Counter)
    docs: dict[str, list[Any]] = {"id_hash": [], "record": [], "file": [], "line": []}
    records = _Counted(_records(item, spec, policy, part))
    tokenizer = _backend_tokenizer(tokenizer_json) if tokenizer_json is not None else None
    for batch in _batches(iter_located(iter(records), spec, policy, report), policy.batch_docs):
        texts = [d.text for d in batch]
        writer.write(
            {
                "doc_id": [d.given_id for d in batch],
                "record": [d.record for d in batch],
                "text": texts,
                "source": [d.source for d in batch],
                "n_tokens": _token_counts(tokenizer, texts),
            }
        )
        for d in batch:
            per_source[d.source]["docs"] += 1
            per_source[d.source]["chars"] += len(d.text)
            docs["id_hash"].append(id_hash(d.given_id) if d.given_id is not None else 0)
            docs["record"].append(d.record)
            docs["file"].append(d.file)
            docs["line"].append(d.line)
    shards = writer.close()
    written = [out / str(s["file"]) for s in shards]
    _write_table(pa.table(docs, schema=DOCS_SCHEMA), local / f"{prefix}.docs.parquet")
    written.append(out / f"{prefix}.docs.parquet")
    for path in written:
        where.uploaded(path)
    return {
        "task": item["task"],
        "shards": shards,
        "sources": {name: dict(counts) for name, counts in sorted(per_source.items())},
        "problems": report.to_parts(),
        "records": records.records,
        "lines": part.lines if part is not None and item["kind"] == "range" else None,
    }


@functools.lru_cache(maxsize=2)
def _backend_tokenizer(tokenizer_json: str) -> Tokenizer:
    """Built once per process, not per task: a large vocabulary takes a moment to load."""
    return Tokenizer.from_str(tokenizer_json)


def _token_counts(tokenizer: Tokenizer | None, texts: list[str]) -> list[int | None]:
    """Tokens per document without special tokens, as `quadselect.data.tokenizer.count_tokens` counts them."""
    if tokenizer is None:
        return [None] * len(texts)
    return [len(encoding.ids) for encoding in tokenizer.encode_batch(texts, add_special_tokens=False)]


def _part(item: dict[str, Any]) -> Part | None:
    if item["kind"] == "range":
        return Part(item["start"], item["end"])
    if item["kind"] == "row_groups":
        return Part(item["start"], item["end"], first_row=item["first_row"])
    return None


def _records(
    item: dict[str, Any], spec: SourceSpec, policy: PrepareConfig, part: Part | None
) -> Iterator[RawRecord | Problem]:
    if item["kind"] == "source":
        return iter_source(spec, max_line_bytes=policy.max_line_bytes, bad_utf8=policy.bad_utf8)
    file: Path | str = item["file"] if item["url"] else Path(item["file"])
    if not _exists(file):  # listed when the read was planned, gone now: reported, the other tasks go on
        return iter([Problem("corrupt_file", str(file), None, "the file vanished after the read was planned")])
    return read_file(
        file, item["format"], spec, max_line_bytes=policy.max_line_bytes, bad_utf8=policy.bad_utf8, part=part
    )


class _Counted:
    """The records of a task, counted as they pass (the id offset of the source's next task)."""

    def __init__(self, items: Iterator[RawRecord | Problem]) -> None:
        self.items = items
        self.records = 0

    def __iter__(self) -> Iterator[RawRecord | Problem]:
        for item in self.items:
            if isinstance(item, RawRecord):
                self.records += 1
            yield item


def _batches(docs: Iterator[Located], size: int) -> Iterator[list[Located]]:
    batch: list[Located] = []
    for doc in docs:
        batch.append(doc)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def _write_table(table: pa.Table, dest: Path) -> None:
    with atomic_path(dest) as tmp:
        pq.write_table(table, tmp, compression="zstd")


# ----------------------------------------------------------------------------------------------------- reduction


def reduce_reads(
    tasks: list[dict[str, Any]],
    results: list[dict[str, Any]],
    specs: dict[str, list[SourceSpec]],
    raw_dir: Path,
    max_examples: int,
    where: RunLocation,
) -> tuple[ProblemReport, dict[str, list[dict[str, Any]]], dict[str, dict[str, dict[str, int]]]]:
    """The tasks' outputs as one ordered read: the problem report (file line numbers), each role's raw shards in
    order with what token counting needs to finish their ids (`label`, `record_offset`, `renames`: a file of
    duplicate ids renamed), and each role's documents and characters per source."""
    report = ProblemReport(max_examples=max_examples)
    placements = _placements(tasks, results, specs)
    renames: dict[int, dict[int, tuple[str, str]]] = {}
    for role in dict.fromkeys(task["role"] for task in tasks):  # ids are unique within a role
        of_role = [i for i, task in enumerate(tasks) if task["role"] == role]
        renames.update(_duplicate_ids(role, of_role, tasks, results, placements, raw_dir, where))
    shards: dict[str, list[dict[str, Any]]] = defaultdict(list)
    sources: dict[str, dict[str, Counter[str]]] = defaultdict(lambda: defaultdict(Counter))
    for i, (task, result) in enumerate(zip(tasks, results, strict=True)):
        role, (label, record_offset, line_offset) = task["role"], placements[i]
        report.merge(ProblemReport.from_parts(result["problems"], max_examples), line_offset)
        renamed = renames.get(i, {})
        if renamed:
            _report_renames(task, renamed, line_offset, report, raw_dir)
        new_ids = {row: new for row, (_, new) in renamed.items()}
        shards[role].extend(_shard_entries(role, result["shards"], new_ids, label, record_offset, raw_dir))
        for name, counts in result["sources"].items():
            sources[role][name].update(counts)
    per_source = {role: {name: dict(c) for name, c in sorted(named.items())} for role, named in sources.items()}
    return report, dict(shards), per_source


def _placements(
    tasks: list[dict[str, Any]], results: list[dict[str, Any]], specs: dict[str, list[SourceSpec]]
) -> list[tuple[str, int, int]]:
    """Each task's source label, the records its source's earlier tasks read (its generated ids' offset), and the
    lines its file's earlier byte ranges hold (its line numbers' offset)."""
    record_offsets: Counter[tuple[str, int]] = Counter()
    line_offsets: Counter[str] = Counter()
    placements = []
    for task, result in zip(tasks, results, strict=True):
        role, spec = task["role"], task["spec"]
        line_offset = line_offsets[task["file"]] if task["kind"] == "range" else 0
        placements.append((specs[role][spec].label, record_offsets[(role, spec)], line_offset))
        record_offsets[(role, spec)] += result["records"]
        if task["kind"] == "range":
            line_offsets[task["file"]] += result["lines"]
    return placements


def _duplicate_ids(
    role: str,
    of_role: list[int],
    tasks: list[dict[str, Any]],
    results: list[dict[str, Any]],
    placements: list[tuple[str, int, int]],
    raw_dir: Path,
    where: RunLocation,
) -> dict[int, dict[int, tuple[str, str]]]:
    """The role's documents to rename, claimed in plan order as one ordered read would (`id_claims`): {task index:
    {row: (its id, the new id)}}, from the 8-byte hashes the tasks wrote. A record without an id is hashed here,
    as `<label>-<record index>`; an id string is read back only for a document to rename."""
    files = [raw_dir / role / f"{task_prefix(tasks[i]['task'])}.docs.parquet" for i in of_role]
    starts = np.cumsum([0, *(pq.read_metadata(path).num_rows for path in files)])

    def task_hashes(k: int) -> np.ndarray:
        docs = pq.read_table(files[k], columns=["id_hash", "record"])
        keys = docs["id_hash"].to_numpy().astype(np.uint64)
        label, record_offset, _ = placements[of_role[k]]
        records = docs["record"].to_numpy()
        for row in np.flatnonzero(keys == 0):
            keys[row] = id_hash(generated_id(label, int(records[row]) + record_offset))
        return keys

    current: dict[str, Any] = {"task": None}
    originals: dict[int, str] = {}

    def id_of(position: int) -> str:
        k = int(np.searchsorted(starts, position, side="right")) - 1
        if current["task"] != k:  # positions come in ascending order: one task's ids read at a time
            current.update(
                task=k, ids=_task_ids(files[k], results[of_role[k]], placements[of_role[k]], role, raw_dir, where)
            )
        originals[position] = current["ids"][position - int(starts[k])]
        return originals[position]

    with tempfile.TemporaryDirectory(dir=raw_dir / role, prefix="_ids-") as work:
        hashes = (task_hashes(k) for k in range(len(files)))
        renames = resolve_duplicates(hashes, int(starts[-1]), id_of, Path(work))
    if renames:
        log.info("prepare: %d duplicate ids among %d %s documents renamed", len(renames), int(starts[-1]), role)
    by_task: dict[int, dict[int, tuple[str, str]]] = defaultdict(dict)
    for position, new in renames.items():
        k = int(np.searchsorted(starts, position, side="right")) - 1
        by_task[of_role[k]][position - int(starts[k])] = (originals[position], new)
    return dict(by_task)


def _task_ids(
    docs_file: Path,
    result: dict[str, Any],
    placement: tuple[str, int, int],
    role: str,
    raw_dir: Path,
    where: RunLocation,
) -> list[str]:
    """Every id of a task's documents as read: the given ones from its raw shards, the generated ones made here."""
    docs = pq.read_table(docs_file, columns=["id_hash", "record"])
    label, record_offset, _ = placement
    given = _given_ids(role, result["shards"], raw_dir, where)
    return [
        generated_id(label, record + record_offset) if key == 0 else given[row]
        for row, (key, record) in enumerate(zip(docs["id_hash"].to_pylist(), docs["record"].to_pylist(), strict=True))
    ]


def _report_renames(
    task: dict[str, Any], renamed: dict[int, tuple[str, str]], line_offset: int, report: ProblemReport, raw_dir: Path
) -> None:
    """Each renamed document of a task as a `duplicate_id` problem at its file and line, in row order."""
    docs = pq.read_table(raw_dir / task["role"] / f"{task_prefix(task['task'])}.docs.parquet", columns=["file", "line"])
    for row in sorted(renamed):
        original, new = renamed[row]
        line = docs["line"][row].as_py() + line_offset
        report.add(Problem("duplicate_id", docs["file"][row].as_py(), line, f"{original!r} -> {new!r}"))


def _given_ids(role: str, shards: list[dict[str, Any]], raw_dir: Path, where: RunLocation) -> list[str]:
    tables = [pq.read_table(where.readable(raw_dir / role / s["file"]), columns=["doc_id"]) for s in shards]
    return [i for t in tables for i in t["doc_id"].to_pylist()]


def _shard_entries(
    role: str,
    shards: list[dict[str, Any]],
    renames: dict[int, str],
    label: str,
    record_offset: int,
    raw_dir: Path,
) -> list[dict[str, Any]]:
    """A task's shards as index entries; a shard holding renamed ids gets a small file of them (row, new id)."""
    entries, start = [], 0
    for shard in shards:
        end = start + int(shard["docs"])
        rows = sorted(r for r in renames if start <= r < end)
        entry = {**shard, "label": label, "record_offset": record_offset}
        if rows:
            name = str(shard["file"]).removesuffix(".parquet") + ".renames.parquet"
            table = pa.table(
                {"row": pa.array([r - start for r in rows], pa.int64()), "doc_id": [renames[r] for r in rows]}
            )
            _write_table(table, raw_dir / role / name)
            entry["renames"] = name
        entries.append(entry)
        start = end
    return entries


def reservoir_positions(n_docs: int, k: int, seed: int, chunk: int = 1 << 22) -> np.ndarray:
    """The positions (in reading order) of the documents a seeded Algorithm R reservoir of `k` holds after `n_docs`
    documents, in reservoir-slot order. Algorithm R draws, for the n-th document past the first k, a slot uniform in
    [0, n) and keeps the document when the slot is below k; the draws depend on n alone, so they are replayed here
    (in chunks, bounded memory) without the texts. NumPy draws an array of bounds exactly as it draws them one by one,
    so this is the reservoir a sequential reader with `default_rng(seed)` fills."""
    slots = np.arange(min(k, n_docs), dtype=np.int64)
    rng = np.random.default_rng(seed)
    for first in range(k, n_docs, chunk):
        seen = np.arange(first + 1, min(first + chunk, n_docs) + 1, dtype=np.int64)  # documents seen so far
        drawn = rng.integers(0, seen)
        kept = np.flatnonzero(drawn < k)
        # The last document drawn into a slot is the one it holds: first occurrence in reverse order.
        reverse = kept[::-1]
        targets, where_first = np.unique(drawn[reverse], return_index=True)
        slots[targets] = seen[reverse[where_first]] - 1
    return slots


def sample_rows(item: dict[str, Any], chars: int, where: RunLocation) -> list[str]:
    """The openings (first `chars` characters) of rows `item["rows"]` of the raw shard `item["raw"]`, in that order."""
    texts = pq.read_table(where.readable(item["raw"]), columns=["text"])["text"]
    return [texts[row].as_py()[:chars] for row in item["rows"]]
