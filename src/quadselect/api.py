"""The library API: what the CLI calls, usable from a notebook."""

from __future__ import annotations

from pathlib import Path

from quadselect.config import RunConfig, load_config
from quadselect.pipeline import build_pipeline
from quadselect.run import Runner, StageResult


def run_pipeline(
    config: RunConfig | str | Path, *, until: str | None = None, force: tuple[str, ...] = ()
) -> list[StageResult]:
    """Run every stage (or up to `until`) in the config's run directory, skipping stages already done."""
    cfg = config if isinstance(config, RunConfig) else load_config(config)
    pipeline = build_pipeline()
    if until is not None and until not in pipeline.stages:
        raise ValueError(f"unknown stage {until!r}; stages: {', '.join(pipeline.stages)}")
    return Runner(pipeline, cfg).run(until, force=force)
