"""The `export` stage: the selected documents as shards a trainer can read, with the manifest and a summary.

Documents are written in a shuffled order fixed by the seed (trainers read shards in order; a selection made cluster
by cluster must not reach them cluster by cluster). Each shard is written to a temporary file and renamed, so a killed
export leaves only complete shards, and a re-run rewrites the same bytes.
"""

from __future__ import annotations

import logging
import shutil
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from quadselect.atomic import read_json, write_json
from quadselect.config import RunConfig
from quadselect.data.shards import ShardSet, write_documents
from quadselect.layout import UPSTREAM_OF_SELECT, ExportFiles, PrepareFiles, SelectFiles
from quadselect.progress import progress_bar
from quadselect.run import StageContext, stage_status
from quadselect.run_store import RunLocation

log = logging.getLogger(__name__)


def export_args(config: RunConfig) -> dict[str, Any]:
    return {"export": config.export.model_dump(mode="json"), "seed": config.seed}


def run_export(ctx: StageContext) -> dict[str, Any]:
    cfg = ctx.config.export
    selected = SelectFiles(ctx.input("select"))
    work = ExportFiles(ctx.work_dir)
    manifest = pq.read_table(selected.manifest)
    pool = ShardSet(PrepareFiles(ctx.input("prepare")).pool)
    order = np.random.default_rng(ctx.seed).permutation(manifest.num_rows)
    rows = manifest["row"].to_numpy()[order]
    tokens = manifest["n_tokens"].to_numpy()[order]
    shard_of = np.cumsum(tokens) // cfg.shard_tokens
    shard_of = np.concatenate([[0], shard_of[:-1]])  # a document starting a new shard goes into it whole

    out_dir = work.documents
    out_dir.mkdir(exist_ok=True)
    suffix = "jsonl.gz" if cfg.format == "jsonl" else "parquet"
    files, todo = [], []
    for shard in np.unique(shard_of):
        in_shard = np.flatnonzero(shard_of == shard)
        name = f"part-{int(shard):05d}.{suffix}"
        files.append(
            {"file": f"{out_dir.name}/{name}", "docs": int(in_shard.size), "tokens": int(tokens[in_shard].sum())}
        )
        if not (out_dir / name).is_file():
            todo.append({"path": str(out_dir / name), "rows": rows[in_shard].tolist(), "format": cfg.format})
    with progress_bar("export", total=int(rows.size), unit="docs") as bar:
        bar.update(int(rows.size) - sum(len(item["rows"]) for item in todo))
        where = ctx.location
        shared = (str(pool.directory), where)
        for item, written in zip(todo, ctx.executor.map(write_export_file, todo, shared=shared), strict=True):
            where.collect(item["path"])  # written on a machine that does not see this one's disk: fetched
            bar.update(written)

    shutil.copyfile(selected.manifest, work.manifest)
    selection = read_json(selected.selection)
    selection["wall_s_per_stage"] = {
        name: (stage_status(ctx.run_dir, name) or {}).get("wall_s") for name in (*UPSTREAM_OF_SELECT, "select")
    }
    selection["files"] = files
    selection["format"] = cfg.format
    write_json(work.selection, selection)
    log.info("export: %d documents in %d file(s) -> %s", rows.size, len(files), out_dir)
    return {
        "docs": int(rows.size),
        "tokens": int(tokens.sum()),
        "files": len(files),
        "path": str(ctx.layout.export.root),
    }


def write_export_file(item: dict[str, Any], pool_dir: str, where: RunLocation) -> int:
    """`write_documents` as a task that may run on a machine that does not see the run directory: the pool read
    and the file written through `where`."""
    here = {**item, "path": str(where.writable(item["path"]))}
    written = write_documents(here, str(where.readable(pool_dir)))
    where.uploaded(item["path"])
    return written
