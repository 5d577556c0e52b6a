"""The `report` stage: `report.html` and a PNG per figure, from the finished run's artifacts (seconds).

The stage reads the run directory (through `RunLayout`) into `RunArtifacts`; `quadselect.report` draws and writes
the page from those, knowing no run directory.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from quadselect.atomic import read_json
from quadselect.config import RunConfig
from quadselect.data.shards import ShardSet
from quadselect.embed import open_embedding_shards
from quadselect.errors import QuadselectError
from quadselect.layout import THROUGH_EXPORT, ReportFiles, RunLayout
from quadselect.report import build_report
from quadselect.report.artifacts import Comparison, RunArtifacts, StageInfo, read_comparison
from quadselect.run import StageContext


def report_args(config: RunConfig) -> dict[str, Any]:
    """The report's options, plus digests of the evaluation files it shows: when an evaluation writes or rewrites
    them after the report was made, the report is out of date and re-runs."""
    layout = RunLayout(config.run_dir)
    evaluate, comparison = layout.evaluate, config.report.comparison or layout.compare.comparison
    return {
        "report": config.report.model_dump(mode="json"),
        "seed": config.seed,
        "shown_files": {"comparison": _digest(comparison), "metrics": _digest(evaluate.metrics)},
    }


def _digest(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16] if path.is_file() else None


def run_report(ctx: StageContext) -> dict[str, Any]:
    artifacts = load_artifacts(ctx.run_dir, ctx.config.report.comparison)
    out = ReportFiles(ctx.work_dir)
    report = build_report(artifacts, out.html, out.clusters_csv, ctx.config.report, seed=ctx.seed)
    final = ctx.layout.report.root
    return {
        "path": str(final / report.html.name),
        "figures": {name: str(final / path.name) for name, path in report.figures.items()},
        "tables": report.tables,
        "left_out": report.missing,
    }


def load_artifacts(run_dir: str | Path, comparison: Path | None = None) -> RunArtifacts:
    """Read a run directory whose stages through `export` are done; a missing stage is an error saying which.

    `comparison`: the configured comparison.json (`report.comparison`); None shows the run's own
    `compare/comparison.json` (`quadselect compare`) when there is one."""
    layout = RunLayout(Path(run_dir))
    stages = [_stage_info(layout, name) for name in THROUGH_EXPORT]
    by_name = {s.name: s for s in stages}
    scored = layout.select.scored
    if not scored.is_file():
        raise QuadselectError(
            f"{scored} is missing although the select stage finished: the run directory is incomplete. "
            "`quadselect run CONFIG --force select` makes the selection again."
        )
    pool_sources = by_name["prepare"].summary.get("roles", {}).get("pool", {}).get("sources", {})
    manifest = pq.read_table(layout.export.manifest, columns=["row", "cluster", "n_tokens"])
    scores = pq.read_table(scored, columns=["row", "score"])
    return RunArtifacts(
        run_dir=layout.run_dir,
        config_yaml=layout.config.read_text(encoding="utf-8") if layout.config.is_file() else "",
        stages=stages,
        selection=read_json(layout.export.selection),
        pool=ShardSet(layout.prepare.pool),
        pool_tokens_by_source={name: int(src["tokens"]) for name, src in sorted(pool_sources.items())},
        embeddings=open_embedding_shards(layout.embed.root),
        assignments=layout.cluster.assignments,
        clusters=pq.read_table(layout.cluster.clusters).to_pylist(),
        manifest_rows=manifest["row"].to_numpy().astype(np.int64),
        manifest_clusters=manifest["cluster"].to_numpy().astype(np.int64),
        manifest_tokens=manifest["n_tokens"].to_numpy().astype(np.int64),
        scored_rows=scores["row"].to_numpy().astype(np.int64),
        scored_scores=scores["score"].to_numpy().astype(np.float64),
        trajectory=_trajectory(layout.select.trajectory),
        comparison=_comparison(layout, comparison),
        metrics=_metrics(layout.evaluate.metrics),
    )


def _stage_info(layout: RunLayout, name: str) -> StageInfo:
    marker = layout.marker(name)
    if not marker.is_file():
        raise QuadselectError(
            f"{layout.run_dir}: the {name} stage has not finished, so there is nothing to report on yet. Run "
            "`quadselect run CONFIG` (or `quadselect report CONFIG`, which runs the missing stages first)."
        )
    done = read_json(marker)
    return StageInfo(name, float(done["wall_s"]), str(done["finished"]), done["args"].get("args", {}), done["summary"])


def _trajectory(path: Path) -> list[dict[str, Any]] | None:
    if not path.is_file():
        return None
    records = read_json(path)
    return records if isinstance(records, list) and records else None


def _metrics(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    data = read_json(path)
    return data if isinstance(data, dict) else None


def _comparison(layout: RunLayout, configured: Path | None) -> Comparison:
    """The configured comparison.json, which must exist, or the run's own when there is one (a note otherwise)."""
    if configured is not None and not configured.is_file():
        raise QuadselectError(
            f"report.comparison: {configured} does not exist. Point it at the comparison.json `quadselect compare` "
            "wrote, or remove the key (the report then uses <run_dir>/compare/comparison.json when present)."
        )
    path = configured or layout.compare.comparison
    if not path.is_file():
        return Comparison(None, note="No method comparison: `quadselect compare` compares selections on this pool.")
    return read_comparison(path)
