"""The `select` stage: Quad or a baseline, to the token budget, with decontamination; writes the manifest.

With `decontaminate: drop` the whole pool is screened first and contaminated documents are never candidates, so
every method still fills its budget; with `flag` only the selected documents are checked and marked.

Quad checkpoints its full state after every round (`quad_state.json`), and scoring the whole pool (top-k, perplexity)
saves its scores shard by shard, so a killed run resumes and ends with exactly the selection an uninterrupted run
with the same seed makes.
"""

from __future__ import annotations

import functools
import json
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from quadselect.atomic import atomic_path, read_json, write_json
from quadselect.audit import config_sha256, package_versions, prepared_fingerprint, selection_sha256
from quadselect.cluster import load_neighbour_graph
from quadselect.config import RunConfig, SelectConfig
from quadselect.data.shards import ShardSet, read_rows
from quadselect.engine import WorkerPool
from quadselect.errors import ConfigError
from quadselect.progress import ProgressBar, progress_bar
from quadselect.proxy import DocBatch, load_proxy, pad_documents, row_nll
from quadselect.resources import map_batches
from quadselect.run import ARGS_FILE, StageContext, stage_status
from quadselect.select import (
    NgramIndex,
    QuadParams,
    QuadSelector,
    cluster_balanced_selection,
    dsir_selection,
    find_contamination,
    perplexity_band_selection,
    random_selection,
    topk_selection,
)
from quadselect.select.decontaminate import shard_contamination
from quadselect.stages.cluster import ASSIGNMENTS_DIR, GRAPH_FILE
from quadselect.stages.influence import BATCHES_PER_TASK, ScoringWorker, encode_documents, worker_device
from quadselect.stages.proxy import MODEL_DIR

log = logging.getLogger(__name__)

MANIFEST = "manifest.parquet"
SELECTION_JSON = "selection.json"
QUAD_STATE = "quad_state.json"
TRAJECTORY = "trajectory.json"
AUDITED_STAGES = ("prepare", "embed", "cluster", "proxy", "factors", "reference")
SCORED = "scored.parquet"


