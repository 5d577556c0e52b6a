"""The `prepare` stage: read the pool, reference and eval inputs; write normalized, token-counted shards.

It runs in three resumable steps inside the stage's work directory:

1. `raw/`: stream every input through the bad-input policies into raw shards, and draw the seeded tokenizer sample;
2. `tokenizer/`: train the byte-level BPE on that sample (or load the configured tokenizer);
3. `<role>/shard-*.parquet`: add token counts shard by shard (a killed run redoes only unfinished shards).

Memory is bounded by one batch of documents plus the tokenizer sample, never by the pool.
"""

from __future__ import annotations

import functools
import logging
import shutil
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from quadselect.atomic import atomic_path, read_json, write_json
from quadselect.audit import input_fingerprints
from quadselect.config import RunConfig, SourceSpec
from quadselect.data.normalize import Document, IdRegistry, iter_documents
from quadselect.data.problems import ProblemReport
from quadselect.data.shards import (
    INDEX_FILE,
    RAW_SCHEMA,
    SHARD_SCHEMA,
    ShardSet,
    ShardWriter,
    write_index,
)
from quadselect.data.tokenizer import count_tokens, load_tokenizer, train_bpe_tokenizer
from quadselect.errors import InputDataError
from quadselect.progress import progress_bar
from quadselect.resources import available_memory, shard_byte_limit
from quadselect.run import StageContext

log = logging.getLogger(__name__)

ROLES = ("pool", "reference", "eval")
TOKENIZER_DIR = "tokenizer"


def prepare_args(config: RunConfig) -> dict[str, Any]:
    return {
        "data": config.data.model_dump(mode="json"),
        "tokenizer": config.tokenizer.model_dump(mode="json"),
        "prepare": config.prepare.model_dump(mode="json"),
        "seed": config.seed,
    }


def run_prepare(ctx: StageContext) -> dict[str, Any]:
    cfg = ctx.config
    raw_dir = ctx.work_dir / "raw"
    raw_summary = _read_inputs(cfg, raw_dir, ctx.seed)
    _tokenizer_step(cfg, raw_dir, ctx.work_dir / TOKENIZER_DIR)
    roles = [role for role in ROLES if role in raw_summary["roles"]]
    _count_tokens_step(ctx, raw_dir, roles)
    summary: dict[str, Any] = {
        "problems": raw_summary["problems"],
        "roles": {
            role: _role_summary(raw_dir / role, ctx.work_dir / role, raw_summary["roles"][role]) for role in roles
        },
        "shard_max_bytes": raw_summary.get("shard_max_bytes"),
        "inputs": raw_summary.get("inputs"),
    }
    shutil.rmtree(raw_dir)
    summary["tokenizer"] = str(cfg.run_dir / "prepare" / TOKENIZER_DIR)
    pool = summary["roles"]["pool"]
    log.info(
        "prepare: pool %d documents, %d tokens in %d shards; reference %d documents",
        pool["docs"],
        pool["tokens"],
        pool["shards"],
        summary["roles"]["reference"]["docs"],
    )
    return summary


def _specs(cfg: RunConfig) -> dict[str, list[SourceSpec]]:
    specs = {"pool": cfg.data.pool, "reference": cfg.data.reference}
    if cfg.data.eval:
        specs["eval"] = cfg.data.eval
    return specs


def _read_inputs(cfg: RunConfig, raw_dir: Path, seed: int) -> dict[str, Any]:
    """Step 1; reused as a whole when a previous attempt finished it."""
    done = raw_dir / "_DONE.json"
    if done.is_file():
        return read_json(done)
    if raw_dir.exists():
        shutil.rmtree(raw_dir)
    policy = cfg.prepare
    inputs = input_fingerprints(cfg)  # before reading: the audit trail of what this run was given
    shard_bytes = shard_byte_limit(policy.shard_max_bytes, available_memory())
    if shard_bytes < policy.shard_max_bytes:
        log.warning(
            "prepare: little memory is available; shards hold at most %.0f MiB of text (prepare.shard_max_bytes: "
            "%.0f MiB), as later stages hold a whole shard in memory",
            shard_bytes / 2**20,
            policy.shard_max_bytes / 2**20,
        )
    report = ProblemReport(max_examples=policy.report_examples)
    sampler = _Reservoir(cfg.tokenizer.train_docs, cfg.tokenizer.train_chars_per_doc, seed)
    want_sample = cfg.tokenizer.path is None
    roles: dict[str, Any] = {}
    for role, specs in _specs(cfg).items():
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
        pq.write_table(pa.table({"text": sampler.texts()}), raw_dir / "tokenizer_sample.parquet")
    result = {"problems": report.to_dict(), "roles": roles, "shard_max_bytes": shard_bytes, "inputs": inputs}
    write_json(done, result)
    return result


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


