"""The `select` stage: the method `select.method` names, to the token budget, with decontamination; writes the
manifest and `selection.json`.

The methods are core code (`quadselect.select.methods`, docs/selection-methods.md): each declares the inputs it needs
and returns its selection. This stage is their wiring to the run directory: it builds what the method declares and
nothing else (cluster ids, the neighbour graph, a scorer on the proxy's workers, whole-pool scores or losses, the
pool's texts streamed shard by shard, the reference texts, a checkpoint file, a progress bar), calls it, and writes
the manifest, `scored.parquet`, the trajectory and `selection.json` from what it returns.

With `decontaminate: drop` the whole pool is screened first and contaminated documents are never candidates, so
every method still fills its budget; with `flag` only the selected documents are checked and marked.

A method's checkpoint (Quad's full state after every round, `quad_state.json`) and the whole-pool scores and losses
(saved shard by shard) make a killed run resume and end with exactly the selection an uninterrupted run with the
same seed makes.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import shutil
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from quadselect.atomic import atomic_path, read_json, write_json
from quadselect.audit import (
    config_sha256,
    package_versions,
    prepared_fingerprint,
    safetensors_dtype,
    selection_sha256,
    training_precision,
)
from quadselect.cluster import load_neighbour_graph
from quadselect.config import RunConfig, SelectConfig
from quadselect.data.shards import ShardSet, read_rows
from quadselect.device import describe_device
from quadselect.embed.files import open_embedding_shards
from quadselect.engine import WorkerPool
from quadselect.errors import ConfigError
from quadselect.influence.ekfac import FACTORS_FILE
from quadselect.layout import (
    ARGS_FILE,
    SHARD_INDEX,
    UPSTREAM_OF_SELECT,
    ClusterFiles,
    FactorsFiles,
    PrepareFiles,
    ProxyFiles,
    ReferenceFiles,
    SelectFiles,
    StageFiles,
)
from quadselect.progress import ProgressBar, progress_bar
from quadselect.run import StageContext, stage_status
from quadselect.run_store import RunLocation
from quadselect.select import NgramIndex, find_contamination
from quadselect.select.checkpoint import JsonCheckpoint
from quadselect.select.classifier import (
    FastTextScorer,
    FastTextSettings,
    HFSequenceScorer,
    QualityScorer,
    score_stream,
    train_fasttext,
)
from quadselect.select.decontaminate import shard_contamination
from quadselect.select.members import ClusterMembers
from quadselect.select.method import Method, Need, Selection, SelectionInputs
from quadselect.select.methods import get_method
from quadselect.select.pool_arrays import EligibleArrays, eligible_parts, shard_values, write_values
from quadselect.select.semdedup import semantic_dedup
from quadselect.stages.workers import BATCHES_PER_TASK, LossWorker, ScoringWorker

log = logging.getLogger(__name__)

DEDUP_SNIPPET_CHARS = 200
"""Characters of each document of a removed pair shown in selection.json."""
MANIFEST_STRINGS = pa.schema([("doc_id", pa.string()), ("source", pa.string())])


def select_args(config: RunConfig) -> dict[str, Any]:
    """The select section and the seed, less the knobs of what this selection does not use: `select.mix` outside
    the `mix` method, `select.classifier` where no classifier scores, the sampling knobs under hard top-k and the
    dedup knobs with dedup off. A knob added later then changes the fingerprint of no selection that does not use it
    (its finished runs and recorded comparisons are still reused)."""
    cfg = config.select
    uses = {cfg.method, cfg.mix.first, cfg.mix.second} if cfg.method == "mix" else {cfg.method}
    unused = set()
    if "mix" not in uses:
        unused.add("mix")
    if "classifier" not in uses and cfg.scorer != "classifier":
        unused.add("classifier")
    if cfg.sampling == "hard":
        unused |= {"sampling", "sampling_temperature"}
    if cfg.dedup == "none":
        unused |= {"dedup", "dedup_epsilon", "dedup_examples"}
    if cfg.norm == "exact":
        unused |= {"norm", "norm_sketch_dim"}
    return {"select": cfg.model_dump(mode="json", exclude=unused), "seed": config.seed}


def selection_seed(ctx: StageContext) -> int:
    """select.seed when given (repeat a selection with another seed, upstream stages untouched), else the run's."""
    return ctx.config.select.seed if ctx.config.select.seed is not None else ctx.seed


