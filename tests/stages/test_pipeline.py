"""The whole pipeline on a tiny pool: Quad, every baseline, resume after a kill, decontamination, export."""

from __future__ import annotations

import gzip
import json
import re
import types
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from quadselect.api import run_pipeline
from quadselect.atomic import read_json
from quadselect.config import RunConfig
from quadselect.errors import ConfigError
from quadselect.layout import RunLayout, SelectFiles
from quadselect.select import checkpoint as checkpoint_module
from quadselect.select.method import Method
from quadselect.select.methods import METHODS
from tests.stages.conftest import tiny_config
from tests.support import write_jsonl

ROOT = Path(__file__).resolve().parents[2]


def _manifest(run_dir: Path) -> dict:
    return pq.read_table(run_dir / "select" / "manifest.parquet").to_pydict()


def _eligible(cfg: RunConfig) -> tuple[np.ndarray, np.ndarray]:
    """The pool rows a method chose from (all but those dropped as contaminated) and their token counts, read from
    the cluster stage's assignments and the select stage's list of dropped documents."""
    layout = RunLayout(cfg.run_dir)
    assignments = pq.read_table(layout.cluster.assignments, columns=["doc_id", "n_tokens"]).to_pydict()
    dropped = set(read_json(layout.select.decontaminated)["doc_ids"])
    rows = np.array([i for i, doc in enumerate(assignments["doc_id"]) if doc not in dropped])
    return rows, np.asarray(assignments["n_tokens"])[rows]


def _taken(order: list[int], tokens: np.ndarray, budget: int) -> list[int]:
    """The budget rule, written out: take documents in order while the running total is below the budget."""
    taken, total = [], 0
    for position in order:
        if total >= budget:
            break
        taken.append(position)
        total += int(tokens[position])
    return taken


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


def _docs_example() -> Method:
    """The method the worked example of docs/selection-methods.md defines, run from the page's own code block."""
    page = (ROOT / "docs" / "selection-methods.md").read_text(encoding="utf-8")
    code = next(b for b in re.findall(r"```python\n(.*?)```", page, re.DOTALL) if 'METHOD = Method("longest"' in b)
    module = types.ModuleType("longest")
    exec(compile(code, "docs/selection-methods.md", "exec"), module.__dict__)
    return module.METHOD


def test_the_docs_worked_example_runs_as_a_registered_method(topic_pool: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    method = _docs_example()
    monkeypatch.setitem(METHODS, method.name, method)  # the registration, for this test only
    cfg = tiny_config(topic_pool, select={"method": "longest"})
    summary = {r.name: r for r in run_pipeline(cfg, until="select")}["select"].summary
    rows, row_tokens = _eligible(cfg)
    longest_first = sorted(range(rows.size), key=lambda i: -row_tokens[i])  # stable: ties in pool order
    manifest = _manifest(cfg.run_dir)
    assert manifest["row"] == rows[_taken(longest_first, row_tokens, summary["budget_tokens"])].tolist()
    assert summary["method"] == "longest" and summary["shortest_selected"] == min(manifest["n_tokens"])
    assert read_json(cfg.run_dir / "select" / "selection.json")["shortest_selected"] == summary["shortest_selected"]


def test_quad_killed_mid_run_resumes_to_the_identical_selection(
    topic_pool: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clean = tiny_config(topic_pool, run_dir=str(tmp_path / "clean"))
    run_pipeline(clean, until="select")

    killed = tiny_config(topic_pool, run_dir=str(tmp_path / "killed"))
    quad_state = SelectFiles(RunLayout(killed.run_dir).partial_dir("select")).checkpoint("quad")
    real_write = checkpoint_module.write_json
    writes = {"n": 0}

    def dying_write(path, obj):
        real_write(path, obj)
        if Path(path) == quad_state:
            writes["n"] += 1
            if writes["n"] == 4:
                raise KeyboardInterrupt("kill after round checkpoint")

    monkeypatch.setattr(checkpoint_module, "write_json", dying_write)
    with pytest.raises(KeyboardInterrupt):
        run_pipeline(killed, until="select")
    assert quad_state.is_file()
    monkeypatch.setattr(checkpoint_module, "write_json", real_write)
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
