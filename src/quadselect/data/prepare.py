"""Reading the inputs into normalized, token-counted shards: the core of the `prepare` stage.

Three steps, each writing into directories it is given (the stage makes them resumable, `quadselect.stages.prepare`):

1. `read_inputs`: stream every input through the bad-input policies into raw shards, one folder per role, and draw
   the seeded tokenizer sample;
2. `build_tokenizer`: train the byte-level BPE on that sample (or load the configured tokenizer);
3. `ShardTokenCounter`: add token counts to a raw shard (a worker; one shard at a time, written atomically).

Memory is bounded by one batch of documents plus the tokenizer sample, never by the pool.
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from transformers import PreTrainedTokenizerBase

from quadselect.atomic import atomic_path
from quadselect.config import DataConfig, PrepareConfig, SourceSpec, TokenizerConfig
from quadselect.data.normalize import Document, IdRegistry, iter_documents
from quadselect.data.problems import ProblemReport
from quadselect.data.shards import RAW_SCHEMA, SHARD_SCHEMA, ShardSet, ShardWriter, write_index
from quadselect.data.tokenizer import count_tokens, load_tokenizer, train_bpe_tokenizer
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
    data: DataConfig, policy: PrepareConfig, tokenizer: TokenizerConfig, raw_dir: Path, seed: int
) -> dict[str, Any]:
    """Step 1: every role's documents as raw shards in `raw_dir/<role>/` (and, unless a tokenizer is configured, the
    seeded tokenizer sample); returns the problems found, the documents and characters per source of each role, and
    the shard byte bound used."""
    shard_bytes = shard_byte_limit(policy.shard_max_bytes, available_memory())
    if shard_bytes < policy.shard_max_bytes:
        log.warning(
            "prepare: little memory is available; shards hold at most %.0f MiB of text (prepare.shard_max_bytes: "
            "%.0f MiB), as later stages hold a whole shard in memory",
            shard_bytes / 2**20,
            policy.shard_max_bytes / 2**20,
        )
    report = ProblemReport(max_examples=policy.report_examples)
    sampler = _Reservoir(tokenizer.train_docs, tokenizer.train_chars_per_doc, seed)
    want_sample = tokenizer.path is None
    roles: dict[str, Any] = {}
    for role, specs in _specs(data).items():
        writer = ShardWriter(raw_dir / role, RAW_SCHEMA, max_docs=policy.shard_max_docs, max_bytes=shard_bytes)
        per_source: dict[str, Counter[str]] = defaultdict(Counter)
        ids = IdRegistry()
        bar = progress_bar(f"prepare: reading {role}", total=None, unit="docs")
        for batch in _batches(_docs_of(specs, policy, report, ids), policy.batch_docs):
            writer.write(
                {
                    "doc_id": [d.doc_id for d in batch],
                    "text": [d.text for d in batch],
                    "source": [d.source for d in batch],
                }
            )
            for d in batch:
                per_source[d.source]["docs"] += 1
                per_source[d.source]["chars"] += len(d.text)
                if want_sample and role == "pool":
                    sampler.offer(d.text)
            bar.update(len(batch))
        bar.close()
        shards = writer.close()
        if not shards:
            raise InputDataError(
                f"the {role} set is empty: no usable document in {', '.join(_describe(s) for s in specs)}. "
                f"Problems found: {_problem_line(report)}. Check text_field and the files."
            )
        write_index(raw_dir / role, shards)
        roles[role] = {"sources": {k: dict(v) for k, v in sorted(per_source.items())}}
        log.info("prepare: read %d %s documents", sum(v["docs"] for v in per_source.values()), role)
    if want_sample:
        pq.write_table(pa.table({"text": sampler.texts()}), raw_dir / TOKENIZER_SAMPLE)
    return {"problems": report.to_dict(), "roles": roles, "shard_max_bytes": shard_bytes}


def _describe(spec: SourceSpec) -> str:
    return str(spec.path) if spec.path else f"hub:{spec.hub}"


def _problem_line(report: ProblemReport) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(report.counts.items())) or "none"


def _docs_of(specs: list[SourceSpec], policy: Any, report: ProblemReport, ids: IdRegistry) -> Iterator[Document]:
    for spec in specs:
        yield from iter_documents(spec, policy, report, ids)


def _batches(docs: Iterator[Document], size: int) -> Iterator[list[Document]]:
    batch: list[Document] = []
    for doc in docs:
        batch.append(doc)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


class _Reservoir:
    """Seeded reservoir sample of document openings (Algorithm R): a uniform sample in one pass, bounded memory."""

    def __init__(self, k: int, chars: int, seed: int) -> None:
        self.k = k
        self.chars = chars
        self.rng = np.random.default_rng(seed)
        self.items: list[str] = []
        self.seen = 0

    def offer(self, text: str) -> None:
        self.seen += 1
        if len(self.items) < self.k:
            self.items.append(text[: self.chars])
            return
        j = int(self.rng.integers(0, self.seen))
        if j < self.k:
            self.items[j] = text[: self.chars]

    def texts(self) -> list[str]:
        return self.items


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
    """A worker: adds token counts to whole raw shards, `{"raw": path, "dest": path}` → `{"docs": n}`; the counted
    shard is written atomically, so a finished shard is never redone. On a machine that does not see the run
    directory, the tokenizer and the raw shard are read from the run's store and the counted shard uploaded there."""

    def __init__(
        self,
        where: RunLocation,
        tokenizer_dir: str,
        batch_docs: int,
        progress: Callable[[int], object] | None = None,
    ) -> None:
        self.tokenizer = load_tokenizer(where.readable(tokenizer_dir))
        self.batch_docs = batch_docs
        self.progress = progress
        self.where = where

    def __call__(self, item: dict[str, Any]) -> dict[str, Any]:
        table = pq.read_table(self.where.readable(item["raw"]))
        texts = table["text"].to_pylist()
        counts: list[int] = []
        for start in range(0, len(texts), self.batch_docs):
            counts.extend(count_tokens(self.tokenizer, texts[start : start + self.batch_docs]))
            if self.progress is not None:
                self.progress(len(counts) - start)
        table = pa.table(
            {
                "doc_id": table["doc_id"],
                "text": table["text"],
                "n_tokens": pa.array(counts, pa.int32()),
                "source": table["source"],
            },
            schema=SHARD_SCHEMA,
        )
        _write_table_atomic(table, self.where.writable(item["dest"]))
        self.where.uploaded(item["dest"])
        return {"docs": len(texts)}


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