def select_args(config: RunConfig) -> dict[str, Any]:
    # An unset select.seed is left out, so fingerprints of runs made before the key existed stay valid.
    exclude = {"seed"} if config.select.seed is None else set()
    return {"select": config.select.model_dump(mode="json", exclude=exclude), "seed": config.seed}


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
    pool = ShardSet(ctx.input("prepare") / "pool")
    assignments = pq.read_table(
        ctx.input("cluster") / ASSIGNMENTS_DIR, columns=["doc_id", "cluster", "n_tokens", "source"]
    )
    cluster_ids = assignments["cluster"].to_numpy().astype(np.int64)
    n_tokens = assignments["n_tokens"].to_numpy().astype(np.int64)
    budget = budget_tokens(cfg, int(n_tokens.sum()))
    cluster_summary = read_json(ctx.input("cluster") / "_COMPLETE.json")["summary"]
    log.info("select: %s to %d tokens (%.1f%% of the pool)", cfg.method, budget, 100 * budget / n_tokens.sum())

    excluded = _contaminated_pool_rows(ctx, pool, cfg) if cfg.decontaminate == "drop" else np.zeros(0, np.int64)
    eligible = np.setdiff1d(np.arange(n_tokens.size), excluded)
    sub_clusters, sub_tokens = cluster_ids[eligible], n_tokens[eligible]

    start = time.perf_counter()
    scores = np.full(n_tokens.size, np.nan)
    rounds = np.full(n_tokens.size, -1, dtype=np.int64)
    extra: dict[str, Any] = {}
    if cfg.method == "quad":
        picked, extra = _run_quad(
            ctx, pool, eligible, sub_clusters, sub_tokens, budget, cluster_summary, scores, rounds
        )
    elif cfg.method == "random":
        picked = random_selection(sub_tokens, budget, selection_seed(ctx))
    elif cfg.method == "cluster_balanced":
        picked = cluster_balanced_selection(sub_clusters, sub_tokens, budget, selection_seed(ctx))
    elif cfg.method == "topk_influence":
        scores[:] = _score_pool(ctx, pool, cfg)
        picked = topk_selection(scores[eligible], sub_tokens, budget)
        extra["docs_scored"] = int(n_tokens.size)
    elif cfg.method == "perplexity":
        losses = _pool_losses(ctx, pool, cfg)[eligible]
        picked = perplexity_band_selection(losses, sub_tokens, budget, band=cfg.perplexity_band)
        extra["mean_loss_selected"] = float(np.mean(losses[picked]))
    else:
        pool_texts = [t for table in pool.iter_tables(["text"]) for t in table["text"].to_pylist()]
        ref_texts = ShardSet(ctx.input("prepare") / "reference").read(["text"])["text"].to_pylist()
        picked = dsir_selection([pool_texts[i] for i in eligible], ref_texts, sub_tokens, budget, selection_seed(ctx))
    keep = eligible[picked]
    select_wall = time.perf_counter() - start

    contaminated = excluded if cfg.decontaminate == "drop" else _flag_contaminated(ctx, pool, keep, cfg)
    manifest = pa.table(
        {
            "doc_id": assignments["doc_id"].take(pa.array(keep)),
            "row": pa.array(keep, pa.int64()),
            "cluster": pa.array(cluster_ids[keep], pa.int32()),
            "source": assignments["source"].take(pa.array(keep)),
            "n_tokens": pa.array(n_tokens[keep], pa.int32()),
            "score": pa.array(scores[keep], pa.float64()),
            "round": pa.array(rounds[keep], pa.int32()),
            "contaminated": pa.array(np.isin(keep, contaminated)),
        }
    )
    with atomic_path(ctx.work_dir / MANIFEST) as tmp:
        pq.write_table(manifest, tmp)
    scored_rows = np.flatnonzero(np.isfinite(scores))  # every scored document, selected or not (for the report)
    with atomic_path(ctx.work_dir / SCORED) as tmp:
        pq.write_table(pa.table({"row": pa.array(scored_rows, pa.int64()), "score": scores[scored_rows]}), tmp)
    dropped = ctx.work_dir / "decontaminated.json"
    write_json(
        dropped, {"mode": cfg.decontaminate, "doc_ids": assignments["doc_id"].take(pa.array(contaminated)).to_pylist()}
    )

    sources = manifest.group_by("source").aggregate([("n_tokens", "sum")]).to_pylist()
    summary = {
        "method": cfg.method,
        "budget_tokens": budget,
        "pool_tokens": int(n_tokens.sum()),
        "pool_docs": int(n_tokens.size),
        "tokens_selected": int(n_tokens[keep].sum()),
        "docs_selected": int(keep.size),
        "docs_scored": int(extra.pop("docs_scored", 0)),
        "clusters_used": int(np.unique(cluster_ids[keep]).size),
        "clusters": int(cluster_summary["k"]),
        "contaminated": int(contaminated.size),
        "decontaminate": cfg.decontaminate,
        "contaminated_checked": "pool" if cfg.decontaminate == "drop" else "selection",
        "select_wall_s": round(select_wall, 2),
        "tokens_by_source": {r["source"]: int(r["n_tokens_sum"]) for r in sorted(sources, key=lambda r: r["source"])},
        **extra,
    }
    summary["fraction_scored"] = round(summary["docs_scored"] / max(1, summary["pool_docs"]), 4)
    summary["selection_sha256"] = selection_sha256(manifest["doc_id"].to_pylist())
    write_json(ctx.work_dir / SELECTION_JSON, {**summary, "audit": _audit(ctx)})
    return summary


def _audit(ctx: StageContext) -> dict[str, Any]:
    """What selection.json records so a selection can be audited later: the config's hash, the fingerprints of the
    stages it came from, the hashes of the inputs and of the prepared documents, and the package versions."""
    prepared = ctx.input("prepare")
    fingerprints = {name: (stage_status(ctx.run_dir, name) or {}).get("fingerprint") for name in AUDITED_STAGES}
    return {
        "config_sha256": config_sha256(ctx.config),
        "seed": ctx.config.seed,
        "selection_seed": selection_seed(ctx),
        "fingerprints": {**fingerprints, "select": read_json(ctx.work_dir / ARGS_FILE)["fingerprint"]},
        "inputs": (stage_status(ctx.run_dir, "prepare") or {}).get("summary", {}).get("inputs"),
        "prepared": {
            role: prepared_fingerprint(prepared / role)
            for role in ("pool", "reference", "eval")
            if (prepared / role / "index.json").is_file()
        },
        "packages": package_versions(),
    }


def _quad_params(cfg: SelectConfig, gamma: float) -> QuadParams:
    return QuadParams(
        alpha=cfg.alpha,
        tau=cfg.tau,
        arms_per_round=cfg.arms_per_round,
        docs_per_arm=cfg.docs_per_arm,
        chunk_tokens=cfg.chunk_tokens,
        gamma=gamma,
        max_rounds=cfg.max_rounds,
        explore=cfg.explore,
        alpha_sd=cfg.alpha_sd,
        tau_percentile=cfg.tau_percentile,
        pilot_docs=cfg.pilot_docs,
    )