def budget_tokens(cfg: SelectConfig, pool_tokens: int) -> int:
    """The budget in tokens; a budget at or above the pool's size is an error (it would select everything)."""
    budget = cfg.budget_tokens if cfg.budget_tokens is not None else round(cfg.budget_fraction * pool_tokens)
    if cfg.budget_tokens is not None and budget >= pool_tokens:
        raise ConfigError(
            f"select.budget_tokens={budget:,} is not smaller than the pool ({pool_tokens:,} tokens): there is "
            "nothing to select. Lower the budget or use select.budget_fraction."
        )
    return max(1, budget)


def run_select(ctx: StageContext) -> dict[str, Any]:
    cfg = ctx.config.select
    method = get_method(cfg.method)
    out = SelectFiles(ctx.work_dir)
    clustered = ClusterFiles(ctx.input("cluster"))
    pool = ShardSet(PrepareFiles(ctx.input("prepare")).pool)
    cluster_summary = read_json(clustered.marker)["summary"]
    assignments = [clustered.assignments / shard["file"] for shard in pool.index["shards"]]

    excluded = _contaminated_pool_rows(ctx, pool, cfg) if cfg.decontaminate == "drop" else np.zeros(0, np.int64)
    eligible = EligibleArrays.write(assignments, pool.num_docs, excluded, out.pool_arrays)
    budget = budget_tokens(cfg, eligible.pool_tokens)
    log.info(
        "select: %s to %d tokens (%.1f%% of the pool's %d documents, %d tokens)",
        cfg.method,
        budget,
        100 * budget / max(1, eligible.pool_tokens),
        eligible.pool_docs,
        eligible.pool_tokens,
    )
    dedup_summary: dict[str, Any] = {}
    if cfg.dedup == "semantic":
        removed, dedup_summary = _semantic_dedup(ctx, pool, eligible)
        eligible = EligibleArrays.write(assignments, pool.num_docs, np.union1d(excluded, removed), out.pool_arrays)

    start = time.perf_counter()
    with ExitStack() as stack:
        needs = _Needs(ctx, pool, eligible, cluster_summary, method, budget, stack)
        options = cfg.model_dump()
        inputs = SelectionInputs(
            eligible.n_tokens, budget, selection_seed(ctx), options, **needs.build(method.needs_for(options))
        )
        selection = method.select(inputs)
    selected = np.asarray(selection.selected, dtype=np.int64)
    keep = eligible.rows[selected]
    select_wall = time.perf_counter() - start

    own_rows, own_scores = _own_scores(selection, eligible)
    if selection.trajectory is not None:
        write_json(out.trajectory, json.loads(json.dumps(selection.trajectory, default=_jsonable)))

    contaminated = excluded if cfg.decontaminate == "drop" else _flag_contaminated(ctx, pool, keep, cfg)
    meta = read_rows(pool, keep, ["doc_id", "source"]).cast(MANIFEST_STRINGS)  # the only strings read: the selection's
    n_tokens = np.asarray(eligible.n_tokens[selected])
    manifest = pa.table(
        {
            "doc_id": meta["doc_id"],
            "row": pa.array(keep, pa.int64()),
            "cluster": pa.array(eligible.cluster_ids[selected], pa.int32()),
            "source": meta["source"],
            "n_tokens": pa.array(n_tokens, pa.int32()),
            "score": pa.array(_manifest_scores(keep, selected, needs.pool_scores, own_rows, own_scores), pa.float64()),
            "round": pa.array(
                np.full(keep.size, -1) if selection.rounds is None else np.asarray(selection.rounds), pa.int32()
            ),
            "contaminated": pa.array(np.isin(keep, contaminated)),
        }
    )
    with atomic_path(out.manifest) as tmp:
        pq.write_table(manifest, tmp)
    _write_scored(out.scored, needs.pool_score_files, own_rows, own_scores)
    write_json(
        out.decontaminated,
        {"mode": cfg.decontaminate, "doc_ids": read_rows(pool, contaminated, ["doc_id"])["doc_id"].to_pylist()},
    )

    sources = manifest.group_by("source").aggregate([("n_tokens", "sum")]).to_pylist()
    summary = {
        "method": cfg.method,
        "budget_tokens": budget,
        "pool_tokens": eligible.pool_tokens,
        "pool_docs": eligible.pool_docs,
        "tokens_selected": int(n_tokens.sum()),
        "docs_selected": int(keep.size),
        # The influence computed for this selection: the whole pool's, when the method needed it, or on demand.
        "docs_scored": int(eligible.pool_docs if needs.pool_score_files is not None else 0) + selection.docs_scored,
        "clusters_used": int(np.unique(manifest["cluster"].to_numpy()).size),
        "clusters": int(cluster_summary["k"]),
        "contaminated": int(contaminated.size),
        "decontaminate": cfg.decontaminate,
        "contaminated_checked": "pool" if cfg.decontaminate == "drop" else "selection",
        "select_wall_s": round(select_wall, 2),
        "tokens_by_source": {r["source"]: int(r["n_tokens_sum"]) for r in sorted(sources, key=lambda r: r["source"])},
        **selection.summary,
    }
    if needs.classifier_report is not None:
        summary["classifier"] = needs.classifier_report
    summary.update(dedup_summary)
    summary["fraction_scored"] = round(summary["docs_scored"] / max(1, summary["pool_docs"]), 4)
    summary.update(_tokenizer_note(ctx))
    summary["selection_sha256"] = selection_sha256(manifest["doc_id"].to_pylist())
    write_json(out.selection, {**summary, "audit": _audit(ctx, needs.scoring)})
    del needs, inputs, eligible  # the memory maps, before their files go
    shutil.rmtree(out.pool_arrays)  # rebuilt in seconds from the assignments; not part of the published selection
    return summary