def _tokenizer_step(cfg: RunConfig, raw_dir: Path, out_dir: Path) -> None:
    """Step 2: the tokenizer saved inside the stage, so later stages, workers and users load it from there."""
    if (out_dir / "tokenizer.json").is_file() or (out_dir / "tokenizer_config.json").is_file():
        return
    if cfg.tokenizer.path is not None:
        tokenizer = load_tokenizer(cfg.tokenizer.path)
        log.info("prepare: loaded tokenizer %s", cfg.tokenizer.path)
    else:
        texts = pq.read_table(raw_dir / "tokenizer_sample.parquet")["text"].to_pylist()
        log.info(
            "prepare: training a %d-token byte-level BPE on %d sampled documents", cfg.tokenizer.vocab_size, len(texts)
        )
        tokenizer = train_bpe_tokenizer(texts, cfg.tokenizer.vocab_size)
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tokenizer.save_pretrained(str(tmp))
    tmp.rename(out_dir)


class ShardTokenCounter:
    """A worker: adds token counts to whole raw shards, `{"raw": path, "dest": path}` → `{"docs": n}`; the counted
    shard is written atomically, so a finished shard is never redone."""

    def __init__(self, tokenizer_dir: str, batch_docs: int, progress: Callable[[int], object] | None = None) -> None:
        self.tokenizer = load_tokenizer(tokenizer_dir)
        self.batch_docs = batch_docs
        self.progress = progress

    def __call__(self, item: dict[str, Any]) -> dict[str, Any]:
        table = pq.read_table(item["raw"])
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
        _write_table_atomic(table, Path(item["dest"]))
        return {"docs": len(texts)}


def _count_tokens_step(ctx: StageContext, raw_dir: Path, roles: list[str]) -> None:
    """Step 3: one counted shard per raw shard, every role's shards in one pass of the executor."""
    items, done = [], 0
    total = 0
    for role in roles:
        (ctx.work_dir / role).mkdir(parents=True, exist_ok=True)
        for entry in ShardSet(raw_dir / role).index["shards"]:
            total += int(entry["docs"])
            dest = ctx.work_dir / role / entry["file"]
            if dest.is_file():
                done += int(entry["docs"])
            else:
                items.append({"raw": str(raw_dir / role / entry["file"]), "dest": str(dest)})
    with progress_bar("prepare: counting tokens", total=total, unit="docs") as bar:
        bar.update(done)
        in_process = ctx.executor.in_process
        worker = functools.partial(
            ShardTokenCounter,
            str(ctx.work_dir / TOKENIZER_DIR),
            ctx.config.prepare.batch_docs,
            bar.update if in_process else None,
        )
        for result in ctx.executor.stream(worker, items):
            if not in_process:
                bar.update(int(result["docs"]))


def _role_summary(raw_dir: Path, out_dir: Path, raw_stats: dict[str, Any]) -> dict[str, Any]:
    """The counted shards' index, and documents, tokens and characters per source."""
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
        "path": str(out_dir.parent.parent / "prepare" / out_dir.name),
    }


def _write_table_atomic(table: pa.Table, dest: Path) -> None:
    with atomic_path(dest) as tmp:
        pq.write_table(table, tmp, compression="zstd")


def prepared_shards(run_dir: Path, role: str) -> ShardSet:
    """The finished shards of one role (pool, reference or eval) of a run."""
    directory = run_dir / "prepare" / role
    if not (directory / INDEX_FILE).is_file():
        raise InputDataError(f"{directory}: no prepared {role} shards. Run `quadselect prepare` first.")
    return ShardSet(directory)