def _run_quad(
    ctx: StageContext,
    pool: ShardSet,
    eligible: np.ndarray,
    cluster_ids: np.ndarray,
    n_tokens: np.ndarray,
    budget: int,
    cluster_summary: dict[str, Any],
    scores: np.ndarray,
    rounds: np.ndarray,
) -> tuple[np.ndarray, dict[str, Any]]:
    """The bandit loop over the `eligible` pool rows (whose clusters and token counts are given), with a checkpoint
    after every round; the scorer only sees the documents Quad asks for. Returns positions into `eligible`; fills
    `scores` and `rounds` by pool row."""
    cfg = ctx.config.select
    graph = load_neighbour_graph(ctx.input("cluster") / GRAPH_FILE) if cfg.neighbours else None
    gamma = float(cluster_summary["gamma"]) if cfg.neighbours else "auto"
    with ctx.executor.pool(_scoring_worker(ctx)) as workers:

        def score(positions: np.ndarray) -> np.ndarray:
            texts = read_rows(pool, eligible[positions], ["text"])["text"].to_pylist()
            return _concat(workers.map("score", _batches(texts, cfg.score_batch_size)))

        selector = QuadSelector(
            cluster_ids,
            n_tokens,
            budget,
            score,
            _quad_params(cfg, gamma),
            seed=selection_seed(ctx),
            neighbours=graph,
            n_clusters=int(cluster_summary["k"]),
        )
        state_path = ctx.work_dir / QUAD_STATE
        if state_path.is_file():
            selector.load_state_dict(read_json(state_path))
            log.info("select: resumed Quad at round %d", selector.round)
        # Counted in tokens toward the budget, so the ETA means something (the number of rounds is not known ahead).
        with progress_bar("select: Quad", total=budget, unit="tokens") as bar:
            done = selector.result().selected_tokens
            bar.update(done)
            while (record := selector.step()) is not None:
                write_json(state_path, selector.state_dict())
                bar.update(min(record["tokens"], budget) - done)
                done = min(record["tokens"], budget)
    result = selector.result()
    scores[eligible[result.scored]] = result.scores
    scores[eligible[result.pilot]] = result.pilot_scores  # pilot documents are never selected: manifest unchanged
    rounds[eligible[result.selected]] = result.selected_round
    write_json(ctx.work_dir / TRAJECTORY, json.loads(json.dumps(result.trajectory, default=_jsonable)))
    return result.selected, {
        "docs_scored": result.docs_scored,
        "rounds": result.rounds,
        "stop_reason": result.stop_reason,
        "tau": float(result.params.tau),
        "alpha": float(result.params.alpha),
        "arms_per_round": int(result.params.arms_per_round),
        "docs_per_arm": int(result.params.docs_per_arm),
        "chunk_tokens": int(result.params.chunk_tokens),
        "gamma": float(result.params.gamma),
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
        str(ctx.run_dir),
        ctx.config.factors.model_dump(mode="json"),
        cfg.scorer,
        cfg.score_batch_size,
        selection_seed(ctx),
    )


def _batches(texts: list[str], size: int) -> list[list[str]]:
    return [texts[start : start + size] for start in range(0, len(texts), size)]


def _concat(parts: Iterable[np.ndarray]) -> np.ndarray:
    arrays = list(parts)
    return np.concatenate(arrays) if arrays else np.zeros(0)


def _per_shard(
    ctx: StageContext, pool: ShardSet, name: str, compute: Callable[[list[int]], Iterator[np.ndarray]]
) -> np.ndarray:
    """One value per pool document. `compute(shards)` yields the values of each listed (unfinished) shard in turn;
    each shard's values are saved as it completes, so a killed run resumes at the first unfinished shard."""
    out_dir = ctx.work_dir / name
    out_dir.mkdir(exist_ok=True)
    shards = pool.index["shards"]
    paths = [out_dir / (shard["file"].removesuffix(".parquet") + ".npy") for shard in shards]
    todo = [i for i, path in enumerate(paths) if not path.is_file()]
    for i, values in zip(todo, compute(todo), strict=True):
        if values.shape != (int(shards[i]["docs"]),):
            raise RuntimeError(f"select: {name}: {values.shape} values for {shards[i]['docs']} documents")
        with atomic_path(paths[i]) as tmp, open(tmp, "wb") as fh:
            np.save(fh, values, allow_pickle=False)
    return np.concatenate([np.load(path, allow_pickle=False) for path in paths])


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