def _semantic_dedup(ctx: StageContext, pool: ShardSet, arrays: EligibleArrays) -> tuple[np.ndarray, dict[str, Any]]:
    """The pool rows semantic dedup within clusters removes (`quadselect.select.semdedup`), and what
    `selection.json` says of it: how many documents and tokens were removed, and the removed pairs nearest the
    threshold (those show whether ε is too loose), with snippets. Reads one cluster's embeddings at a time."""
    cfg = ctx.config.select
    shards = open_embedding_shards(ctx.input("embed"))
    starts = np.cumsum([0] + [array.shape[0] for array in shards])
    centroids = np.load(ClusterFiles(ctx.input("cluster")).centroids)

    def embeddings_of(positions: np.ndarray) -> np.ndarray:
        rows = arrays.rows[positions]
        shard_of = np.searchsorted(starts, rows, side="right") - 1
        out = np.empty((rows.size, centroids.shape[1]), dtype=np.float32)
        for shard in np.unique(shard_of):
            here = shard_of == shard
            out[here] = shards[shard][rows[here] - starts[shard]]
        return out

    with progress_bar("select: semantic dedup", total=arrays.size, unit="docs") as bar:
        result = semantic_dedup(arrays.cluster_ids, centroids, embeddings_of, cfg.dedup_epsilon, bar.update)
    removed, kept_for = arrays.rows[result.removed], arrays.rows[result.duplicate_of]
    removed_tokens = int(arrays.n_tokens[result.removed].sum())
    log.info(
        "select: semantic dedup (ε = %g) removed %d of %d eligible documents (%d tokens)",
        cfg.dedup_epsilon,
        removed.size,
        arrays.size,
        removed_tokens,
    )
    shown = np.argsort(result.similarity, kind="stable")[: cfg.dedup_examples]  # nearest the threshold first
    pairs = read_rows(pool, np.r_[removed[shown], kept_for[shown]], ["doc_id", "text"])
    doc_ids, texts = pairs["doc_id"].to_pylist(), pairs["text"].to_pylist()
    examples = [
        {
            "removed": doc_ids[j],
            "kept": doc_ids[shown.size + j],
            "similarity": round(float(result.similarity[i]), 4),
            "removed_text": texts[j][:DEDUP_SNIPPET_CHARS],
            "kept_text": texts[shown.size + j][:DEDUP_SNIPPET_CHARS],
        }
        for j, i in enumerate(shown)
    ]
    summary = {
        "dedup": "semantic",
        "dedup_epsilon": cfg.dedup_epsilon,
        "dedup_removed_docs": int(removed.size),
        "dedup_removed_tokens": removed_tokens,
        "dedup_examples": examples,
    }
    return np.sort(removed), summary


def _tokenizer_note(ctx: StageContext) -> dict[str, Any]:
    """Whether the pool's tokenizer (budgets, token counts) is the proxy's (influence), with both names. Recorded for
    a proxy loaded from a checkpoint, which keeps its own tokenizer; a built proxy is trained with the pool's, and
    nothing is added."""
    tokenizers = ((stage_status(ctx.run_dir, "proxy") or {}).get("summary") or {}).get("tokenizer")
    if tokenizers is None:
        return {}
    names = {"pool": tokenizers["pool"], "proxy": tokenizers["proxy"]}
    return {"tokenizer_matches_proxy": tokenizers["same"], "tokenizers": names}


