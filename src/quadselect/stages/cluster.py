"""The `cluster` stage: k-means on a sample, streaming assignment, the cluster table and the neighbour graph."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from quadselect.atomic import atomic_path
from quadselect.cluster import (
    ClusterTally,
    assign,
    cluster_table,
    default_num_clusters,
    kmeans_sample_size,
    neighbour_graph,
    sample_rows,
    save_neighbour_graph,
    train_kmeans,
)
from quadselect.config import RunConfig
from quadselect.data.shards import ShardSet, read_rows
from quadselect.embed import open_array, read_embedding_index, write_array
from quadselect.errors import ConfigError
from quadselect.layout import ClusterFiles, EmbedFiles, PrepareFiles
from quadselect.progress import progress_bar
from quadselect.run import StageContext
from quadselect.run_store import RunLocation

log = logging.getLogger(__name__)


def cluster_args(config: RunConfig) -> dict[str, Any]:
    return {"cluster": config.cluster.model_dump(mode="json")}


def run_cluster(ctx: StageContext) -> dict[str, Any]:
    """The `cluster` stage: k-means on a sample, streaming assignment, cluster table and neighbour graph."""
    cfg = ctx.config.cluster
    out = ClusterFiles(ctx.work_dir)
    embedded = EmbedFiles(ctx.input("embed"))
    index = read_embedding_index(embedded.root)
    paths = [embedded.root / entry["file"] for entry in index["shards"]]
    pool = ShardSet(PrepareFiles(ctx.input("prepare")).pool)
    n_docs = int(index["rows"])
    k = default_num_clusters(n_docs) if cfg.k == "auto" else cfg.k
    if k > n_docs:
        raise ConfigError(
            f"cluster.k={k} is larger than the pool ({n_docs} documents). Lower cluster.k or set it to 'auto'."
        )
    sample = sample_rows(paths, kmeans_sample_size(n_docs, k, cfg.sample_per_centroid), ctx.seed)
    log.info("cluster: k-means K=%d on %d of %d documents", k, sample.shape[0], n_docs)
    centroids = train_kmeans(sample, k, seed=ctx.seed, niter=cfg.niter)
    write_array(out.centroids, centroids)

    out.assignments.mkdir(exist_ok=True)
    items = [
        {
            "embedding": str(path),
            "shard": str(pool.directory / shard["file"]),
            "dest": str(out.assignments / shard["file"]),
        }
        for path, shard in zip(paths, pool.index["shards"], strict=True)
    ]
    with progress_bar("cluster: assigning", total=n_docs, unit="docs") as bar:
        where = ctx.location
        for item, rows in zip(items, ctx.executor.map(assign_shard, items, shared=(centroids, where)), strict=True):
            where.collect(item["dest"])  # written on a machine that does not see this one's disk: fetched
            bar.update(rows)
    tally = ClusterTally(k, seed=ctx.seed)
    first_row = 0
    for item in items:  # one shard's assignments at a time: the stage holds O(K), never the pool's arrays
        assigned = pq.read_table(item["dest"], columns=["cluster", "n_tokens", "source"])
        tally.add(
            first_row, assigned["cluster"].to_numpy(), assigned["n_tokens"].to_numpy(), assigned["source"].to_pylist()
        )
        first_row += assigned.num_rows

    graph = neighbour_graph(centroids, cfg.gamma)
    save_neighbour_graph(out.neighbours, graph)
    table = cluster_table(tally, lambda rows: read_rows(pool, rows, ["text"])["text"].to_pylist())
    with atomic_path(out.clusters) as tmp:
        pq.write_table(table, tmp)
    degree = np.diff(graph.indptr)
    return {
        "k": k,
        "gamma": graph.radius,
        "docs": n_docs,
        "kmeans_sample": int(sample.shape[0]),
        "neighbour_pairs": int(graph.indices.size // 2),
        "mean_neighbours": round(float(degree.mean()), 2),
        "isolated_clusters": int((degree == 0).sum()),
        "purity_vs_source": round(tally.purity(), 4),
        "ari_vs_source": round(tally.adjusted_rand(), 4),
    }


def assign_shard(item: dict[str, str], centroids: np.ndarray, where: RunLocation) -> int:
    """Assign one shard's documents to their nearest centroid and write its assignment table (atomically); returns
    the number of documents. A task of its own, so shards are assigned in parallel on Ray (through `where` on a
    machine that does not see the run directory)."""
    # One shard mapped at a time: pages read through a map count towards RSS while it is open.
    array = open_array(where.readable(item["embedding"]))
    meta = pq.read_table(where.readable(item["shard"]), columns=["doc_id", "n_tokens", "source"])
    ids, dist = assign(centroids, array)
    table = pa.table(
        {
            "doc_id": meta["doc_id"],
            "cluster": pa.array(ids, pa.int32()),
            "distance": pa.array(dist, pa.float32()),
            "n_tokens": meta["n_tokens"],
            "source": meta["source"],
        }
    )
    with atomic_path(where.writable(item["dest"])) as tmp:
        pq.write_table(table, tmp, compression="zstd")
    where.uploaded(item["dest"])
    return int(array.shape[0])
