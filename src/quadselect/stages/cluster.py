"""The `cluster` stage: k-means on a sample, streaming assignment, the cluster table and the neighbour graph."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from quadselect.atomic import atomic_path
from quadselect.cluster import (
    _centroid_index,
    adjusted_rand,
    assign_shard,
    default_num_clusters,
    distinctive_terms,
    neighbour_graph,
    purity,
    sample_rows,
    save_neighbour_graph,
    train_kmeans,
)
from quadselect.config import RunConfig
from quadselect.data.shards import ShardSet
from quadselect.embed import l2_normalize, read_embedding_index, write_array
from quadselect.errors import ConfigError
from quadselect.progress import progress_bar
from quadselect.run import StageContext

log = logging.getLogger(__name__)

CENTROIDS_FILE = "centroids.npy"
ASSIGNMENTS_DIR = "assignments"
GRAPH_FILE = "neighbours.npz"
CLUSTERS_FILE = "clusters.parquet"


def cluster_args(config: RunConfig) -> dict[str, Any]:
    return {"cluster": config.cluster.model_dump(mode="json")}


def run_cluster(ctx: StageContext) -> dict[str, Any]:
    """The `cluster` stage: k-means on a sample, streaming assignment, cluster table and neighbour graph."""
    cfg = ctx.config.cluster
    index = read_embedding_index(ctx.input("embed"))
    paths = [ctx.input("embed") / entry["file"] for entry in index["shards"]]
    pool = ShardSet(ctx.input("prepare") / "pool")
    n_docs = int(index["rows"])
    k = default_num_clusters(n_docs) if cfg.k == "auto" else cfg.k
    if k > n_docs:
        raise ConfigError(
            f"cluster.k={k} is larger than the pool ({n_docs} documents). Lower cluster.k or set it to 'auto'."
        )
    sample = sample_rows(paths, min(n_docs, cfg.sample_per_centroid * k), ctx.seed)
    log.info("cluster: k-means K=%d on %d of %d documents", k, sample.shape[0], n_docs)
    centroids = train_kmeans(sample, k, seed=ctx.seed, niter=cfg.niter)
    write_array(ctx.work_dir / CENTROIDS_FILE, centroids)

    assign_dir = ctx.work_dir / ASSIGNMENTS_DIR
    assign_dir.mkdir(exist_ok=True)
    items = [
        {"embedding": str(path), "shard": str(pool.directory / shard["file"]), "dest": str(assign_dir / shard["file"])}
        for path, shard in zip(paths, pool.index["shards"], strict=True)
    ]
    with progress_bar("cluster: assigning", total=n_docs, unit="docs") as bar:
        for rows in ctx.executor.map(assign_shard, items, shared=(centroids,)):
            bar.update(rows)
    assigned = pa.concat_tables(pq.read_table(i["dest"], columns=["cluster", "n_tokens", "source"]) for i in items)
    cluster_ids = assigned["cluster"].to_numpy()
    n_tokens = assigned["n_tokens"].to_numpy()
    sources = assigned["source"].to_pylist()

    gamma = auto_gamma(centroids) if cfg.gamma == "auto" else float(cfg.gamma)
    graph = neighbour_graph(centroids, gamma)
    save_neighbour_graph(ctx.work_dir / GRAPH_FILE, graph)
    table = cluster_table(pool, cluster_ids, n_tokens, k, seed=ctx.seed)
    with atomic_path(ctx.work_dir / CLUSTERS_FILE) as tmp:
        pq.write_table(table, tmp)
    degree = np.diff(graph.indptr)
    return {
        "k": k,
        "gamma": gamma,
        "docs": n_docs,
        "kmeans_sample": int(sample.shape[0]),
        "neighbour_pairs": int(graph.indices.size // 2),
        "mean_neighbours": round(float(degree.mean()), 2),
        "isolated_clusters": int((degree == 0).sum()),
        "purity_vs_source": round(purity(sources, cluster_ids), 4),
        "ari_vs_source": round(adjusted_rand(sources, cluster_ids), 4),
    }


def auto_gamma(centroids: np.ndarray, neighbours: int = 3) -> float:
    """γ = the median over clusters of the cosine distance to the (neighbours+1)-th nearest other centroid, so a
    typical cluster shares rewards with about `neighbours` others whatever the embedder's geometry."""
    k = centroids.shape[0]
    if k < 2:
        return 1e-6
    want = min(neighbours + 1, k - 1)
    index = _centroid_index(np.ascontiguousarray(l2_normalize(centroids)))
    sims, _ = index.search(np.ascontiguousarray(l2_normalize(centroids)), want + 1)
    return float(np.clip(np.median(1.0 - sims[:, want]), 1e-6, 2.0))


def cluster_table(
    pool: ShardSet,
    cluster_ids: np.ndarray,
    n_tokens: np.ndarray,
    k: int,
    *,
    seed: int,
    sample_docs: int = 40,
    snippet_chars: int = 160,
) -> pa.Table:
    """One row per cluster: size, tokens, dominant sources, distinctive terms and two example snippets.

    Terms and examples come from a seeded sample of `sample_docs` documents per cluster, read shard by shard."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(cluster_ids.size)
    picked: dict[int, list[int]] = {c: [] for c in range(k)}
    for row in order:
        c = int(cluster_ids[row])
        if len(picked[c]) < sample_docs:
            picked[c].append(int(row))
    wanted = {row: c for c, rows in picked.items() for row in rows}
    texts: dict[int, list[str]] = {c: [] for c in range(k)}
    source_counts: dict[int, dict[str, int]] = {c: {} for c in range(k)}
    offset = 0
    for file in pool.files:
        table = pq.read_table(file, columns=["text", "source"])
        srcs = table["source"].to_pylist()
        for i, src in enumerate(srcs):
            counts = source_counts[int(cluster_ids[offset + i])]
            counts[src] = counts.get(src, 0) + 1
        rows = [r - offset for r in wanted if offset <= r < offset + len(srcs)]
        if rows:
            chosen = table["text"].take(pa.array(sorted(rows))).to_pylist()
            for r, text in zip(sorted(rows), chosen, strict=True):
                texts[wanted[r + offset]].append(text[:2000])
        offset += len(srcs)
    terms = distinctive_terms(texts, top_n=8)
    docs = np.bincount(cluster_ids, minlength=k)
    toks = np.bincount(cluster_ids, weights=n_tokens, minlength=k).astype(np.int64)
    dominant = []
    for c in range(k):
        total = max(1, sum(source_counts[c].values()))
        top = sorted(source_counts[c].items(), key=lambda kv: (-kv[1], kv[0]))[:3]
        dominant.append([f"{name} {count / total:.0%}" for name, count in top])
    return pa.table(
        {
            "cluster": pa.array(range(k), pa.int32()),
            "docs": pa.array(docs, pa.int64()),
            "tokens": pa.array(toks, pa.int64()),
            "dominant_sources": dominant,
            "top_terms": [[t for t, _ in terms.get(c, [])] for c in range(k)],
            "examples": [[" ".join(t[:snippet_chars].split()) for t in texts[c][:2]] for c in range(k)],
        }
    )