def _own_scores(selection: Selection, arrays: EligibleArrays) -> tuple[np.ndarray, np.ndarray]:
    """The pool rows the method scored itself (ascending) and their scores: only as many as it scored."""
    if selection.scored is None or selection.scores is None:
        return np.zeros(0, np.int64), np.zeros(0)
    rows = np.asarray(arrays.rows[np.asarray(selection.scored, dtype=np.int64)])
    order = np.argsort(rows, kind="stable")
    return rows[order], np.asarray(selection.scores, dtype=np.float64)[order]


def _manifest_scores(
    keep: np.ndarray,
    selected: np.ndarray,
    pool_scores: np.ndarray | None,
    own_rows: np.ndarray,
    own_scores: np.ndarray,
) -> np.ndarray:
    """The score of each selected document: the method's own where it scored it, else the whole pool's (by eligible
    position) when it was computed, else NaN."""
    out = np.asarray(pool_scores[selected], dtype=np.float64) if pool_scores is not None else np.full(keep.size, np.nan)
    if own_rows.size:
        at = np.minimum(np.searchsorted(own_rows, keep), own_rows.size - 1)
        found = own_rows[at] == keep
        out[found] = own_scores[at[found]]
    return out


def _write_scored(
    path: Path, pool_score_files: list[Path] | None, own_rows: np.ndarray, own_scores: np.ndarray
) -> None:
    """scored.parquet: every scored pool row, ascending, with its score — the whole pool's scores when they were
    computed for the method (written shard by shard, never held whole), overridden by what the method scored
    itself."""
    schema = pa.schema([("row", pa.int64()), ("score", pa.float64())])
    with atomic_path(path) as tmp, pq.ParquetWriter(tmp, schema) as writer:
        if pool_score_files is None:
            writer.write_table(pa.table({"row": own_rows, "score": own_scores}, schema=schema))
            return
        for start, shard_scores in shard_values(pool_score_files):
            values = shard_scores.astype(np.float64)
            lo, hi = np.searchsorted(own_rows, [start, start + values.size])
            scored = np.isfinite(values)
            values[own_rows[lo:hi] - start] = own_scores[lo:hi]
            scored[own_rows[lo:hi] - start] = True  # the method's own score is kept even when not finite
            rows = np.flatnonzero(scored)
            writer.write_table(pa.table({"row": rows + start, "score": values[rows]}, schema=schema))


