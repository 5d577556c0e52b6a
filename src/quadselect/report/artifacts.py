"""Everything the report shows, as loaded from a finished run (`quadselect.stages.report.load_artifacts` reads the
run directory; the report itself never looks one up).

The report only reads artifacts; it never recomputes a stage. Per-document columns of the pool are read shard by
shard for the rows that are needed (a map sample, the scored documents), so a report on a pool of hundreds of
millions of documents holds a few columns of a few thousand rows, not the pool.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from quadselect.data.shards import ShardSet, read_rows

log = logging.getLogger(__name__)

COMPARISON_SCHEMA = "quadselect.comparison/2"  # what quadselect.compare writes (a run-level package: not imported)


@dataclass
class StageInfo:
    """One finished stage: its wall time, when it finished, the arguments it ran with and its summary."""

    name: str
    wall_s: float
    finished: str
    args: dict[str, Any]
    summary: dict[str, Any]


@dataclass
class MethodResult:
    """One row of a method comparison: metric name -> (mean, std or None), and the unigram floor of a metric (a
    unigram model fitted on the same selection) under the metric's name."""

    method: str
    metrics: dict[str, tuple[float, float | None]]
    floors: dict[str, tuple[float, float | None]] = field(default_factory=dict)
    docs_scored: int | None = None
    select_wall_s: float | None = None


@dataclass
class Comparison:
    """Several selection methods evaluated alike (a comparison.json), or why there is none."""

    path: Path | None
    methods: list[MethodResult] = field(default_factory=list)
    # {check, passed, detail}: the thesis, tested; passed is None when the numbers cannot decide (one seed)
    checks: list[dict[str, Any]] = field(default_factory=list)
    headline: list[str] = field(default_factory=list)  # the order the comparison shows its metrics in
    note: str = ""

    @property
    def metric_names(self) -> list[str]:
        """Every metric some method has: in the comparison's headline order (bits per byte first), then any other
        alphabetically."""
        present = {name for m in self.methods for name in m.metrics}
        return [n for n in self.headline if n in present] + sorted(present - set(self.headline))


@dataclass
class RunArtifacts:
    """A finished run (stages through `export`), as the report needs it.

    Large per-document data stays on disk: `pool` and `assignments` are read shard by shard for the rows needed, and
    `embeddings` are memory maps."""

    run_dir: Path  # shown on the page as where the report comes from; nothing is read from it
    config_yaml: str
    stages: list[StageInfo]
    selection: dict[str, Any]
    pool: ShardSet
    pool_tokens_by_source: dict[str, int]
    embeddings: list[np.ndarray]  # one (rows, dim) array per pool shard
    assignments: Path  # one Parquet file per pool shard, named as the shard: doc_id, cluster, source, ...
    clusters: list[dict[str, Any]]
    manifest_rows: np.ndarray
    manifest_clusters: np.ndarray
    manifest_tokens: np.ndarray
    scored_rows: np.ndarray
    scored_scores: np.ndarray
    trajectory: list[dict[str, Any]] | None
    comparison: Comparison
    metrics: dict[str, Any] | None

    @property
    def method(self) -> str:
        return str(self.selection.get("method", "?"))

    @property
    def tau(self) -> float | None:
        tau = self.selection.get("tau")
        return float(tau) if tau is not None else None


