"""The `export` stage: the selected documents as shards a trainer can read, with the manifest and a summary.

Documents are written in a shuffled order fixed by the seed (trainers read shards in order; a selection made cluster
by cluster must not reach them cluster by cluster). Each shard is written to a temporary file and renamed, so a killed
export leaves only complete shards, and a re-run rewrites the same bytes.
"""

from __future__ import annotations

import gzip
import json
import logging
import shutil
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from quadselect.atomic import atomic_path, read_json, write_json
from quadselect.config import RunConfig
from quadselect.data.shards import ShardSet, read_rows
from quadselect.progress import progress_bar
from quadselect.run import StageContext, stage_status
from quadselect.stages.select import MANIFEST, SELECTION_JSON

log = logging.getLogger(__name__)

DOCS_DIR = "documents"
READ_BATCH = 2_000


def export_args(config: RunConfig) -> dict[str, Any]:
    return {"export": config.export.model_dump(mode="json"), "seed": config.seed}


def run_export(ctx: StageContext) -> dict[str, Any]:
    cfg = ctx.config.export
    manifest = pq.read_table(ctx.input("select") / MANIFEST)
    pool = ShardSet(ctx.input("prepare") / "pool")
    order = np.random.default_rng(ctx.seed).permutation(manifest.num_rows)
    rows = manifest["row"].to_numpy()[order]
    tokens = manifest["n_tokens"].to_numpy()[order]
    shard_of = np.cumsum(tokens) // cfg.shard_tokens
    shard_of = np.concatenate([[0], shard_of[:-1]])  # a document starting a new shard goes into it whole

    out_dir = ctx.work_dir / DOCS_DIR
    out_dir.mkdir(exist_ok=True)
    files = []
    with progress_bar("export", total=int(rows.size), unit="docs") as bar:
        for shard in np.unique(shard_of):
            in_shard = np.flatnonzero(shard_of == shard)
            name = f"part-{int(shard):05d}." + ("jsonl.gz" if cfg.format == "jsonl" else "parquet")
            path = out_dir / name
            if not path.is_file():
                _write_shard(path, pool, rows[in_shard], cfg.format)
            files.append(
                {"file": f"{DOCS_DIR}/{name}", "docs": int(in_shard.size), "tokens": int(tokens[in_shard].sum())}
            )
            bar.update(int(in_shard.size))

    shutil.copyfile(ctx.input("select") / MANIFEST, ctx.work_dir / MANIFEST)
    selection = read_json(ctx.input("select") / SELECTION_JSON)
    selection["wall_s_per_stage"] = {
        name: (stage_status(ctx.run_dir, name) or {}).get("wall_s")
        for name in ("prepare", "embed", "cluster", "proxy", "factors", "reference", "select")
    }
    selection["files"] = files
    selection["format"] = cfg.format
    write_json(ctx.work_dir / SELECTION_JSON, selection)
    log.info("export: %d documents in %d file(s) -> %s", rows.size, len(files), out_dir)
    return {
        "docs": int(rows.size),
        "tokens": int(tokens.sum()),
        "files": len(files),
        "path": str(ctx.run_dir / "export"),
    }


def _write_shard(path: Any, pool: ShardSet, rows: np.ndarray, fmt: str) -> None:
    with atomic_path(path) as tmp:
        if fmt == "jsonl":
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