class _Needs:
    """Builds, from the run directory, the inputs a method declares (`Need`), over the `eligible` pool rows.

    Resources that must stay open while the method runs (the scorer's worker pool, the progress bar) are entered
    into `stack`. Whole-pool values (scores, losses, classifier probabilities) are memory maps over the eligible
    positions in the stage's `pool_arrays` folder, never arrays the size of the pool; the whole-pool scores' files
    (one per shard, by pool row) are kept in `pool_score_files` for scored.parquet."""

    def __init__(
        self,
        ctx: StageContext,
        pool: ShardSet,
        arrays: EligibleArrays,
        cluster_summary: dict[str, Any],
        method: Method,
        budget: int,
        stack: ExitStack,
    ) -> None:
        self.ctx, self.pool, self.arrays, self.stack = ctx, pool, arrays, stack
        self.eligible = arrays.rows  # the pool row of each eligible position
        self.cluster_summary = cluster_summary
        self.method, self.budget = method, budget
        self.pool_scores: np.ndarray | None = None
        self.pool_score_files: list[Path] | None = None
        self.classifier_report: dict[str, Any] | None = None  # set when the on-demand scorer is the classifier
        self.scoring: dict[str, Any] | None = None  # the dtype and device the proxy's workers ran in, when used

    def build(self, needs: Iterable[Need]) -> dict[str, Any]:
        """The `SelectionInputs` fields of `needs`, built in the order `Need` lists them."""
        builders: dict[Need, Callable[[], dict[str, Any]]] = {
            Need.CLUSTERS: self._clusters,
            Need.NEIGHBOURS: self._neighbours,
            Need.SCORER: self._scorer,
            Need.POOL_SCORES: self._pool_scores,
            Need.POOL_LOSSES: self._pool_losses,
            Need.CLASSIFIER: self._classifier,
            Need.TEXTS: self._texts,
            Need.REFERENCE_TEXTS: self._reference_texts,
            Need.CHECKPOINT: self._checkpoint,
            Need.PROGRESS: self._progress,
        }
        wanted = set(needs)
        given: dict[str, Any] = {}
        for need in Need:
            if need in wanted:
                given.update(builders[need]())
        return given

    def _clusters(self) -> dict[str, Any]:
        k = int(self.cluster_summary["k"])
        members = ClusterMembers.on_disk(self.arrays.cluster_ids, k, SelectFiles(self.ctx.work_dir).cluster_members)
        return {"cluster_ids": self.arrays.cluster_ids, "n_clusters": k, "cluster_members": members}

    def _neighbours(self) -> dict[str, Any]:
        if not self.ctx.config.select.neighbours:
            return {"neighbours": None, "gamma": None}
        graph = load_neighbour_graph(ClusterFiles(self.ctx.input("cluster")).neighbours)
        return {"neighbours": graph, "gamma": float(self.cluster_summary["gamma"])}

    def _scorer(self) -> dict[str, Any]:
        if self.ctx.config.select.scorer == "classifier":
            return {"score": self._classifier_on_demand()}
        workers = self.stack.enter_context(self.ctx.executor.pool(_scoring_worker(self.ctx)))
        self.scoring = next(workers.map("precision", [None]))
        batch_size = self.ctx.config.select.score_batch_size

        def score(positions: np.ndarray) -> np.ndarray:
            texts = read_rows(self.pool, self.eligible[positions], ["text"])["text"].to_pylist()
            return _concat(workers.map("score", _batches(texts, batch_size)))

        return {"score": score}

    def _classifier_on_demand(self) -> Callable[[np.ndarray], np.ndarray]:
        """The quality classifier's probability as the on-demand scorer (`select.scorer: classifier`): the bandit on
        a cheap signal instead of influence. Its report goes to `selection.json` as `classifier`."""
        scorer, self.classifier_report = self._quality_classifier()

        def score(positions: np.ndarray) -> np.ndarray:
            return scorer.score(read_rows(self.pool, self.eligible[positions], ["text"])["text"].to_pylist())

        return score

    def _classifier(self) -> dict[str, Any]:
        """The quality classifier's score of every eligible document, streamed shard by shard."""
        scorer, report = self._quality_classifier()
        to = SelectFiles(self.ctx.work_dir).pool_arrays / "classifier_scores.npy"
        with progress_bar("select: classifying the pool", total=int(self.eligible.size), unit="docs") as bar:
            scores = write_values(
                _counted(score_stream(scorer, ShardTexts(self.pool, self.eligible)), bar), len(self.eligible), to
            )
        mean = float(np.mean(scores)) if scores.size else 0.0
        log.info("select: classified %d pool documents (mean score %.3f) -> %s", scores.size, mean, to)
        return {"classifier_scores": scores, "classifier_report": report}

    def _quality_classifier(self) -> tuple[QualityScorer, dict[str, Any]]:
        """The classifier `select.classifier` names: a transformers or fastText model given, or a fastText model
        trained here on the reference set against a seeded sample of the eligible pool, saved in the stage folder."""
        cfg = self.ctx.config.select.classifier
        if cfg.hf_model is not None:
            hf = HFSequenceScorer.load(
                cfg.hf_model, label=cfg.hf_label, max_length=cfg.max_length, batch_size=cfg.batch_size
            )
            return hf, {"kind": "transformers", "model": cfg.hf_model, "label": hf.label}
        if cfg.model is not None:
            return FastTextScorer.load(cfg.model, cfg.label), {"kind": "fasttext", "model": str(cfg.model)}
        positives = self._reference_texts()["reference_texts"]
        wanted = cfg.negatives if cfg.negatives is not None else len(positives)
        rng = np.random.default_rng(selection_seed(self.ctx))
        sample = np.sort(rng.choice(self.eligible.size, size=min(wanted, self.eligible.size), replace=False))
        negatives = read_rows(self.pool, self.eligible[sample], ["text"])["text"].to_pylist()
        path = SelectFiles(self.ctx.work_dir).classifier
        settings = FastTextSettings(cfg.dim, cfg.epoch, cfg.lr, cfg.word_ngrams, cfg.min_count)
        scorer, report = train_fasttext(
            positives,
            negatives,
            path,
            label=cfg.label,
            settings=settings,
            heldout_fraction=cfg.heldout_fraction,
            seed=selection_seed(self.ctx),
        )
        log.info(
            "select: trained a fastText classifier on %d reference and %d pool documents (held-out accuracy %s, "
            "AUC %s) -> %s",
            report.train_positives,
            report.train_negatives,
            report.heldout_accuracy,
            report.heldout_auc,
            path,
        )
        return scorer, {"kind": "fasttext-trained", "model": path.name, **report.as_dict()}

    def _pool_scores(self) -> dict[str, Any]:
        """Influence of every pool document (scored shard by shard, resumable): the cost top-k pays, Quad avoids."""
        cfg = self.ctx.config
        if cfg.select.scorer == "classifier":
            raise ConfigError(
                f"select.scorer: classifier scores on demand, for quad; {cfg.select.method} ranks the whole pool by "
                "influence. To rank it by the classifier use select.method: classifier."
            )
        settings = {
            "factors": cfg.factors.model_dump(mode="json"),
            "scorer": cfg.select.scorer,
            "batch_size": cfg.select.score_batch_size,
            "seed": selection_seed(self.ctx) if cfg.select.scorer == "projected" else None,  # the sketch's seed
        }
        if cfg.select.norm == "sketch":  # the sketched norm's scores depend on k and the seed of Ω
            settings.update(norm="sketch", norm_sketch_dim=cfg.select.norm_sketch_dim, seed=selection_seed(self.ctx))
        key = _cache_key(self.ctx, ("reference",), settings)
        files, self.scoring = _whole_pool(self.ctx, self.pool, "pool_scores", key, _scoring_worker(self.ctx), "score")
        self.pool_score_files = files
        self.pool_scores = self._eligible_values(files, "pool_scores")
        return {"pool_scores": self.pool_scores}

    def _pool_losses(self) -> dict[str, Any]:
        """Mean next-token loss of every pool document under the proxy."""
        worker = functools.partial(
            LossWorker,
            str(ProxyFiles(self.ctx.input("proxy")).model),
            self.ctx.config.factors.max_length,
            self.ctx.config.select.score_batch_size,
            self.ctx.location,
        )
        settings = {
            "max_tokens": self.ctx.config.factors.max_length,
            "batch_size": self.ctx.config.select.score_batch_size,
        }
        key = _cache_key(self.ctx, ("proxy",), settings)
        files, self.scoring = _whole_pool(self.ctx, self.pool, "pool_losses", key, worker, "losses")
        return {"pool_losses": self._eligible_values(files, "pool_losses")}

    def _eligible_values(self, shard_files: list[Path], name: str) -> np.ndarray:
        """The eligible documents' values from per-shard files of the whole pool's, as a memory map."""
        to = SelectFiles(self.ctx.work_dir).pool_arrays / f"{name}.npy"
        return write_values(eligible_parts(shard_files, self.eligible), int(self.eligible.size), to)

    def _texts(self) -> dict[str, Any]:
        return {"texts": ShardTexts(self.pool, self.eligible)}

    def _reference_texts(self) -> dict[str, Any]:
        reference = ShardSet(PrepareFiles(self.ctx.input("prepare")).reference)
        return {"reference_texts": reference.read(["text"])["text"].to_pylist()}

    def _checkpoint(self) -> dict[str, Any]:
        return {"checkpoint": JsonCheckpoint(SelectFiles(self.ctx.work_dir).checkpoint(self.method.name))}

    def _progress(self) -> dict[str, Any]:
        bar = self.stack.enter_context(progress_bar(f"select: {self.method.name}", total=self.budget, unit="tokens"))
        shown = [0]

        def progress(tokens_selected: int) -> None:
            bar.update(tokens_selected - shown[0])
            shown[0] = tokens_selected

        return {"progress": progress}


