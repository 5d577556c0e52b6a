"""Reading the inputs into normalized, token-counted shards: the core of the `prepare` stage.

Three steps, each writing into directories it is given (the stage makes them resumable, `quadselect.stages.prepare`):

1. `read_inputs`: read every input through the bad-input policies into raw shards, one folder per role, and draw
   the seeded tokenizer sample, in parallel tasks (`quadselect.data.read_tasks`); with a configured tokenizer the
   tasks count tokens too, so tokenizing (what binds `prepare`) runs in the reading processes, in one pass;
2. `build_tokenizer`: train the byte-level BPE on that sample (or load the configured tokenizer);
3. `ShardTokenCounter`: give a raw shard's documents their final ids and, unless step 1 counted them, their token
   counts (a worker; one shard at a time, written atomically).

A worker's memory is bounded by one batch of documents, never by the pool; the driver holds the tokenizer's sample and
the duplicate-id check's hashes (8 bytes and a set entry per document of a role).
"""

from __future__ import annotations

import functools
import logging
import os
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from transformers import PreTrainedTokenizerBase

from quadselect.atomic import atomic_path, read_json, write_json
from quadselect.config import DataConfig, PrepareConfig, SourceSpec, TokenizerConfig
from quadselect.data.normalize import generated_id
from quadselect.data.problems import ProblemReport
from quadselect.data.read_tasks import (
    marker_name,
    plan_read_tasks,
    read_task,
    reduce_reads,
    reservoir_positions,
    sample_rows,
    task_prefix,
)
from quadselect.data.shards import SHARD_SCHEMA, ShardSet, write_index
from quadselect.data.tokenizer import count_tokens, load_tokenizer, train_bpe_tokenizer
from quadselect.engine.base import Executor
from quadselect.errors import InputDataError
from quadselect.progress import progress_bar
from quadselect.resources import available_memory, shard_byte_limit
from quadselect.run_store import RunLocation

log = logging.getLogger(__name__)

ROLES = ("pool", "reference", "eval")
TOKENIZER_SAMPLE = "tokenizer_sample.parquet"


def _specs(data: DataConfig) -> dict[str, list[SourceSpec]]:
    specs = {"pool": data.pool, "reference": data.reference}
    if data.eval:
        specs["eval"] = data.eval
    return specs


def read_inputs(
    data: DataConfig,
    policy: PrepareConfig,
    tokenizer: TokenizerConfig,
    raw_dir: Path,
    seed: int,
    executor: Executor,
    where: RunLocation,
) -> dict[str, Any]:
    """Step 1: every role's documents as raw shards in `raw_dir/<role>/` (and, unless a tokenizer is configured, the
    seeded tokenizer sample), read by parallel tasks (`quadselect.data.read_tasks`); returns the problems found, the
    documents and characters per source of each role, and the shard byte bound used. Finished tasks of a killed
    attempt are kept."""
    shard_bytes = shard_byte_limit(policy.shard_max_bytes, available_memory())
    if shard_bytes < policy.shard_max_bytes:
        log.warning(
            "prepare: little memory is available; shards hold at most %.0f MiB of text (prepare.shard_max_bytes: "
            "%.0f MiB), as later stages hold a whole shard in memory",
            shard_bytes / 2**20,
            policy.shard_max_bytes / 2**20,
        )
    specs = _specs(data)
    tasks = plan_read_tasks(specs, policy.split_bytes)
    counting = _given_tokenizer_pipeline(tokenizer)
    results = _run_read_tasks(tasks, specs, policy, shard_bytes, raw_dir, executor, where, counting)
    report, shards, sources = reduce_reads(tasks, results, specs, raw_dir, policy.report_examples, where)
    roles: dict[str, Any] = {}
    for role, role_specs in specs.items():
        if not shards.get(role):
            raise InputDataError(
                f"the {role} set is empty: no usable document in {', '.join(_describe(s) for s in role_specs)}. "
                f"Problems found: {_problem_line(report)}. Check text_field and the files."
            )
        write_index(raw_dir / role, shards[role])
        roles[role] = {"sources": sources[role]}
        log.info("prepare: read %d %s documents", sum(v["docs"] for v in sources[role].values()), role)
    if tokenizer.path is None:
        texts = _tokenizer_sample(shards["pool"], tokenizer, seed, raw_dir, executor, where, _processes(policy, tasks))
        pq.write_table(pa.table({"text": pa.array(texts, pa.large_string())}), raw_dir / TOKENIZER_SAMPLE)
    return {"problems": report.to_dict(), "roles": roles, "shard_max_bytes": shard_bytes, "read_tasks": len(tasks)}


