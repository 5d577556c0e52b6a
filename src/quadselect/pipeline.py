"""The registry of pipeline stages, in order. A stage appears here only once it exists."""

from __future__ import annotations

from quadselect.data.prepare import prepare_args, run_prepare
from quadselect.run import Pipeline, Stage
from quadselect.stages.cluster import cluster_args, run_cluster
from quadselect.stages.embed import embed_args, run_embed


def build_pipeline() -> Pipeline:
    pipeline = Pipeline()
    pipeline.register(
        Stage(
            name="prepare",
            requires=(),
            args=prepare_args,
            fn=run_prepare,
            help="Read pool, reference and eval inputs; write normalized, token-counted Parquet shards.",
        )
    )
    pipeline.register(
        Stage(
            name="embed",
            requires=("prepare",),
            args=embed_args,
            fn=run_embed,
            help="Embed every pool document (sentence-transformers or the shipped static model), per shard.",
        )
    )
    pipeline.register(
        Stage(
            name="cluster",
            requires=("prepare", "embed"),
            args=cluster_args,
            fn=run_cluster,
            help="k-means the embeddings into clusters (the bandit's arms) and build their neighbour graph.",
        )
    )
    return pipeline