class ShardTexts:
    """The texts of the given pool rows (sorted), in order, read from the shards on every pass and never held whole:
    only one shard's text column is in memory at a time."""

    def __init__(self, pool: ShardSet, rows: np.ndarray) -> None:
        self.pool, self.rows = pool, rows

    def __len__(self) -> int:
        return int(self.rows.size)

    def __iter__(self) -> Iterator[str]:
        start = 0
        for table in self.pool.iter_tables(["text"]):
            stop = start + table.num_rows
            lo, hi = np.searchsorted(self.rows, [start, stop])
            yield from table["text"].take(pa.array(self.rows[lo:hi] - start)).to_pylist()
            start = stop


def _audit(ctx: StageContext, scoring: dict[str, Any] | None) -> dict[str, Any]:
    """What selection.json records so a selection can be audited later: the config's hash, the fingerprints of the
    stages it came from, the hashes of the inputs and of the prepared documents, the package versions, and the
    precision and machine of every model stage (`scoring`: what this stage's proxy workers reported, if it used any)."""
    prepared = PrepareFiles(ctx.input("prepare"))
    fingerprints = {name: (stage_status(ctx.run_dir, name) or {}).get("fingerprint") for name in UPSTREAM_OF_SELECT}
    return {
        "config_sha256": config_sha256(ctx.config),
        "seed": ctx.config.seed,
        "selection_seed": selection_seed(ctx),
        "fingerprints": {**fingerprints, "select": read_json(ctx.work_dir / ARGS_FILE)["fingerprint"]},
        "inputs": (stage_status(ctx.run_dir, "prepare") or {}).get("summary", {}).get("inputs"),
        "prepared": {
            role: prepared_fingerprint(prepared.role(role))
            for role in ("pool", "reference", "eval")
            if (prepared.role(role) / SHARD_INDEX).is_file()
        },
        "packages": package_versions(),
        "precision": _precision(ctx, scoring),
    }


