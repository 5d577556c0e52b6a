"""The library API: what the CLI calls, usable from a notebook.

Each function runs its stage (and any unfinished stage before it) in the config's run directory and returns the
stage's result loaded from its artifacts, so a notebook and the CLI always see the same files.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from quadselect.atomic import read_json, write_bytes
from quadselect.config import RunConfig, config_from_dict, load_config
from quadselect.data.storage import is_url
from quadselect.layout import CONFIG_FILE, RunLayout
from quadselect.pipeline import build_pipeline, evaluation_pipeline
from quadselect.report.artifacts import RunArtifacts
from quadselect.run import Runner, StageResult


def _config(config: RunConfig | str | Path) -> RunConfig:
    """Every function here takes a run as a loaded config, a YAML config file or a run directory alike."""
    return config if isinstance(config, RunConfig) else run_config(config)


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
    """The config of a run: a YAML config file, or a run directory (its `config.resolved.yaml`), with overrides.
    The one place a path naming a run is resolved, so every CLI command and API function accepts either."""
    from quadselect.errors import ConfigError, RunDirError

    if is_url(str(run_dir_or_config)):
        return load_config(_stored_config(str(run_dir_or_config)), overrides)
    path = Path(run_dir_or_config)
    if path.is_dir():
        path = RunLayout(path).config
        if not path.is_file():
            raise RunDirError(
                f"{path.parent} is not a run directory (no {CONFIG_FILE}): run `quadselect run CONFIG` first, "
                "or pass the config file."
            )
    elif not path.exists():
        raise ConfigError(
            f"{path}: no such run directory or config file. Pass a run directory (the run_dir of a config you have "
            "run) or the run's YAML config file."
        )
    return load_config(path, overrides)


def _stored_config(url: str) -> Path:
    """The resolved config of a run kept in object storage, downloaded into this machine's working copy."""
    from quadselect.data.storage import check_url, explained, filesystem
    from quadselect.errors import RunDirError
    from quadselect.run_store import working_copy

    url = check_url(url).rstrip("/")
    fs, path = filesystem(f"{url}/{CONFIG_FILE}")
    with explained(f"{url}/{CONFIG_FILE}"):
        if not fs.exists(path):
            raise RunDirError(
                f"{url} is not a run directory (no {CONFIG_FILE}): run `quadselect run CONFIG` with run_dir: {url} "
                "first, or pass the config file."
            )
        text = fs.cat_file(path)
    local = RunLayout(working_copy(url)).config
    local.parent.mkdir(parents=True, exist_ok=True)
    write_bytes(local, text)
    return local


def report_artifacts(run: RunConfig | str | Path) -> RunArtifacts:
    """Everything the report of a finished run shows, loaded from its run directory: draw it again elsewhere with
    `quadselect.report.build_report`, or read the numbers behind each figure."""
    from quadselect.stages.report import load_artifacts

    config = _config(run)
    return load_artifacts(config.run_dir, config.report.comparison)


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


def compare(
    config: RunConfig | str | Path,
    *,
    methods: list[str] | None = None,
    ablations: list[str] | None = None,
    seeds: int | None = None,
    train_tokens: int | None = None,
    budget_fraction: float | None = None,
    recorded: Sequence[str | Path] = (),
    estimate_only: bool = False,
    on_estimate: Callable[[str], None] | None = None,
) -> dict[str, Any] | None:
    """Compare selection methods on this run's pool, reference, eval split and budget (`compare:` in the config;
    the keyword arguments override it): every method, Quad's ablations, the mixture curves and Quad's sweep, each
    trained on and evaluated with every seed, in run directories under `<run_dir>/compare/`. Returns the
    comparison document (also written to `<run_dir>/compare/comparison.json`, with summary.md and the figures), or
    None with `estimate_only`. `on_estimate(text)` receives the plan's time estimate before the long part starts.
    Runs recorded in `recorded` comparison.json files (and in this comparison's own) under the fingerprint their
    config gives now are reused, not run again."""
    from quadselect.compare.driver import compare as run_comparison

    cfg = _config(config)
    overrides: dict[str, Any] = {}
    if seeds is not None:
        overrides["compare"] = {"seeds": seeds}
    if train_tokens is not None:
        overrides["train"] = {"train_tokens": train_tokens}
    if budget_fraction is not None:
        overrides["select"] = {"budget_fraction": budget_fraction, "budget_tokens": None}
    if overrides:
        data = cfg.model_dump(mode="json")
        cfg = config_from_dict({**data, **_nested(data, overrides)}, base_dir=cfg.run_dir)
    outcome = run_comparison(
        cfg,
        methods=methods,
        ablations=ablations,
        recorded=[Path(p) for p in recorded],
        estimate_only=estimate_only,
        on_estimate=on_estimate,
    )
    return outcome.document


def _nested(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """`overrides` merged into the matching sections of `base` (one level of nesting: config sections)."""
    return {section: {**base.get(section, {}), **values} for section, values in overrides.items()}


def score_file(
    run: RunConfig | str | Path,
    docs: Path,
    *,
    text_field: str = "text",
    id_field: str | None = None,
    batch_size: int = 8,
) -> list[dict[str, Any]]:
    """Score the documents of a JSONL/Parquet file against a finished run's reference direction: one record per
    document (`doc_id`, `score`: cosine influence, `loss`: mean token loss, `text`), in file order.

    Ids come from `id_field`; left unset, from an `id` field where a document has one, as a new user expects of a
    file that has ids. A document without a usable id gets a generated one (`<file stem>-<n>`), as in `prepare`; a
    named `id_field` that no document has is an error, most likely a misspelt field."""
    from quadselect.config import PrepareConfig, SourceSpec
    from quadselect.data.normalize import IdRegistry, iter_documents
    from quadselect.data.problems import ProblemReport
    from quadselect.errors import InputDataError
    from quadselect.influence.lowrank import NormSketch
    from quadselect.stages.workers import load_scorer

    config = _config(run)
    layout = RunLayout(config.run_dir)
    if not layout.reference.g_hat.is_file():
        raise InputDataError(
            f"{config.run_dir}: the reference stage has not finished. Run `quadselect run CONFIG` first."
        )
    spec = SourceSpec(path=docs, text_field=text_field, id_field=id_field or "id")
    report = ProblemReport()
    documents = list(iter_documents(spec, PrepareConfig(), report, IdRegistry()))
    if not documents:
        raise InputDataError(f"{docs}: no usable document (problems: {dict(report.counts) or 'none'}).")
    if id_field is not None and report.counts["missing_id"] >= len(documents):
        raise InputDataError(
            f"{docs}: no document has a usable {id_field!r} field. Name the field that holds the ids "
            "(--id-field), or leave it out to use `id` where documents have one and generated ids elsewhere."
        )
    # The sketch's Ω from the selection's seed, as the select stage draws it (stages/select.py::selection_seed).
    seed = config.select.seed if config.select.seed is not None else config.seed_for("select")
    sketch = NormSketch(config.select.norm_sketch_dim, seed) if config.select.norm == "sketch" else None
    scorer = load_scorer(layout, config.factors, batch_size=batch_size, norm_sketch=sketch)
    scores, losses = scorer.score_texts([d.text for d in documents])
    return [
        {"doc_id": doc.doc_id, "score": float(score), "loss": float(loss), "text": doc.text}
        for doc, score, loss in zip(documents, scores, losses, strict=True)
    ]
