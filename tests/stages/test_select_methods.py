"""The select stage's baselines checked against what they claim to do, recomputed here from the run's artifacts:
`random` is a seeded permutation's prefix, `perplexity` takes the band of mean proxy losses that a plain
transformers forward pass gives, and `dsir` follows the reference set (docs/method.md, baselines).

Decontamination is off in these runs, so every pool document is a candidate and the recomputation is exact.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from quadselect.api import run_pipeline
from quadselect.config import RunConfig
from quadselect.layout import SHARD_INDEX, RunLayout
from tests.stages.conftest import TOPICS, tiny_config
from tests.support import write_jsonl

# Tolerance between the stage's batched, padded losses and the one-document forward passes here (float32).
LOSS_TOL = 1e-4


def _select(cfg: RunConfig) -> tuple[dict[str, list[Any]], dict[str, Any]]:
    """Run through select; the manifest (in the order documents were taken) and selection.json."""
    run_pipeline(cfg, until="select")
    layout = RunLayout(cfg.run_dir)
    manifest = pq.read_table(layout.select.manifest).to_pydict()
    return manifest, json.loads(layout.select.selection.read_text(encoding="utf-8"))


def _prepared_pool(cfg: RunConfig) -> dict[str, list[Any]]:
    """The prepared pool in row order (its shards in index order): doc_id, text, n_tokens, source."""
    pool = RunLayout(cfg.run_dir).prepare.pool
    shards = json.loads((pool / SHARD_INDEX).read_text(encoding="utf-8"))["shards"]
    columns: dict[str, list[Any]] = {"doc_id": [], "text": [], "n_tokens": [], "source": []}
    for shard in shards:
        table = pq.read_table(pool / shard["file"]).to_pydict()
        for name in columns:
            columns[name] += table[name]
    return columns


def _budget(cfg: RunConfig, n_tokens: list[int]) -> int:
    return max(1, round(cfg.select.budget_fraction * sum(n_tokens)))


def _prefix_to_budget(order: list[int], n_tokens: list[int], budget: int) -> list[int]:
    """Take documents in order while the running total is below the budget."""
    taken, total = [], 0
    for row in order:
        if total >= budget:
            break
        taken.append(row)
        total += n_tokens[row]
    return taken


@pytest.mark.parametrize("select_seed", [None, 11])
def test_random_is_the_prefix_of_a_seeded_permutation_of_the_pool(topic_pool: Path, select_seed: int | None) -> None:
    cfg = tiny_config(topic_pool, select={"method": "random", "seed": select_seed, "decontaminate": "off"})
    manifest, selection = _select(cfg)
    seed = selection["audit"]["selection_seed"]  # select.seed, or (unset) the seed derived from the run's
    if select_seed is not None:
        assert seed == select_seed
    pool = _prepared_pool(cfg)
    budget = _budget(cfg, pool["n_tokens"])
    order = np.random.default_rng(seed).permutation(len(pool["doc_id"])).tolist()
    expected = _prefix_to_budget(order, pool["n_tokens"], budget)

    assert selection["budget_tokens"] == budget
    assert manifest["row"] == expected
    assert manifest["doc_id"] == [pool["doc_id"][row] for row in expected]
    assert manifest["n_tokens"] == [pool["n_tokens"][row] for row in expected]


def _mean_losses(cfg: RunConfig, texts: list[str]) -> np.ndarray:
    """Each document's mean next-token loss under the saved proxy, one document per forward pass (no padding), its
    tokens cut at factors.max_length as for every per-document pass (docs/configuration.md)."""
    model_dir = RunLayout(cfg.run_dir).proxy.model
    model = AutoModelForCausalLM.from_pretrained(model_dir, local_files_only=True, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    losses = []
    with torch.no_grad():
        for text in texts:
            ids = tokenizer(text, add_special_tokens=False)["input_ids"][: cfg.factors.max_length]
            ids_tensor = torch.tensor([ids])
            losses.append(model(input_ids=ids_tensor, labels=ids_tensor).loss.item() if len(ids) > 1 else np.nan)
    return np.asarray(losses)


@pytest.mark.parametrize("band", ["middle", "lowest"])
def test_perplexity_takes_the_band_of_the_proxys_mean_losses(topic_pool: Path, band: str) -> None:
    cfg = tiny_config(topic_pool, select={"method": "perplexity", "perplexity_band": band, "decontaminate": "off"})
    manifest, selection = _select(cfg)
    pool = _prepared_pool(cfg)
    losses = _mean_losses(cfg, pool["text"])
    assert np.isfinite(losses).all()
    # The key the band is taken by: distance to the median loss (middle), or the loss itself (lowest).
    key = np.abs(losses - np.median(losses)) if band == "middle" else losses
    selected = np.asarray(manifest["row"])
    unselected = np.setdiff1d(np.arange(len(losses)), selected)

    assert np.mean(losses[selected]) == pytest.approx(selection["mean_loss_selected"], abs=LOSS_TOL)
    assert np.all(np.diff(key[selected]) >= -LOSS_TOL), "documents were not taken in the band's order"
    assert key[selected].max() <= key[unselected].min() + LOSS_TOL, "a document outside the band was taken"
    budget = _budget(cfg, pool["n_tokens"])
    assert sum(manifest["n_tokens"][:-1]) < budget <= sum(manifest["n_tokens"])


def test_dsir_selects_what_resembles_the_reference(topic_pool: Path, tmp_path: Path) -> None:
    """The same pool toward two reference sets: each time the selection is almost all of the reference's topic,
    which holds a quarter of the pool."""
    rng = np.random.default_rng(1)
    sql = TOPICS["sql"].split()
    write_jsonl(topic_pool / "ref_sql.jsonl", [{"text": " ".join(rng.choice(sql, size=40))} for _ in range(12)])
    pool_spec = [{"path": "pool.jsonl", "id_field": "id", "source_field": "src"}]
    shares = {}
    for topic, reference in (("verse", "ref.jsonl"), ("sql", "ref_sql.jsonl")):
        cfg = tiny_config(
            topic_pool,
            run_dir=str(tmp_path / topic),
            data={"pool": pool_spec, "reference": [{"path": reference}]},
            select={"method": "dsir", "decontaminate": "off"},
        )
        manifest, _ = _select(cfg)
        tokens = sum(manifest["n_tokens"])
        by_topic = {
            name: sum(t for t, s in zip(manifest["n_tokens"], manifest["source"], strict=True) if s == name) / tokens
            for name in TOPICS
        }
        shares[topic] = by_topic
        assert by_topic[topic] > 0.9, (topic, by_topic)
    assert shares["sql"]["verse"] < 0.1 and shares["verse"]["sql"] < 0.1, shares