def _run_read_tasks(
    tasks: list[dict[str, Any]],
    specs: dict[str, list[SourceSpec]],
    policy: PrepareConfig,
    shard_bytes: int,
    raw_dir: Path,
    executor: Executor,
    where: RunLocation,
    tokenizer_json: str | None,
) -> list[dict[str, Any]]:
    """Every task's summary, from its marker or by running it: tasks without a marker go to the executor (processes
    of this machine, or the cluster), and each marker is written once the task's files are here."""
    markers = [raw_dir / task["role"] / marker_name(task["task"]) for task in tasks]
    todo = [task for task, marker in zip(tasks, markers, strict=True) if not marker.is_file()]
    processes = _processes(policy, todo)
    log.info(
        "prepare: %d read tasks (%d done before) on %s",
        len(tasks),
        len(tasks) - len(todo),
        f"{min(processes, max(1, len(todo)))} processes" if executor.in_process else executor.describe(),
    )
    shared = (specs, policy, shard_bytes, str(raw_dir), where, tokenizer_json)
    with progress_bar("prepare: reading", total=len(tasks), unit="tasks") as bar:
        bar.update(len(tasks) - len(todo))
        for task, result in zip(todo, executor.map(read_task, todo, shared=shared, processes=processes), strict=True):
            folder = raw_dir / task["role"]
            folder.mkdir(parents=True, exist_ok=True)
            where.collect(folder / f"{task_prefix(task['task'])}.docs.parquet")  # written on another machine
            write_json(folder / marker_name(task["task"]), result)
            bar.update(1)
    return [read_json(marker) for marker in markers]


def _given_tokenizer_pipeline(cfg: TokenizerConfig) -> str | None:
    """A given tokenizer's whole `tokenizers` pipeline as JSON, which the read tasks count tokens with (it travels
    with the tasks, so a worker needs no access to the tokenizer's files); None when the tokenizer is trained after
    reading, or has no fast backend (then the documents are counted in step 3)."""
    if cfg.path is None:
        return None
    backend = getattr(load_tokenizer(cfg.path), "backend_tokenizer", None)
    return backend.to_str() if backend is not None else None


PROCESSES_MIN_BYTES = 32 * 2**20
"""Below this much input, `read_processes: null` reads in this process: starting a process (Python and its imports,
a second or two) costs more than it saves."""


def _processes(policy: PrepareConfig, tasks: list[dict[str, Any]]) -> int:
    """`prepare.read_processes`, or when null one per core for inputs worth it (`PROCESSES_MIN_BYTES`)."""
    if policy.read_processes is not None:
        return policy.read_processes
    return (os.cpu_count() or 1) if sum(task["bytes"] for task in tasks) >= PROCESSES_MIN_BYTES else 1


def _tokenizer_sample(
    pool: list[dict[str, Any]],
    cfg: TokenizerConfig,
    seed: int,
    raw_dir: Path,
    executor: Executor,
    where: RunLocation,
    processes: int,
) -> list[str]:
    """The seeded reservoir sample of pool document openings the BPE trains on, in reservoir order: positions from
    `reservoir_positions`, texts read from the raw shards that hold them."""
    positions = reservoir_positions(sum(int(s["docs"]) for s in pool), cfg.train_docs, seed)
    starts = np.cumsum([0] + [int(s["docs"]) for s in pool])
    shard_of = np.searchsorted(starts, positions, side="right") - 1
    shards = np.unique(shard_of)
    items = [
        {"raw": str(raw_dir / "pool" / pool[i]["file"]), "rows": (positions[shard_of == i] - starts[i]).tolist()}
        for i in shards
    ]
    by_shard = executor.map(sample_rows, items, shared=(cfg.train_chars_per_doc, where), processes=processes)
    text_at: dict[int, str] = {}
    for i, texts in zip(shards, by_shard, strict=True):
        text_at.update(zip(positions[shard_of == i].tolist(), texts, strict=True))
    return [text_at[p] for p in positions.tolist()]


def _describe(spec: SourceSpec) -> str:
    return str(spec.path) if spec.path else f"hub:{spec.hub}"


def _problem_line(report: ProblemReport) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(report.counts.items())) or "none"


def build_tokenizer(cfg: TokenizerConfig, raw_dir: Path) -> PreTrainedTokenizerBase:
    """Step 2: the configured tokenizer, or a byte-level BPE trained on the sample step 1 drew into `raw_dir`."""
    if cfg.path is not None:
        tokenizer = load_tokenizer(cfg.path)
        log.info("prepare: loaded tokenizer %s", cfg.path)
        return tokenizer
    texts = pq.read_table(raw_dir / TOKENIZER_SAMPLE)["text"].to_pylist()
    log.info("prepare: training a %d-token byte-level BPE on %d sampled documents", cfg.vocab_size, len(texts))
    return train_bpe_tokenizer(texts, cfg.vocab_size)