def _precision(ctx: StageContext, scoring: dict[str, Any] | None) -> dict[str, Any]:
    """Per model stage, what it computed in and the machine it ran on (its marker's `device`; None for a stage
    finished before markers recorded it): the proxy's training precision (bf16 autocast only where the CPU has native
    bfloat16) and stored weights, the stored factors and ĝ_R, and this stage's scoring or loss passes (dtype None:
    the method used no model). What makes two CPUs' selections differ (README, "Reproducible on any CPU")."""
    proxy = ProxyFiles(ctx.input("proxy"))
    weights = sorted(proxy.model.glob("*.safetensors"))

    def device(stage: str) -> dict[str, Any] | None:
        return (stage_status(ctx.run_dir, stage) or {}).get("device")

    return {
        "proxy": {
            "training": training_precision(proxy.train_result),
            "weights": safetensors_dtype(weights[0]) if weights else None,
            "device": device("proxy"),
        },
        "factors": {
            "dtype": safetensors_dtype(FactorsFiles(ctx.input("factors")).ekfac / FACTORS_FILE),
            "device": device("factors"),
        },
        "reference": {
            "dtype": safetensors_dtype(ReferenceFiles(ctx.input("reference")).g_hat),
            "device": device("reference"),
        },
        "select": scoring or {"dtype": None, "device": describe_device()},
    }


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def _scoring_worker(ctx: StageContext) -> Callable[[], ScoringWorker]:
    cfg = ctx.config.select
    return functools.partial(
        ScoringWorker,
        ctx.location,
        ctx.config.factors.model_dump(mode="json"),
        cfg.scorer,
        cfg.score_batch_size,
        selection_seed(ctx),
        cfg.norm_sketch_dim if cfg.norm == "sketch" else None,
    )


def _batches(texts: list[str], size: int) -> list[list[str]]:
    return [texts[start : start + size] for start in range(0, len(texts), size)]


def _concat(parts: Iterable[np.ndarray]) -> np.ndarray:
    arrays = list(parts)
    return np.concatenate(arrays) if arrays else np.zeros(0)


