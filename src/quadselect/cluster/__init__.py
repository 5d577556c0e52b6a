"""Clusters of the pool, the bandit's arms: spherical k-means and assignment (`kmeans`), the centroid neighbour graph
and the γ rule (`graph`), and what a cluster holds (`inspect`: distinctive terms, purity, adjusted Rand).

Pure logic on arrays and files the caller names; the cluster stage (`quadselect.stages.cluster`) wires it to a run.
Typical use::

    centroids = train_kmeans(sample_rows(embedding_files, kmeans_sample_size(n, k), seed), k, seed=seed)
    ids, distances = assign(centroids, embeddings)
    graph = neighbour_graph(centroids)  # γ = auto_gamma(centroids)
"""

from quadselect.cluster.graph import (
    NeighbourGraph,
    auto_gamma,
    gamma_of,
    load_neighbour_graph,
    neighbour_graph,
    save_neighbour_graph,
)
from quadselect.cluster.inspect import ClusterTally, adjusted_rand, cluster_table, distinctive_terms, purity
from quadselect.cluster.kmeans import (
    assign,
    centroid_index,
    default_num_clusters,
    kmeans_sample_size,
    sample_rows,
    train_kmeans,
)

__all__ = [
    "ClusterTally",
    "NeighbourGraph",
    "adjusted_rand",
    "assign",
    "auto_gamma",
    "centroid_index",
    "cluster_table",
    "default_num_clusters",
    "distinctive_terms",
    "gamma_of",
    "kmeans_sample_size",
    "load_neighbour_graph",
    "neighbour_graph",
    "purity",
    "sample_rows",
    "save_neighbour_graph",
    "train_kmeans",
]
