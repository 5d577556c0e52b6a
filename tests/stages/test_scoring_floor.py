"""`reference.rank` and `select.norm: sketch` through the pipeline (docs/method.md, "Scoring at the floor"): the
stored factors are the truncated SVD (numpy's) of the exact run's ĝ_R, the summary records the energy kept, the
selection and `quadselect score` run on them, and runs without the options keep the fingerprints they had."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from safetensors.numpy import load_file

from quadselect.api import run_pipeline, score_file
from quadselect.atomic import read_json
from quadselect.layout import RunLayout
from quadselect.stages.reference import reference_args
from quadselect.stages.select import select_args
from tests.stages.conftest import tiny_config
from tests.support import write_jsonl


def test_a_low_rank_direction_is_the_truncated_svd_of_the_exact_one(topic_pool: Path) -> None:
    exact = tiny_config(topic_pool, run_dir=str(topic_pool / "exact"))
    low = tiny_config(
        topic_pool,
        run_dir=str(topic_pool / "low"),
        reference={"rank": 2},
        select={"norm": "sketch", "norm_sketch_dim": 4},
    )
    run_pipeline(exact, until="reference")
    run_pipeline(low, until="select")
    dense = load_file(str(RunLayout(exact.run_dir).reference.g_hat))
    stored = load_file(str(RunLayout(low.run_dir).reference.g_hat))
    summary = read_json(RunLayout(low.run_dir).reference.marker)["summary"]
    assert summary["rank"] == 2 and set(summary["energy_kept"]) == set(dense)
    for name, g in dense.items():
        u, s, vh = np.linalg.svd(g.astype(np.float64), full_matrices=False)
        if min(g.shape) <= 2:
            np.testing.assert_array_equal(stored[name], g)
            continue
        product = stored[f"{name}@left"] @ stored[f"{name}@right"].T
        np.testing.assert_allclose(product, (u[:, :2] * s[:2]) @ vh[:2], rtol=1e-4, atol=1e-6 * np.abs(g).max())
        assert abs(summary["energy_kept"][name] - (s[:2] ** 2).sum() / (s**2).sum()) < 1e-6

    selection = json.loads(RunLayout(low.run_dir).select.selection.read_text("utf-8"))
    assert selection["docs_scored"] > 0 and selection["tokens_selected"] >= selection["budget_tokens"]
    assert select_args(low)["select"]["norm"] == "sketch"
    # `quadselect score` scores with the same factors and the same Ω: a document Quad scored gets its score again.
    scored = pq.read_table(RunLayout(low.run_dir).select.scored).to_pydict()
    pool = pq.read_table(sorted(RunLayout(low.run_dir).prepare.pool.glob("t*-*.parquet"))[0]).to_pydict()
    rows = [r for r in scored["row"] if r < len(pool["text"])][:3]
    write_jsonl(topic_pool / "docs.jsonl", [{"text": pool["text"][r], "id": str(r)} for r in rows])
    records = score_file(low.run_dir / "config.resolved.yaml", topic_pool / "docs.jsonl")
    expected = {r: s for r, s in zip(scored["row"], scored["score"], strict=True)}
    assert rows and [r["doc_id"] for r in records] == [str(r) for r in rows]
    for record in records:
        assert record["score"] == pytest.approx(expected[int(record["doc_id"])], rel=1e-4, abs=1e-6)


def test_without_the_options_the_arguments_are_those_of_before(topic_pool: Path) -> None:
    config = tiny_config(topic_pool)
    assert reference_args(config) == {"reference": {"hessian": "ekfac", "max_docs": None, "batch_size": 8}}
    args = select_args(config)["select"]
    assert "norm" not in args and "norm_sketch_dim" not in args
    assert args == select_args(tiny_config(topic_pool, select={"norm_sketch_dim": 9}))["select"]