class ShardTokenCounter:
    """A worker: adds token counts to whole raw shards and gives every document its final id, `{"raw": path, "dest":
    path, "label": source label, "record_offset": n, "renames": path | None}` → `{"docs": n}` (the id of a record
    without one is `<label>-<record index + offset>`; `renames` holds duplicate ids renamed by step 1's reduction).
    The counted shard is written atomically, so a finished shard is never redone. On a machine that does not see the
    run directory, the tokenizer and the raw shard are read from the run's store and the counted shard uploaded
    there."""

    def __init__(
        self,
        where: RunLocation,
        tokenizer_dir: str,
        batch_docs: int,
        progress: Callable[[int], object] | None = None,
    ) -> None:
        self.tokenizer_dir = tokenizer_dir
        self.batch_docs = batch_docs
        self.progress = progress
        self.where = where

    def __call__(self, item: dict[str, Any]) -> dict[str, Any]:
        table = pq.read_table(self.where.readable(item["raw"]))
        table = pa.table(
            {
                "doc_id": pa.array(self._final_ids(table, item), pa.string()),
                "text": table["text"],
                "n_tokens": self._counts(table),
                "source": table["source"],
            },
            schema=SHARD_SCHEMA,
        )
        _write_table_atomic(table, self.where.writable(item["dest"]))
        self.where.uploaded(item["dest"])
        return {"docs": table.num_rows}

    @functools.cached_property
    def tokenizer(self) -> PreTrainedTokenizerBase:
        """Loaded on first use: shards the read tasks counted (a given tokenizer) never need it, and a large
        vocabulary takes a second to load in every worker."""
        return load_tokenizer(self.where.readable(self.tokenizer_dir))

    def _counts(self, table: pa.Table) -> pa.Array:
        """The counts the read tasks made with the given tokenizer, else counted here with the trained one."""
        if table["n_tokens"].null_count == 0:
            if self.progress is not None:
                self.progress(table.num_rows)
            return table["n_tokens"].combine_chunks()
        texts = table["text"].to_pylist()
        counts: list[int] = []
        for start in range(0, len(texts), self.batch_docs):
            counts.extend(count_tokens(self.tokenizer, texts[start : start + self.batch_docs]))
            if self.progress is not None:
                self.progress(len(counts) - start)
        return pa.array(counts, pa.int32())

    def _final_ids(self, table: pa.Table, item: dict[str, Any]) -> list[str]:
        label, offset = item["label"], int(item["record_offset"])
        ids = [
            given if given is not None else generated_id(label, record + offset)
            for given, record in zip(table["doc_id"].to_pylist(), table["record"].to_pylist(), strict=True)
        ]
        if item.get("renames"):
            renamed = pq.read_table(self.where.readable(item["renames"]))
            for row, doc_id in zip(renamed["row"].to_pylist(), renamed["doc_id"].to_pylist(), strict=True):
                ids[row] = doc_id
        return ids


def role_summary(raw_dir: Path, out_dir: Path, raw_stats: dict[str, Any]) -> dict[str, Any]:
    """Writes the index of the counted shards in `out_dir` (those of `raw_dir`, counted); returns the role's
    documents, tokens and characters, in total and per source (`raw_stats`: step 1's figures for the role)."""
    shards = []
    tokens_by_source: Counter[str] = Counter()
    for entry in ShardSet(raw_dir).index["shards"]:
        meta = pq.read_table(out_dir / entry["file"], columns=["n_tokens", "source"])
        n_tokens = int(pc.sum(meta["n_tokens"]).as_py() or 0)
        for source, tok in zip(meta["source"].to_pylist(), meta["n_tokens"].to_pylist(), strict=True):
            tokens_by_source[source] += tok
        shards.append({"file": entry["file"], "docs": int(entry["docs"]), "bytes": entry["bytes"], "tokens": n_tokens})
    sources = {name: {**stats, "tokens": int(tokens_by_source[name])} for name, stats in raw_stats["sources"].items()}
    write_index(out_dir, shards, sources=sources)
    return {
        "docs": sum(s["docs"] for s in shards),
        "tokens": sum(s["tokens"] for s in shards),
        "chars": sum(v["chars"] for v in sources.values()),
        "shards": len(shards),
        "sources": sources,
    }


def _write_table_atomic(table: pa.Table, dest: Path) -> None:
    with atomic_path(dest) as tmp:
        pq.write_table(table, tmp, compression="zstd")
