"""The registry of pipeline stages, in order. A stage appears here only once it exists."""

from __future__ import annotations

from quadselect.data.prepare import prepare_args, run_prepare
from quadselect.run import Pipeline, Stage
from quadselect.stages.cluster import cluster_args, run_cluster
from quadselect.stages.embed import embed_args, run_embed
from quadselect.stages.export import export_args, run_export
from quadselect.stages.influence import factors_args, reference_args, run_factors, run_reference
from quadselect.stages.proxy import proxy_args, run_proxy
from quadselect.stages.report import report_args, run_report
from quadselect.stages.select import run_select, select_args


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
    pipeline.register(
        Stage(
            name="proxy",
            requires=("prepare",),
            args=proxy_args,
            fn=run_proxy,
            help="Load the proxy causal LM, or build a small Llama and pretrain it on a sample of the pool.",
        )
    )
    pipeline.register(
        Stage(
            name="factors",
            requires=("prepare", "proxy"),
            args=factors_args,
            fn=run_factors,
            help="Fit EK-FAC factors (covariances, eigenbases, eigenvalue correction) of the tracked layers.",
        )
    )
    pipeline.register(
        Stage(
            name="reference",
            requires=("prepare", "proxy", "factors"),
            args=reference_args,
            fn=run_reference,
            help="Compute the reference direction: the mean normalized iHVP of reference-set gradients.",
        )
    )
    pipeline.register(
        Stage(
            name="select",
            requires=("prepare", "cluster", "proxy", "factors", "reference"),
            args=select_args,
            fn=run_select,
            help="Select documents to the token budget with Quad (or a baseline), then decontaminate.",
        )
    )
    pipeline.register(
        Stage(
            name="export",
            requires=("prepare", "select"),
            args=export_args,
            fn=run_export,
            help="Write the selected documents (shuffled, sharded JSONL or Parquet), the manifest and selection.json.",
        )
    )
    pipeline.register(
        Stage(
            name="report",
            requires=("prepare", "embed", "cluster", "proxy", "factors", "reference", "select", "export"),
            args=report_args,
            fn=run_report,
            help="Write report.html and PNG figures: the clusters, the bandit, the scores and what was selected.",
        )
    )
    return pipeline
