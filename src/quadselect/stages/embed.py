"""The `embed` stage: a float16 embedding file per pool shard, resumable shard by shard."""

from __future__ import annotations

import logging
import time
from typing import Any

import pyarrow.parquet as pq

from quadselect.config import RunConfig
from quadselect.data.shards import ShardSet
from quadselect.embed import embed_texts, embedding_file, load_embedder, write_array, write_embedding_index
from quadselect.progress import progress_bar
from quadselect.run import StageContext

log = logging.getLogger(__name__)


def embed_args(config: RunConfig) -> dict[str, Any]:
    return {"embed": config.embed.model_dump(mode="json")}


def run_embed(ctx: StageContext) -> dict[str, Any]:
    """The `embed` stage: one float16 embedding file per pool shard; finished shards survive a kill."""
    cfg = ctx.config.embed
    pool = ShardSet(ctx.input("prepare") / "pool")
    embedder = load_embedder(cfg.model, max_tokens=cfg.max_tokens, device=cfg.device)
    log.info(
        "embed: %d documents with %s (%d dimensions, first %d tokens)",
        pool.num_docs,
        embedder.name,
        embedder.dim,
        cfg.max_tokens,
    )
    entries = []
    start = time.perf_counter()
    embedded = 0
    with progress_bar("embed", total=pool.num_docs, unit="docs") as bar:
        for shard in pool.index["shards"]:
            dest = embedding_file(ctx.work_dir, shard["file"])
            if not dest.is_file():
                texts = pq.read_table(pool.directory / shard["file"], columns=["text"])["text"].to_pylist()
                write_array(dest, embed_texts(embedder, texts, cfg.batch_size, progress=bar.update))
                embedded += len(texts)
            else:
                bar.update(int(shard["docs"]))
            entries.append({"shard": shard["file"], "file": dest.name, "rows": int(shard["docs"])})
    wall = time.perf_counter() - start
    write_embedding_index(ctx.work_dir, entries, dim=embedder.dim, model=embedder.name, max_tokens=cfg.max_tokens)
    return {
        "docs": pool.num_docs,
        "dim": embedder.dim,
        "model": embedder.name,
        "docs_per_s": round(embedded / wall, 1) if embedded and wall > 0 else None,
    }
