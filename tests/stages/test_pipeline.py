"""The whole pipeline on a tiny pool: Quad, every baseline, resume after a kill, decontamination, export."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from quadselect.api import run_pipeline
from quadselect.atomic import read_json
from quadselect.errors import ConfigError
from quadselect.stages import select as select_stage
from tests.stages.conftest import tiny_config
from tests.support import write_jsonl


def _manifest(run_dir: Path) -> dict:
    return pq.read_table(run_dir / "select" / "manifest.parquet").to_pydict()


def test_quad_end_to_end_prefers_the_reference_topic(topic_pool: Path) -> None:
    cfg = tiny_config(topic_pool)
    results = {r.name: r for r in run_pipeline(cfg)}
    summary = results["select"].summary
    assert summary["method"] == "quad"
    manifest = _manifest(cfg.run_dir)
    tokens = sum(manifest["n_tokens"])
    assert tokens == summary["tokens_selected"]
    assert tokens - max(manifest["n_tokens"]) < summary["budget_tokens"] <= tokens
    assert 0 < summary["docs_scored"] < summary["pool_docs"]
    verse = sum(t for t, s in zip(manifest["n_tokens"], manifest["source"], strict=True) if s == "verse")
    assert verse / tokens > 0.5, summary["tokens_by_source"]

    export = cfg.run_dir / "export"
    selection = read_json(export / "selection.json")
    assert selection["docs_selected"] == len(manifest["doc_id"])
    assert set(selection["wall_s_per_stage"]) >= {"prepare", "select"}
    with gzip.open(export / selection["files"][0]["file"], "rt") as fh:
        exported = [json.loads(line) for line in fh]
    assert sorted(d["doc_id"] for d in exported) == sorted(manifest["doc_id"])
    assert [d["doc_id"] for d in exported] != manifest["doc_id"]  # shuffled for the trainer


@pytest.mark.parametrize("method", ["random", "cluster_balanced", "topk_influence", "perplexity", "dsir"])
def test_every_baseline_fills_the_same_budget(topic_pool: Path, method: str) -> None:
    cfg = tiny_config(topic_pool, select={"method": method})
    summary = {r.name: r for r in run_pipeline(cfg, until="select")}["select"].summary
    manifest = _manifest(cfg.run_dir)
    tokens = sum(manifest["n_tokens"])
    assert tokens - max(manifest["n_tokens"]) < summary["budget_tokens"] <= tokens
    if method == "topk_influence":
        assert summary["docs_scored"] == summary["pool_docs"]
        assert all(np.isfinite(manifest["score"]))
    if method == "cluster_balanced":
        assert summary["clusters_used"] == 4


def test_quad_killed_mid_run_resumes_to_the_identical_selection(
    topic_pool: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clean = tiny_config(topic_pool, run_dir=str(tmp_path / "clean"))
    run_pipeline(clean, until="select")

    killed = tiny_config(topic_pool, run_dir=str(tmp_path / "killed"))
    real_write = select_stage.write_json
    writes = {"n": 0}

    def dying_write(path, obj):
        real_write(path, obj)
        if Path(path).name == select_stage.QUAD_STATE:
            writes["n"] += 1
            if writes["n"] == 4:
                raise KeyboardInterrupt("kill after round checkpoint")

    monkeypatch.setattr(select_stage, "write_json", dying_write)
    with pytest.raises(KeyboardInterrupt):
        run_pipeline(killed, until="select")
    assert (killed.run_dir / "select.partial" / select_stage.QUAD_STATE).is_file()
    monkeypatch.setattr(select_stage, "write_json", real_write)
    run_pipeline(killed, until="select")
    resumed, uninterrupted = _manifest(killed.run_dir), _manifest(clean.run_dir)
    np.testing.assert_array_equal(resumed.pop("score"), uninterrupted.pop("score"))  # NaN-aware, exact
    assert resumed == uninterrupted


def test_same_seed_same_selection_other_seed_differs(topic_pool: Path, tmp_path: Path) -> None:
    a = tiny_config(topic_pool, run_dir=str(tmp_path / "a"), select={"method": "random"})
    b = tiny_config(topic_pool, run_dir=str(tmp_path / "b"), select={"method": "random"})
    c = tiny_config(topic_pool, run_dir=str(tmp_path / "c"), select={"method": "random"}, seed=5)
    for cfg in (a, b, c):
        run_pipeline(cfg, until="select")
    assert _manifest(a.run_dir)["doc_id"] == _manifest(b.run_dir)["doc_id"]
    assert _manifest(a.run_dir)["doc_id"] != _manifest(c.run_dir)["doc_id"]


def test_planted_copy_of_a_reference_document_is_dropped(topic_pool: Path) -> None:
    reference = [json.loads(line)["text"] for line in (topic_pool / "ref.jsonl").read_text().splitlines()]
    pool = [json.loads(line) for line in (topic_pool / "pool.jsonl").read_text().splitlines()]
    pool.append({"text": reference[0].upper() + "!", "id": "planted", "src": "verse"})
    write_jsonl(topic_pool / "pool.jsonl", pool)
    cfg = tiny_config(topic_pool, select={"method": "random", "budget_fraction": 0.95, "decontaminate": "drop"})
    summary = {r.name: r for r in run_pipeline(cfg, until="select")}["select"].summary
    assert summary["contaminated"] >= 1
    kept = _manifest(cfg.run_dir)
    assert "planted" not in kept["doc_id"]
    # The pool is screened before selection, so dropping contaminated documents does not leave the budget short.
    assert abs(summary["budget_tokens"] - summary["tokens_selected"]) <= max(kept["n_tokens"])
    dropped = read_json(cfg.run_dir / "select" / "decontaminated.json")
    assert "planted" in dropped["doc_ids"]

    flagged = tiny_config(topic_pool, select={"method": "random", "budget_fraction": 0.95, "decontaminate": "flag"})
    run_pipeline(flagged, until="select")
    manifest = _manifest(flagged.run_dir)
    assert manifest["contaminated"][manifest["doc_id"].index("planted")] is True


def test_budget_larger_than_the_pool_is_a_clear_error(topic_pool: Path) -> None:
    cfg = tiny_config(topic_pool, select={"budget_tokens": 10**9, "budget_fraction": None})
    with pytest.raises(ConfigError, match=r"select.budget_tokens=1,000,000,000 is not smaller than the pool"):
        run_pipeline(cfg, until="select")


def test_score_command_ranks_reference_like_text_first(topic_pool: Path) -> None:
    from typer.testing import CliRunner

    from quadselect.cli import app

    cfg = tiny_config(topic_pool)
    run_pipeline(cfg, until="reference")
    docs = write_jsonl(
        topic_pool / "docs.jsonl",
        [
            {"text": "love heart night star moon sweet dream rose fair light eyes soul kiss love rose night"},
            {"text": "select from where table index query join column row database postgres insert select"},
        ],
    )
    out = topic_pool / "scores.jsonl"
    result = CliRunner().invoke(app, ["--quiet", "score", str(cfg.run_dir), "--docs", str(docs), "--out", str(out)])
    assert result.exit_code == 0, result.output
    scores = [json.loads(line) for line in out.read_text().splitlines()]
    assert [s["doc_id"] for s in scores] == ["docs-0", "docs-1"]
    assert scores[0]["score"] > scores[1]["score"]


def test_library_api_mirrors_the_stages(topic_pool: Path) -> None:
    from quadselect.api import cluster_embeddings, embed_pool, select

    cfg = tiny_config(topic_pool, select={"method": "random"})
    arrays = embed_pool(cfg)
    assert sum(a.shape[0] for a in arrays) == 240
    clusters = cluster_embeddings(cfg)
    assert clusters.centroids.shape[0] == 4 and clusters.assignments.num_rows == 240
    selection = select(cfg)
    assert selection.summary["method"] == "random" and len(selection.doc_ids) == selection.summary["docs_selected"]
