"""The select stage with the mixture baseline `mix` on the tiny pool (docs/selection-methods.md): random for half the
budget, top-k influence for the rest, recomputed here from the run's own artifacts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from quadselect.api import run_pipeline
from quadselect.layout import ARGS_FILE, RunLayout
from tests.stages.conftest import tiny_config


def _taken(order: list[int], tokens: list[int], budget: int, used: int = 0) -> list[int]:
    """The budget rule, written out: take documents in order while the running total is below the budget."""
    taken, total = [], used
    for row in order:
        if total >= budget:
            break
        taken.append(row)
        total += tokens[row]
    return taken


def test_a_random_and_topk_mixture_through_the_select_stage(topic_pool: Path) -> None:
    mix = {"first": "random", "second": "topk_influence", "fraction": 0.5}
    cfg = tiny_config(topic_pool, select={"method": "mix", "mix": mix, "decontaminate": "off"})
    summary = {r.name: r for r in run_pipeline(cfg, until="select")}["select"].summary
    layout = RunLayout(cfg.run_dir)
    manifest = pq.read_table(layout.select.manifest).to_pydict()
    selection = json.loads(layout.select.selection.read_text(encoding="utf-8"))
    assignments = pq.read_table(layout.cluster.assignments, columns=["n_tokens"]).to_pydict()
    tokens = assignments["n_tokens"]  # every pool row is a candidate: decontamination is off
    budget = summary["budget_tokens"]

    # random's seeded permutation to round(λ·B), then the top-scored documents it did not take, to B.
    seed = selection["audit"]["selection_seed"]
    first = _taken(np.random.default_rng(seed).permutation(len(tokens)).tolist(), tokens, round(0.5 * budget))
    scores = np.asarray(manifest["score"])
    scored = pq.read_table(layout.select.scored).to_pydict()
    pool_scores = np.full(len(tokens), np.nan)
    pool_scores[scored["row"]] = scored["score"]
    assert np.isfinite(pool_scores).all()  # top-k had the whole pool scored
    by_score = [int(r) for r in np.argsort(-pool_scores, kind="stable") if int(r) not in set(first)]
    first_tokens = sum(tokens[r] for r in first)
    second = _taken(by_score, tokens, budget, used=first_tokens)

    assert manifest["row"] == first + second
    assert len(set(manifest["row"])) == len(manifest["row"])
    assert sum(manifest["n_tokens"][:-1]) < budget <= sum(manifest["n_tokens"])
    np.testing.assert_array_equal(scores, pool_scores[manifest["row"]])
    assert summary["method"] == selection["method"] == "mix"
    assert summary["docs_scored"] == summary["pool_docs"]
    assert (selection["mix_first"], selection["mix_second"], selection["mix_fraction"]) == (
        "random",
        "topk_influence",
        0.5,
    )
    assert selection["mix_first_tokens"] == first_tokens
    assert selection["mix_second_tokens"] == sum(tokens[r] for r in second)
    # The section is part of the stage's arguments (its fingerprint) when the method is mix.
    args = json.loads((layout.stage_dir("select") / ARGS_FILE).read_text(encoding="utf-8"))
    assert args["args"]["select"]["mix"] == mix