def read_comparison(path: Path) -> Comparison:
    """Read a comparison.json (schema `quadselect.comparison/2`, written by `quadselect.compare`): methods of
    {method, metrics, floors, docs_scored, select_wall_s}, the checks, and the headline order of the metrics (the
    file's keys are sorted: the order is a list).

    A metric is {"mean": m, "std": s, ...} or a plain number. A file that cannot be read as a comparison leaves a note
    in the report instead: the report still shows the run."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict) or data.get("schema") != COMPARISON_SCHEMA:
            schema = data.get("schema") if isinstance(data, dict) else None
            raise ValueError(f"schema {schema!r}, expected {COMPARISON_SCHEMA!r}")
        entries = data.get("methods")
        if not isinstance(entries, list) or not entries:
            raise ValueError("expected a non-empty list of methods")
        methods = [_method_result(entry) for entry in entries]
        checks = [
            {"check": str(c["check"]), "passed": None if c["passed"] is None else bool(c["passed"]),
             "detail": str(c.get("detail", ""))}
            for c in data.get("checks") or []
        ]
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        log.warning("report: %s is not a readable comparison (%s); the report leaves it out", path, exc)
        return Comparison(path, note=f"{path} could not be read as a method comparison ({exc}).")
    return Comparison(path, methods, checks, headline=[str(name) for name in data["headline"]])


def _method_result(entry: dict[str, Any]) -> MethodResult:
    metrics = _mean_std(entry.get("metrics") or {})
    if not metrics:
        raise ValueError(f"method {entry.get('method')!r} has no metrics")
    return MethodResult(
        method=str(entry["method"]),
        metrics=metrics,
        floors=_mean_std(entry.get("floors") or {}),
        docs_scored=int(entry["docs_scored"]) if entry.get("docs_scored") is not None else None,
        select_wall_s=_opt_float(entry.get("select_wall_s")),
    )


def _mean_std(values: dict[str, Any]) -> dict[str, tuple[float, float | None]]:
    """name -> (mean, std or None), in the file's order; a null mean (no seed measured it) is left out."""
    out: dict[str, tuple[float, float | None]] = {}
    for name, value in values.items():
        if not isinstance(value, dict):
            out[name] = (float(value), None)
        elif value.get("mean") is not None:
            out[name] = (float(value["mean"]), _opt_float(value.get("std")))
    return out


def _opt_float(value: Any) -> float | None:
    if value is None:
        return None
    number = float(value)
    return None if math.isnan(number) else number


def pool_column(art: RunArtifacts, rows: np.ndarray, column: str) -> np.ndarray:
    """A column of the cluster assignments (`cluster`, `source`, ...) for pool `rows`, in the order of `rows`,
    reading only the shards that hold them."""
    rows = np.asarray(rows, dtype=np.int64)
    order = np.argsort(rows, kind="stable")
    picked, values = [], []
    start = 0
    for shard in art.pool.index["shards"]:
        end = start + int(shard["docs"])
        lo, hi = np.searchsorted(rows[order], [start, end])
        if hi > lo:
            table = pq.read_table(art.assignments / shard["file"], columns=[column])
            picked.append(order[lo:hi])
            values.append(table[column].to_numpy(zero_copy_only=False)[rows[order[lo:hi]] - start])
        start = end
    if not values:
        return np.zeros(0)
    return np.concatenate(values)[np.argsort(np.concatenate(picked), kind="stable")]


def documents(pool: ShardSet, rows: np.ndarray) -> list[dict[str, Any]]:
    """doc_id, source and text of pool `rows`, in that order."""
    if not len(rows):
        return []
    return read_rows(pool, np.asarray(rows, dtype=np.int64), ["doc_id", "source", "text"]).to_pylist()


def changed_args(args: dict[str, Any]) -> dict[str, Any]:
    """A stage's arguments that differ from the config defaults, as dotted keys (`select.budget_fraction`).

    Sections without defaults (`data`) are summarized by their number of inputs. This is what tells two runs apart
    in `quadselect status` and in the report."""
    from pydantic import BaseModel, ValidationError

    from quadselect.config import RunConfig

    out: dict[str, Any] = {}
    for section, value in args.items():
        model = RunConfig.model_fields.get(section)
        annotation = model.annotation if model is not None else None
        if section == "data" and isinstance(value, dict):
            for role, sources in value.items():
                out[f"data.{role}"] = f"{len(sources)} input(s)"
        elif isinstance(value, dict) and isinstance(annotation, type) and issubclass(annotation, BaseModel):
            try:
                default = annotation().model_dump(mode="json")
            except ValidationError:
                default = {}
            out.update({f"{section}.{k}": v for k, v in value.items() if k not in default or default[k] != v})
        elif isinstance(value, dict):
            out.update({f"{section}.{k}": v for k, v in value.items() if v is not None})
        elif model is None or value != model.default:
            out[section] = value
    return out


def format_args(args: dict[str, Any], sep: str = ", ") -> str:
    """`changed_args` as text: `k=v` joined by `sep` (or "defaults")."""
    changed = changed_args(args)
    return sep.join(f"{k}={v if isinstance(v, str) else json.dumps(v)}" for k, v in changed.items()) or "defaults"