def _cache_key(ctx: StageContext, stages: tuple[str, ...], settings: dict[str, Any]) -> str:
    """A key for values computed from the finished `stages` and `settings` alone: the stages' fingerprints (each
    covers everything upstream of it) and the settings, hashed."""
    fingerprints = {stage: read_json(StageFiles(ctx.input(stage)).marker)["fingerprint"] for stage in stages}
    blob = json.dumps({"stages": fingerprints, "settings": settings}, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def _per_shard(
    ctx: StageContext, pool: ShardSet, name: str, key: str, compute: Callable[[list[int]], Iterator[np.ndarray]]
) -> list[Path]:
    """One value per pool document, kept in the run's cache under `name` and `key` (`RunLayout.cache`): whole-pool
    values do not depend on the method, so another selection of this run (a mixture, a comparison's next seed)
    reads them instead of recomputing. `compute(shards)` yields the values of each listed (missing) shard in turn;
    each shard's values are saved as it completes, so a killed run resumes at the first missing shard. Returns the
    shards' files in pool order: the caller streams them, since the whole pool's values may not fit in memory."""
    out_dir = ctx.layout.cache(name, key)
    out_dir.mkdir(parents=True, exist_ok=True)
    shards = pool.index["shards"]
    paths = [out_dir / (shard["file"].removesuffix(".parquet") + ".npy") for shard in shards]
    todo = [i for i, path in enumerate(paths) if not path.is_file()]
    for i, values in zip(todo, compute(todo), strict=True):
        if values.shape != (int(shards[i]["docs"]),):
            raise RuntimeError(f"select: {name}: {values.shape} values for {shards[i]['docs']} documents")
        with atomic_path(paths[i]) as tmp, open(tmp, "wb") as fh:
            np.save(fh, values, allow_pickle=False)
    return paths


def _through_workers(
    pool: ShardSet, shards: list[int], workers: WorkerPool, method: str, block_docs: int, bar: ProgressBar
) -> Iterator[np.ndarray]:
    """Each listed shard's texts, read once on the driver, sent to the workers' `method` in blocks of `block_docs`,
    and put back together per shard."""
    entries = pool.index["shards"]
    bar.update(pool.num_docs - sum(int(entries[i]["docs"]) for i in shards))  # finished before a resume

    def blocks() -> Iterator[list[str]]:
        for i in shards:
            texts = pq.read_table(pool.directory / entries[i]["file"], columns=["text"])["text"].to_pylist()
            yield from _batches(texts, block_docs)

    results = workers.map(method, blocks())
    for i in shards:
        parts, got = [], 0
        while got < int(entries[i]["docs"]):
            part = next(results)
            parts.append(part)
            got += part.size
            bar.update(part.size)
        yield _concat(parts)


def _whole_pool(
    ctx: StageContext, pool: ShardSet, name: str, key: str, worker: Callable[[], Any], method: str
) -> tuple[list[Path], dict[str, Any]]:
    """One value per pool document from the workers' `method`, saved shard by shard (`_per_shard`: its files), and the
    workers' precision (`precision`: the dtype and device their model runs in)."""
    block_docs = ctx.config.select.score_batch_size * BATCHES_PER_TASK
    with ctx.executor.pool(worker) as workers, progress_bar(f"select: {name}", total=pool.num_docs, unit="docs") as bar:
        compute = functools.partial(
            _through_workers, pool, workers=workers, method=method, block_docs=block_docs, bar=bar
        )
        return _per_shard(ctx, pool, name, key, compute), next(workers.map("precision", [None]))


def _reference_and_eval_texts(ctx: StageContext) -> list[str]:
    prepared = PrepareFiles(ctx.input("prepare"))
    texts = []
    for directory in (prepared.reference, prepared.eval):
        if directory.exists():
            texts.extend(ShardSet(directory).read(["text"])["text"].to_pylist())
    return texts


def _contaminated_pool_rows(ctx: StageContext, pool: ShardSet, cfg: SelectConfig) -> np.ndarray:
    """Pool rows sharing a long n-gram with the reference set or the eval split, screened shard by shard (resumable)
    before selection, so that dropping them never leaves a method short of its budget."""
    index = NgramIndex(cfg.decontaminate_ngram)
    index.add(_reference_and_eval_texts(ctx))
    index.compact()  # once here, rather than in every worker it is sent to
    files = [str(path) for path in pool.files]

    def screen(todo: list[int]) -> Iterator[np.ndarray]:
        with progress_bar("select: contamination", total=len(todo), unit="shards") as bar:
            shards, shared = [files[i] for i in todo], (index, ctx.location)
            for flags in ctx.executor.map(_shard_contamination, shards, shared=shared):
                bar.update(1)
                yield flags

    key = _cache_key(ctx, ("prepare",), {"ngram": cfg.decontaminate_ngram})
    excluded = np.concatenate(
        [np.zeros(0, np.int64), *_flagged_rows(_per_shard(ctx, pool, "contamination", key, screen))]
    )
    if excluded.size:
        log.warning("select: %d pool documents overlap reference/eval text; dropped before selection", excluded.size)
    return excluded


def _counted(parts: Iterable[np.ndarray], bar: ProgressBar) -> Iterator[np.ndarray]:
    """`parts`, each counted on `bar` as it passes."""
    for part in parts:
        bar.update(part.size)
        yield part


def _flagged_rows(shard_files: list[Path]) -> Iterator[np.ndarray]:
    """The pool rows with a positive value, shard by shard, from per-shard files of one value per pool document."""
    for start, values in shard_values(shard_files):
        yield np.flatnonzero(values > 0) + start


def _shard_contamination(shard: str, index: NgramIndex, where: RunLocation) -> np.ndarray:
    """`shard_contamination` as a task that may run on a machine that does not see the run directory."""
    return shard_contamination(where.readable(shard), index)


def _flag_contaminated(ctx: StageContext, pool: ShardSet, selected: np.ndarray, cfg: SelectConfig) -> np.ndarray:
    """Selected rows that share a long n-gram with the reference set or the eval split."""
    if cfg.decontaminate == "off" or selected.size == 0:
        return np.zeros(0, dtype=np.int64)
    texts = read_rows(pool, selected, ["text"])["text"].to_pylist()
    found = find_contamination(texts, _reference_and_eval_texts(ctx), n=cfg.decontaminate_ngram)
    if found.flagged.size:
        log.warning("select: %d selected documents overlap reference/eval text (flagged)", found.flagged.size)
    return np.asarray(selected)[found.flagged].astype(np.int64)
