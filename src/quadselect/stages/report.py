"""The `report` stage: `report.html` and a PNG per figure, from the finished run's artifacts (seconds)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from quadselect.config import RunConfig
from quadselect.report import build_report
from quadselect.report.artifacts import COMPARISON_FILE, METRICS_FILE
from quadselect.run import StageContext


def report_args(config: RunConfig) -> dict[str, Any]:
    """The report's options, plus digests of the evaluation files it shows: when an evaluation writes or rewrites
    them after the report was made, the report is out of date and re-runs."""
    evaluate = config.run_dir / "evaluate"
    comparison = config.report.comparison or evaluate / COMPARISON_FILE
    return {
        "report": config.report.model_dump(mode="json"),
        "seed": config.seed,
        "shown_files": {"comparison": _digest(comparison), "metrics": _digest(evaluate / METRICS_FILE)},
    }


def _digest(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16] if path.is_file() else None


def run_report(ctx: StageContext) -> dict[str, Any]:
    report = build_report(ctx.run_dir, ctx.work_dir, ctx.config.report, seed=ctx.seed)
    final = ctx.run_dir / "report"
    return {
        "path": str(final / report.html.name),
        "figures": {name: str(final / path.name) for name, path in report.figures.items()},
        "tables": report.tables,
        "left_out": report.missing,
    }
