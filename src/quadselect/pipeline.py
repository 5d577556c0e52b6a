"""The registry of pipeline stages, in order. A stage appears here only once it exists."""

from __future__ import annotations

from quadselect.data.prepare import prepare_args, run_prepare
from quadselect.run import Pipeline, Stage


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
    return pipeline
