"""Whole-pool values are computed once per run: the select stage keeps influence scores, proxy losses and
contamination flags in the run's cache (`RunLayout.cache`), keyed by the stages and settings they come from, so a new
selection of the same run reads them, and a setting that changes them gets a key of its own."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from quadselect.api import run_pipeline
from quadselect.layout import CACHE_DIR, RunLayout
from tests.stages.conftest import tiny_config


def _cache(run_dir: Path, name: str) -> list[Path]:
    return sorted((run_dir / CACHE_DIR).glob(f"{name}-*"))


def _scores(run_dir: Path) -> np.ndarray:
    return pq.read_table(RunLayout(run_dir).select.scored).sort_by("row")["score"].to_numpy()


def test_another_selection_of_the_run_reads_the_cached_pool_scores_and_a_new_scorer_gets_its_own(
    topic_pool: Path,
) -> None:
    cfg = tiny_config(topic_pool, select={"method": "topk_influence"})
    run_pipeline(cfg, until="select")
    [scores] = _cache(cfg.run_dir, "pool_scores")
    [flags] = _cache(cfg.run_dir, "contamination")
    written = {p: p.stat().st_mtime_ns for d in (scores, flags) for p in d.iterdir()}
    assert written and all(p.suffix == ".npy" for p in written)
    first = _scores(cfg.run_dir)

    reseeded = tiny_config(topic_pool, select={"method": "topk_influence", "seed": 7})
    assert [r.name for r in run_pipeline(reseeded, until="select") if not r.skipped] == ["select"]
    assert {p: p.stat().st_mtime_ns for p in written} == written  # read, not written again
    np.testing.assert_array_equal(_scores(cfg.run_dir), first)

    sketched = tiny_config(topic_pool, select={"method": "topk_influence", "scorer": "projected"})
    run_pipeline(sketched, until="select")
    assert len(_cache(cfg.run_dir, "pool_scores")) == 2  # other scores, another key
    assert _cache(cfg.run_dir, "contamination") == [flags]  # the screen does not depend on the scorer