def _whole_pool(ctx: StageContext, pool: ShardSet, name: str, worker: Callable[[], Any], method: str) -> np.ndarray:
    block_docs = ctx.config.select.score_batch_size * BATCHES_PER_TASK
    with ctx.executor.pool(worker) as workers, progress_bar(f"select: {name}", total=pool.num_docs, unit="docs") as bar:
        return _per_shard(ctx, pool, name, lambda todo: _through_workers(pool, todo, workers, method, block_docs, bar))


def _score_pool(ctx: StageContext, pool: ShardSet, cfg: SelectConfig) -> np.ndarray:
    """Influence of every pool document: the cost top-k pays and Quad avoids."""
    return _whole_pool(ctx, pool, "pool_scores", _scoring_worker(ctx), "score")


class LossWorker:
    """A worker holding the proxy: each text's mean next-token loss (forward passes only), for the perplexity
    baseline. A batch that runs out of memory is retried in halves, and the smaller size kept."""

    def __init__(self, proxy_dir: str, max_tokens: int, batch_size: int) -> None:
        self.model, self.tokenizer = load_proxy(proxy_dir)
        self.model.to(worker_device())
        self.max_tokens = max_tokens
        self.batch_size = batch_size

    @torch.no_grad()
    def losses(self, texts: list[str]) -> np.ndarray:
        docs, pad_id = encode_documents(self.tokenizer, texts, max_tokens=self.max_tokens)

        def batch_losses(start: int, stop: int) -> np.ndarray:
            batch = pad_documents(docs[start:stop], pad_id=pad_id, max_len=self.max_tokens)
            ids, mask = batch.input_ids, batch.attention_mask
            nll, count = row_nll(self.model, DocBatch(ids, mask, torch.arange(ids.shape[0])))
            return (nll / count.clamp(min=1)).double().numpy()

        out, self.batch_size = map_batches(len(docs), self.batch_size, batch_losses, what="select: perplexity")
        return _concat(out)


def _pool_losses(ctx: StageContext, pool: ShardSet, cfg: SelectConfig) -> np.ndarray:
    """Mean next-token loss of every pool document under the proxy."""
    worker = functools.partial(
        LossWorker, str(ctx.run_dir / "proxy" / MODEL_DIR), ctx.config.factors.max_length, cfg.score_batch_size
    )
    return _whole_pool(ctx, pool, "pool_losses", worker, "losses")


def _reference_and_eval_texts(ctx: StageContext) -> list[str]:
    texts = []
    for role in ("reference", "eval"):
        directory = ctx.input("prepare") / role
        if directory.exists():
            texts.extend(ShardSet(directory).read(["text"])["text"].to_pylist())
    return texts


def _contaminated_pool_rows(ctx: StageContext, pool: ShardSet, cfg: SelectConfig) -> np.ndarray:
    """Pool rows sharing a long n-gram with the reference set or the eval split, screened shard by shard (resumable)
    before selection, so that dropping them never leaves a method short of its budget."""
    index = NgramIndex(cfg.decontaminate_ngram)
    index.add(_reference_and_eval_texts(ctx))
    len(index)  # compacts the index before it is sent to workers
    files = [str(path) for path in pool.files]

    def screen(todo: list[int]) -> Iterator[np.ndarray]:
        with progress_bar("select: contamination", total=len(todo), unit="shards") as bar:
            for flags in ctx.executor.map(shard_contamination, [files[i] for i in todo], shared=(index,)):
                bar.update(1)
                yield flags

    excluded = np.flatnonzero(_per_shard(ctx, pool, "contamination", screen) > 0)
    if excluded.size:
        log.warning("select: %d pool documents overlap reference/eval text; dropped before selection", excluded.size)
    return excluded


def _flag_contaminated(ctx: StageContext, pool: ShardSet, selected: np.ndarray, cfg: SelectConfig) -> np.ndarray:
    """Selected rows that share a long n-gram with the reference set or the eval split."""
    if cfg.decontaminate == "off" or selected.size == 0:
        return np.zeros(0, dtype=np.int64)
    texts = read_rows(pool, selected, ["text"])["text"].to_pylist()
    found = find_contamination(texts, _reference_and_eval_texts(ctx), n=cfg.decontaminate_ngram)
    if found.flagged.size:
        log.warning("select: %d selected documents overlap reference/eval text (flagged)", found.flagged.size)
    return np.asarray(selected)[found.flagged].astype(np.int64)
