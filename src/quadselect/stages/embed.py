"""The `embed` stage: a float16 embedding file per pool shard, resumable shard by shard.

Each shard is one item for the executor: a worker holding the embedder reads the shard's texts, embeds them and
writes `<shard>.npy` atomically, so a killed run re-embeds only the shards without a file, and on Ray the shards are
embedded in parallel by an actor pool (one embedder per actor).
"""

from __future__ import annotations

import functools
import logging
import time
from typing import Any

from quadselect.config import RunConfig
from quadselect.data.shards import ShardSet
from quadselect.embed import embedding_file, open_array, write_embedding_index
from quadselect.layout import PrepareFiles
from quadselect.progress import progress_bar
from quadselect.run import StageContext
from quadselect.stages.workers import ShardEmbedder

log = logging.getLogger(__name__)


def embed_args(config: RunConfig) -> dict[str, Any]:
    return {"embed": config.embed.model_dump(mode="json")}


def run_embed(ctx: StageContext) -> dict[str, Any]:
    """The `embed` stage: one float16 embedding file per pool shard; finished shards survive a kill."""
    cfg = ctx.config.embed
    pool = ShardSet(PrepareFiles(ctx.input("prepare")).pool)
    shards = pool.index["shards"]
    log.info(
        "embed: %d documents in %d shards with %s (first %d tokens) on %s",
        pool.num_docs,
        len(shards),
        cfg.model,
        cfg.max_tokens,
        ctx.executor.describe(),
    )
    todo = [s for s in shards if not embedding_file(ctx.work_dir, s["file"]).is_file()]
    start = time.perf_counter()
    with progress_bar("embed", total=pool.num_docs, unit="docs") as bar:
        bar.update(pool.num_docs - sum(int(s["docs"]) for s in todo))
        in_process = ctx.executor.in_process
        where = ctx.location
        worker = functools.partial(
            ShardEmbedder,
            where,
            cfg.model,
            cfg.max_tokens,
            cfg.batch_size,
            cfg.device,
            bar.update if in_process else None,
        )
        items = [
            {"shard": str(pool.directory / s["file"]), "dest": str(embedding_file(ctx.work_dir, s["file"]))}
            for s in todo
        ]
        for item, result in zip(items, ctx.executor.stream(worker, items), strict=True):
            where.collect(item["dest"])  # written on a machine that does not see this one's disk: fetched
            if not in_process:
                bar.update(int(result["rows"]))
    wall = time.perf_counter() - start
    embedded = sum(int(s["docs"]) for s in todo)
    entries = [
        {"shard": s["file"], "file": embedding_file(ctx.work_dir, s["file"]).name, "rows": int(s["docs"])}
        for s in shards
    ]
    dim = int(open_array(embedding_file(ctx.work_dir, shards[0]["file"])).shape[1])
    write_embedding_index(ctx.work_dir, entries, dim=dim, model=cfg.model, max_tokens=cfg.max_tokens)
    return {
        "docs": pool.num_docs,
        "dim": dim,
        "model": cfg.model,
        "docs_per_s": round(embedded / wall, 1) if embedded and wall > 0 else None,
    }
