"""The library API: what the CLI calls, usable from a notebook.

Each function runs its stage (and any unfinished stage before it) in the config's run directory and returns the
stage's result loaded from its artifacts, so a notebook and the CLI always see the same files.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from quadselect.atomic import read_json
from quadselect.config import RunConfig, load_config
from quadselect.layout import CONFIG_FILE, RunLayout
from quadselect.pipeline import build_pipeline, evaluation_pipeline
from quadselect.report.artifacts import RunArtifacts
from quadselect.run import Runner, StageResult


def _config(config: RunConfig | str | Path) -> RunConfig:
    return config if isinstance(config, RunConfig) else load_config(config)


def run_pipeline(
    config: RunConfig | str | Path, *, until: str | None = None, force: tuple[str, ...] = ()
) -> list[StageResult]:
    """Run every stage (or up to `until`) in the config's run directory, skipping stages already done."""
    cfg = _config(config)
    pipeline = build_pipeline()
    if until is not None and until not in pipeline.stages:
        raise ValueError(f"unknown stage {until!r}; stages: {', '.join(pipeline.stages)}")
    return Runner(pipeline, cfg).run(until, force=force)


def embed_pool(config: RunConfig | str | Path) -> list[np.ndarray]:
    """Embeddings of every pool document: one read-only float16 memmap per shard, rows in pool order."""
    from quadselect.embed import open_embedding_shards

    cfg = _config(config)
    run_pipeline(cfg, until="embed")
    return open_embedding_shards(RunLayout(cfg.run_dir).embed.root)


@dataclass
class Clusters:
    """The cluster stage's result: per-document assignments and per-cluster facts."""

    assignments: pa.Table  # doc_id, cluster, distance, n_tokens, source (pool order)
    clusters: pa.Table  # cluster, docs, tokens, dominant_sources, top_terms, examples
    centroids: np.ndarray
    summary: dict[str, Any]


def cluster_embeddings(config: RunConfig | str | Path) -> Clusters:
    """k-means clusters of the pool (embedding first if needed)."""
    cfg = _config(config)
    [*_, result] = run_pipeline(cfg, until="cluster")
    out = RunLayout(cfg.run_dir).cluster
    return Clusters(
        assignments=pq.read_table(out.assignments),
        clusters=pq.read_table(out.clusters),
        centroids=np.load(out.centroids, allow_pickle=False),
        summary=result.summary,
    )


@dataclass
class Selection:
    """The select stage's result: the manifest (selection order) and its summary (`selection.json`)."""

    manifest: pa.Table  # doc_id, row, cluster, source, n_tokens, score, round, contaminated
    summary: dict[str, Any]

    @property
    def doc_ids(self) -> list[str]:
        return self.manifest["doc_id"].to_pylist()


def select(config: RunConfig | str | Path) -> Selection:
    """Run the pipeline through `select` and return the selection (use `run_pipeline` to export it too)."""
    cfg = _config(config)
    run_pipeline(cfg, until="select")
    out = RunLayout(cfg.run_dir).select
    return Selection(manifest=pq.read_table(out.manifest), summary=read_json(out.selection))


def run_config(run_dir_or_config: str | Path, overrides: dict[str, Any] | None = None) -> RunConfig:
    """The config of a run: a YAML config file, or a run directory (its `config.resolved.yaml`), with overrides."""
    from quadselect.errors import RunDirError

    path = Path(run_dir_or_config)
    if path.is_dir():
        path = RunLayout(path).config
        if not path.is_file():
            raise RunDirError(
                f"{path.parent} is not a run directory (no {CONFIG_FILE}): run `quadselect run CONFIG` first, "
                "or pass the config file."
            )
    return load_config(path, overrides)


def report_artifacts(run_dir: str | Path) -> RunArtifacts:
    """Everything the report of a finished run shows, loaded from its run directory: draw it again elsewhere with
    `quadselect.report.build_report`, or read the numbers behind each figure."""
    from quadselect.stages.report import load_artifacts

    return load_artifacts(run_dir, run_config(run_dir).report.comparison)


def train(config: RunConfig | str | Path, *, force: bool = False) -> dict[str, Any]:
    """Train a fresh small model on the run's exported selection (running any unfinished stage before it); returns
    the train stage's summary. The model is saved in `<run_dir>/train/model/`."""
    cfg = _config(config)
    [*_, result] = Runner(evaluation_pipeline(), cfg).run("train", force=("train",) if force else ())
    return result.summary


def evaluate(config: RunConfig | str | Path, *, force: bool = False) -> dict[str, Any]:
    """Train on the selection if needed, then evaluate: returns `<run_dir>/evaluate/metrics.json` (held-out
    reference loss, loss per pool domain and their mean, cloze accuracy, extra files, lm-eval tasks)."""
    cfg = _config(config)
    Runner(evaluation_pipeline(), cfg).run("evaluate", force=("evaluate",) if force else ())
    return read_json(RunLayout(cfg.run_dir).evaluate.metrics)


def score_file(
    run_dir: Path, docs: Path, *, text_field: str = "text", id_field: str | None = None, batch_size: int = 8
) -> list[dict[str, Any]]:
    """Score the documents of a JSONL/Parquet file against a finished run's reference direction: one record per
    document (`doc_id`, `score`: cosine influence, `loss`: mean token loss, `text`), in file order."""
    from quadselect.config import PrepareConfig, SourceSpec
    from quadselect.data.normalize import IdRegistry, iter_documents
    from quadselect.data.problems import ProblemReport
    from quadselect.errors import InputDataError
    from quadselect.stages.workers import load_scorer

    layout = RunLayout(run_dir)
    config = load_config(layout.config)
    if not layout.reference.g_hat.is_file():
        raise InputDataError(f"{run_dir}: the reference stage has not finished. Run `quadselect run CONFIG` first.")
    spec = SourceSpec(path=docs, text_field=text_field, id_field=id_field)
    report = ProblemReport()
    documents = list(iter_documents(spec, PrepareConfig(), report, IdRegistry()))
    if not documents:
        raise InputDataError(f"{docs}: no usable document (problems: {dict(report.counts) or 'none'}).")
    scorer = load_scorer(layout, config.factors, batch_size=batch_size)
    scores, losses = scorer.score_texts([d.text for d in documents])
    return [
        {"doc_id": doc.doc_id, "score": float(score), "loss": float(loss), "text": doc.text}
        for doc, score, loss in zip(documents, scores, losses, strict=True)
    ]
