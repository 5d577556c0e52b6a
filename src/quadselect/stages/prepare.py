"""The `prepare` stage: the run's inputs as normalized, token-counted shards, and the run's tokenizer.

The three steps of `quadselect.data.prepare` run inside the stage's work folder, each resumable: step 1 redoes only
the read tasks without a marker and `raw/` is reused whole once it finished, the tokenizer once saved, and token
counting redoes only unfinished shards (on the executor's workers). `raw/` is removed when the stage finishes.
"""

from __future__ import annotations

import functools
import logging
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from quadselect.atomic import read_json, write_json
from quadselect.audit import input_fingerprints
from quadselect.config import RunConfig
from quadselect.data.prepare import ROLES, ShardTokenCounter, build_tokenizer, read_inputs, role_summary
from quadselect.data.shards import ShardSet
from quadselect.layout import PrepareFiles
from quadselect.progress import progress_bar
from quadselect.run import StageContext

log = logging.getLogger(__name__)


def prepare_args(config: RunConfig) -> dict[str, Any]:
    return {
        "data": config.data.model_dump(mode="json"),
        "tokenizer": config.tokenizer.model_dump(mode="json"),
        "prepare": config.prepare.model_dump(mode="json", exclude={"read_processes"}),  # never changes a result
        "seed": config.seed,
    }


def run_prepare(ctx: StageContext) -> dict[str, Any]:
    cfg = ctx.config
    work = PrepareFiles(ctx.work_dir)
    raw_dir = ctx.work_dir / "raw"
    with _timed("read the inputs"):
        raw_summary = _read_inputs_step(ctx, raw_dir)
    with _timed("the tokenizer"):
        _tokenizer_step(cfg, raw_dir, work.tokenizer)
    roles = [role for role in ROLES if role in raw_summary["roles"]]
    with _timed("counted tokens"):
        _count_tokens_step(ctx, raw_dir, roles)
    summary: dict[str, Any] = {
        "problems": raw_summary["problems"],
        "roles": {
            role: {
                **role_summary(raw_dir / role, work.role(role), raw_summary["roles"][role]),
                "path": str(ctx.layout.prepare.role(role)),
            }
            for role in roles
        },
        "shard_max_bytes": raw_summary.get("shard_max_bytes"),
        "read_tasks": raw_summary["read_tasks"],
        "inputs": raw_summary.get("inputs"),
    }
    shutil.rmtree(raw_dir)
    summary["tokenizer"] = str(ctx.layout.prepare.tokenizer)
    pool = summary["roles"]["pool"]
    log.info(
        "prepare: pool %d documents, %d tokens in %d shards; reference %d documents",
        pool["docs"],
        pool["tokens"],
        pool["shards"],
        summary["roles"]["reference"]["docs"],
    )
    return summary


@contextmanager
def _timed(step: str) -> Iterator[None]:
    """Log how long a step took: where prepare's time goes (reading, the tokenizer, counting) differs with the
    tokenizer and the number of reading processes, and the log is where a user looks first. Logs only, never the
    summary, whose artifacts must not depend on the machine."""
    start = time.perf_counter()
    yield
    log.info("prepare: %s in %.1f s", step, time.perf_counter() - start)


def _read_inputs_step(ctx: StageContext, raw_dir: Path) -> dict[str, Any]:
    """Step 1; reused as a whole when a previous attempt finished it, and its finished read tasks when one was
    killed midway."""
    done = raw_dir / "_DONE.json"
    if done.is_file():
        return read_json(done)
    cfg = ctx.config
    inputs = input_fingerprints(cfg)  # before reading: the audit trail of what this run was given
    result = {
        **read_inputs(cfg.data, cfg.prepare, cfg.tokenizer, raw_dir, ctx.seed, ctx.executor, ctx.location),
        "inputs": inputs,
    }
    write_json(done, result)
    return result


def _tokenizer_step(cfg: RunConfig, raw_dir: Path, out_dir: Path) -> None:
    """Step 2: the tokenizer saved inside the stage, so later stages, workers and users load it from there."""
    if (out_dir / "tokenizer.json").is_file() or (out_dir / "tokenizer_config.json").is_file():
        return
    tokenizer = build_tokenizer(cfg.tokenizer, raw_dir)
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tokenizer.save_pretrained(str(tmp))
    tmp.rename(out_dir)


def _count_tokens_step(ctx: StageContext, raw_dir: Path, roles: list[str]) -> None:
    """Step 3: one counted shard per raw shard, every role's shards in one pass of the executor."""
    work = PrepareFiles(ctx.work_dir)
    items, done = [], 0
    total = 0
    for role in roles:
        work.role(role).mkdir(parents=True, exist_ok=True)
        for entry in ShardSet(raw_dir / role).index["shards"]:
            total += int(entry["docs"])
            dest = work.role(role) / entry["file"]
            if dest.is_file():
                done += int(entry["docs"])
            else:
                renames = str(raw_dir / role / entry["renames"]) if entry.get("renames") else None
                items.append(
                    {
                        "raw": str(raw_dir / role / entry["file"]),
                        "dest": str(dest),
                        "label": entry["label"],
                        "record_offset": entry["record_offset"],
                        "renames": renames,
                    }
                )
    in_process, where = ctx.executor.in_process, ctx.location
    if not in_process:  # workers on machines that do not see this disk read them from the run's store
        written_here = [
            path for item in items for path in (item["raw"], item["renames"]) if path and Path(path).exists()
        ]
        for path in [work.tokenizer, *written_here]:  # raw shards read on another machine were uploaded there
            where.share(path)
    with progress_bar("prepare: counting tokens", total=total, unit="docs") as bar:
        bar.update(done)
        worker = functools.partial(
            ShardTokenCounter,
            where,
            str(work.tokenizer),
            ctx.config.prepare.batch_docs,
            bar.update if in_process else None,
        )
        for item, result in zip(items, ctx.executor.stream(worker, items), strict=True):
            where.collect(item["dest"])  # written on a machine that does not see this one's disk: fetched
            if not in_process:
                bar.update(int(result["docs"]))
