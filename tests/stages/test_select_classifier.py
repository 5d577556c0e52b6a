"""The select stage with the 2026 baselines (docs/selection-methods.md): the `classifier` method (a fastText
classifier trained on the reference set against pool negatives, or a user's model), sampled top-k, Quad on the
classifier's score, and semantic dedup before any method, each checked against an independent computation from
the run's own artifacts (the saved fastText model loaded with fastText itself; brute-force similarities of the embed
stage's vectors)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import fasttext
import numpy as np
import pyarrow.parquet as pq
import pytest

from quadselect.api import run_pipeline
from quadselect.config import RunConfig
from quadselect.errors import ConfigError, QuadselectError
from quadselect.layout import RunLayout
from quadselect.select.classifier import MIN_POSITIVES, one_line
from tests.select.test_classifier import tiny_sequence_classifier
from tests.stages.conftest import TOPICS, tiny_config
from tests.support import write_jsonl

CLASSIFIER = {"dim": 16, "epoch": 20, "lr": 0.5}  # a few dozen examples: more passes than fastText's default


@pytest.fixture
def pool_with_reference(topic_pool: Path) -> Path:
    """The topic pool, with 40 'verse' reference documents (enough to train a classifier on)."""
    rng = np.random.default_rng(5)
    verse = TOPICS["verse"].split()
    write_jsonl(topic_pool / "ref40.jsonl", [{"text": " ".join(rng.choice(verse, size=40))} for _ in range(40)])
    return topic_pool


def _config(directory: Path, run: str, **select: Any) -> RunConfig:
    return tiny_config(
        directory,
        run_dir=str(directory / run),
        data={
            "pool": [{"path": "pool.jsonl", "id_field": "id", "source_field": "src"}],
            "reference": [{"path": "ref40.jsonl"}],
        },
        select={"decontaminate": "off", "classifier": CLASSIFIER, **select},
    )


def _select(cfg: RunConfig) -> tuple[dict[str, list[Any]], dict[str, Any]]:
    run_pipeline(cfg, until="select")
    layout = RunLayout(cfg.run_dir)
    return pq.read_table(layout.select.manifest).to_pydict(), json.loads(layout.select.selection.read_text("utf-8"))


def _pool_texts(cfg: RunConfig) -> list[str]:
    pool = RunLayout(cfg.run_dir).prepare.pool
    return [
        t for f in sorted(pool.glob("t*-*.parquet")) for t in pq.read_table(f, columns=["text"])["text"].to_pylist()
    ]


def _fasttext_scores(model: Path, texts: list[str]) -> np.ndarray:
    """P(__label__hq) of each text by fastText itself, from the saved file."""
    loaded = fasttext.load_model(str(model))
    out = []
    for text in texts:
        labels, probs = loaded.predict(one_line(text), k=2)
        out.append(float(probs[list(labels).index("__label__hq")]))
    return np.array(out)


def test_classifier_takes_the_highest_scored_documents_to_the_budget(pool_with_reference: Path) -> None:
    cfg = _config(pool_with_reference, "run", method="classifier")
    manifest, selection = _select(cfg)
    model = RunLayout(cfg.run_dir).select.classifier
    scores = _fasttext_scores(model, _pool_texts(cfg))
    rows = np.asarray(manifest["row"])
    budget = selection["budget_tokens"]
    assert sum(manifest["n_tokens"][:-1]) < budget <= sum(manifest["n_tokens"])
    assert scores[rows].min() >= np.delete(scores, rows).max() - 1e-6, "a lower-scored document was taken"
    assert set(manifest["source"]) == {"verse"}
    report = selection["classifier"]
    assert report["kind"] == "fasttext-trained" and report["model"] == "classifier.bin"
    assert report["train_positives"] + report["heldout_positives"] == 40
    assert report["train_negatives"] + report["heldout_negatives"] == 40  # as many negatives as positives
    assert report["heldout_auc"] is not None and report["heldout_accuracy"] is not None
    assert selection["docs_classified"] == 240 and selection["docs_scored"] == 0

    again = _config(pool_with_reference, "again", method="classifier")
    assert _select(again)[1]["selection_sha256"] == selection["selection_sha256"]


def test_sampled_classifier_is_seeded_and_reaches_beyond_the_top(pool_with_reference: Path) -> None:
    hard = _select(_config(pool_with_reference, "hard", method="classifier"))[0]
    sampled = [
        _select(_config(pool_with_reference, f"s{seed}", method="classifier", sampling="temperature", seed=seed))
        for seed in (1, 1, 2)
    ]
    assert sampled[0][0]["row"] == sampled[1][0]["row"]
    assert sampled[0][0]["row"] != sampled[2][0]["row"]
    assert set(sampled[0][0]["row"]) != set(hard["row"])
    assert sampled[0][1]["sampling"] == "temperature" and sampled[0][1]["sampling_temperature"] == 1.0


def test_quad_with_the_classifier_scorer_scores_on_demand(pool_with_reference: Path) -> None:
    cfg = _config(pool_with_reference, "run", method="quad", scorer="classifier")
    _, selection = _select(cfg)
    scored = pq.read_table(RunLayout(cfg.run_dir).select.scored).to_pydict()
    expected = _fasttext_scores(RunLayout(cfg.run_dir).select.classifier, _pool_texts(cfg))
    assert 0 < len(scored["row"]) == selection["docs_scored"] < 240
    assert np.allclose(scored["score"], expected[scored["row"]], atol=1e-6)
    assert selection["classifier"]["kind"] == "fasttext-trained"


def test_topk_influence_refuses_the_classifier_scorer(pool_with_reference: Path) -> None:
    with pytest.raises(ConfigError, match=r"select\.method: classifier"):
        _select(_config(pool_with_reference, "run", method="topk_influence", scorer="classifier"))


def test_an_existing_fasttext_or_transformers_classifier_scores_instead(pool_with_reference: Path) -> None:
    trained = _config(pool_with_reference, "trained", method="classifier")
    manifest, _ = _select(trained)
    model = RunLayout(trained.run_dir).select.classifier
    given = _config(pool_with_reference, "given", method="classifier", classifier={"model": str(model)})
    manifest_given, selection = _select(given)
    assert manifest_given["row"] == manifest["row"]
    assert selection["classifier"] == {"kind": "fasttext", "model": str(model)}
    assert not (RunLayout(given.run_dir).select.classifier).exists()

    folder = tiny_sequence_classifier(pool_with_reference / "hf", num_labels=2)
    hf = _config(pool_with_reference, "hf", method="classifier", classifier={"hf_model": str(folder)})
    _, selection = _select(hf)
    assert selection["classifier"] == {"kind": "transformers", "model": str(folder), "label": 1}
    assert selection["docs_classified"] == 240


def test_a_reference_set_too_small_to_train_on_is_an_error(topic_pool: Path) -> None:
    cfg = tiny_config(topic_pool, select={"method": "classifier", "decontaminate": "off"})  # 12 reference documents
    with pytest.raises(QuadselectError, match=f"at least {MIN_POSITIVES} positives"):
        run_pipeline(cfg, until="select")


def test_semantic_dedup_removes_near_duplicates_as_brute_force_finds_them(pool_with_reference: Path) -> None:
    """Near-copies of 30 pool documents (a word changed) are added; dedup with ε = 0.05 drops exactly the documents
    a brute-force pass over the embed stage's vectors drops, before the method selects; the report shows it."""
    records = [json.loads(line) for line in (pool_with_reference / "pool.jsonl").read_text("utf-8").splitlines()]
    for record in records[::8]:
        words = record["text"].split()
        records.append({**record, "id": record["id"] + "-copy", "text": " ".join([*words[:-1], "again"])})
    write_jsonl(pool_with_reference / "pool.jsonl", records)
    cfg = _config(pool_with_reference, "run", method="classifier", dedup="semantic", dedup_epsilon=0.05)
    manifest, selection = _select(cfg)

    layout = RunLayout(cfg.run_dir)
    vectors = np.concatenate(
        [np.load(f).astype(np.float32) for f in sorted(layout.embed.root.glob("t*-*.npy"))], axis=0
    )
    assignments = pq.read_table(layout.cluster.assignments).to_pydict()
    centroids = np.load(layout.cluster.centroids)
    removed = set()
    for c in set(assignments["cluster"]):
        members = [i for i, k in enumerate(assignments["cluster"]) if k == c]
        members.sort(key=lambda i: (float(vectors[i] @ centroids[c]), i))  # farthest from the centroid first
        kept: list[int] = []
        for i in members:
            if any(float(vectors[i] @ vectors[j]) > 0.95 for j in kept):
                removed.add(i)
            else:
                kept.append(i)
    assert len(removed) >= 20, "the near-copies were not near enough: the test would prove nothing"
    assert selection["dedup_removed_docs"] == len(removed)
    assert not removed & set(manifest["row"])
    example = selection["dedup_examples"][0]
    assert example["similarity"] > 0.95 and example["removed"] != example["kept"]
    assert len(selection["dedup_examples"]) == 10
    assert selection["docs_classified"] == 270 - len(removed)  # the removed documents are never candidates

    run_pipeline(cfg)  # the report shows the dedup and the classifier
    html = layout.report.html.read_text("utf-8")
    assert 'data-table="dedup-examples"' in html and f"{len(removed):,} documents" in html
    assert "classifier heldout_auc" in html


def test_epsilon_outside_the_open_unit_interval_is_a_config_error(topic_pool: Path) -> None:
    with pytest.raises(QuadselectError, match=r"select\.dedup_epsilon"):
        tiny_config(topic_pool, select={"dedup": "semantic", "dedup_epsilon": 1.0})
