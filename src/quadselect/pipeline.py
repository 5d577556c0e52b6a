"""The registry of pipeline stages, in the order `quadselect.layout` gives: the selection stages, which
`quadselect run` runs, and the evaluation stages registered on top of them for `quadselect train` and `evaluate`."""

from __future__ import annotations

from quadselect.layout import EVALUATION_STAGES, SELECTION_STAGES
from quadselect.run import Pipeline, Stage
from quadselect.stages.cluster import cluster_args, run_cluster
from quadselect.stages.embed import embed_args, run_embed
from quadselect.stages.evaluate import evaluate_args, run_evaluate
from quadselect.stages.export import export_args, run_export
from quadselect.stages.factors import factors_args, run_factors
from quadselect.stages.prepare import prepare_args, run_prepare
from quadselect.stages.proxy import proxy_args, run_proxy
from quadselect.stages.reference import reference_args, run_reference
from quadselect.stages.report import report_args, run_report
from quadselect.stages.select import run_select, select_args
from quadselect.stages.train import run_train, train_args

_SELECTION = (
    Stage(
        name="prepare",
        requires=(),
        args=prepare_args,
        fn=run_prepare,
        help="Read pool, reference and eval inputs; write normalized, token-counted Parquet shards.",
    ),
    Stage(
        name="embed",
        requires=("prepare",),
        args=embed_args,
        fn=run_embed,
        help="Embed every pool document (sentence-transformers or the shipped static model), per shard.",
    ),
    Stage(
        name="cluster",
        requires=("prepare", "embed"),
        args=cluster_args,
        fn=run_cluster,
        help="k-means the embeddings into clusters (the bandit's arms) and build their neighbour graph.",
    ),
    Stage(
        name="proxy",
        requires=("prepare",),
        args=proxy_args,
        fn=run_proxy,
        help="Load the proxy causal LM, or build a small Llama and pretrain it on a sample of the pool.",
    ),
    Stage(
        name="factors",
        requires=("prepare", "proxy"),
        args=factors_args,
        fn=run_factors,
        help="Fit EK-FAC factors (covariances, eigenbases, eigenvalue correction) of the tracked layers.",
    ),
    Stage(
        name="reference",
        requires=("prepare", "proxy", "factors"),
        args=reference_args,
        fn=run_reference,
        help="Compute the reference direction: the mean normalized iHVP of reference-set gradients.",
    ),
    Stage(
        name="select",
        requires=("prepare", "cluster", "proxy", "factors", "reference"),
        args=select_args,
        fn=run_select,
        help="Select documents to the token budget with Quad (or a baseline), then decontaminate.",
        reads=("embed",),  # semantic dedup compares embeddings; cluster's fingerprint covers embed's
    ),
    Stage(
        name="export",
        requires=("prepare", "select"),
        args=export_args,
        fn=run_export,
        help="Write the selected documents (shuffled, sharded JSONL or Parquet), the manifest and selection.json.",
    ),
    Stage(
        name="report",
        requires=("prepare", "embed", "cluster", "proxy", "factors", "reference", "select", "export"),
        args=report_args,
        fn=run_report,
        help="Write report.html and PNG figures: the clusters, the bandit, the scores and what was selected.",
    ),
)

_EVALUATION = (
    Stage(
        name="train",
        requires=("prepare", "export"),
        args=train_args,
        fn=run_train,
        help="Train a fresh small Llama from scratch on the exported selection, for a fixed number of tokens.",
    ),
    Stage(
        name="evaluate",
        requires=("prepare", "export", "train"),
        args=evaluate_args,
        fn=run_evaluate,
        help="Held-out reference loss, loss per pool domain and their mean, cloze accuracy, extra files.",
    ),
)

assert tuple(s.name for s in _SELECTION) == SELECTION_STAGES, "the selection stages must follow layout's order"
assert tuple(s.name for s in _EVALUATION) == EVALUATION_STAGES, "the evaluation stages must follow layout's order"


def build_pipeline() -> Pipeline:
    """The selection stages: what `quadselect run` runs."""
    pipeline = Pipeline()
    for stage in _SELECTION:
        pipeline.register(stage)
    return pipeline


def evaluation_pipeline() -> Pipeline:
    """The selection pipeline plus `train` and `evaluate`."""
    pipeline = build_pipeline()
    for stage in _EVALUATION:
        pipeline.register(stage)
    return pipeline
