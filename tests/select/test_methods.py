"""The registry of selection methods: every registered method gives, through its one call signature, exactly the
selection of the algorithm it wraps on the same inputs; an unknown method is a config error naming the registered
ones; DSIR over texts streamed from shards equals DSIR over the texts held in memory."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from quadselect.config import SelectConfig, load_config
from quadselect.data.shards import SHARD_SCHEMA, ShardSet, ShardWriter, write_index
from quadselect.errors import ConfigError
from quadselect.select.baselines import (
    cluster_balanced_selection,
    perplexity_band_selection,
    random_selection,
    topk_selection,
)
from quadselect.select.dsir import dsir_selection, fit_log_ratio, log_importance_weights
from quadselect.select.method import Method, Need, SelectionInputs
from quadselect.select.methods import METHODS, get_method, register
from quadselect.select.quad import QuadKnobs, QuadParams, QuadSelector
from quadselect.stages.select import ShardTexts
from tests.select.test_dsir import CODE, COOKING, REFERENCE
from tests.support import make_config, write_jsonl

BUILT_IN = ["quad", "random", "topk_influence", "cluster_balanced", "perplexity", "dsir", "classifier", "mix"]


def _pool(n_docs: int = 400, n_clusters: int = 6, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    cluster_ids = rng.integers(0, n_clusters, n_docs)
    return {
        "cluster_ids": cluster_ids,
        "n_tokens": rng.integers(10, 200, n_docs),
        "scores": rng.normal(0, 1, n_clusters)[cluster_ids] + rng.normal(0, 0.5, n_docs),
        "losses": rng.gamma(2.0, 1.5, n_docs),
    }


def _options(**select: Any) -> dict[str, Any]:
    return SelectConfig(**select).model_dump()


class MemoryCheckpoint:
    def __init__(self) -> None:
        self.state: dict[str, Any] | None = None
        self.saves = 0

    def load(self) -> dict[str, Any] | None:
        return self.state

    def save(self, state: dict[str, Any]) -> None:
        self.state = state
        self.saves += 1


def test_the_built_in_methods_are_registered_in_the_reference_order() -> None:
    assert list(METHODS) == BUILT_IN
    assert all(METHODS[name].name == name for name in METHODS)
    with pytest.raises(ValueError, match="already registered"):
        register(Method("random", needs=frozenset(), select=METHODS["random"].select))
    with pytest.raises(ValueError, match="unknown selection method 'nope': the registered methods are quad, random"):
        get_method("nope")


def test_an_unknown_method_is_a_config_error_listing_the_registered_ones(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "pool.jsonl", [{"text": "a document", "id": "a"}])
    write_jsonl(tmp_path / "ref.jsonl", [{"text": "a reference"}])
    with pytest.raises(ConfigError) as error:
        load_config(make_config(tmp_path, select={"method": "qaud"}))
    message = str(error.value)
    assert "select.method" in message and "'qaud'" in message
    for name in BUILT_IN:
        assert name in message
    with pytest.raises(ConfigError, match=r"select\.method"):
        load_config(make_config(tmp_path, select={"method": 3}))


def test_a_method_registered_later_is_accepted_by_the_config(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="the registered methods are"):
        SelectConfig(method="late")
    monkeypatch.setitem(METHODS, "late", Method("late", needs=frozenset(), select=METHODS["random"].select))
    assert SelectConfig(method="late").method == "late"
    with pytest.raises(ValueError, match=r"registered methods are .*dsir, classifier, mix, late"):
        SelectConfig(method="later")


def test_the_select_section_declares_the_quad_knobs_once() -> None:
    knobs = list(QuadKnobs.model_fields)
    fields = list(SelectConfig.model_fields)
    assert fields[fields.index(knobs[0]) : fields.index(knobs[0]) + len(knobs)] == knobs  # one block, in order
    assert issubclass(SelectConfig, QuadKnobs)  # inherited, not declared again
    section = SelectConfig(alpha=0.5, tau=-1, pilot_docs=9, explore="none").model_dump()
    params = QuadParams(**{name: section[name] for name in knobs}, gamma=0.3)
    assert (params.alpha, params.tau, params.pilot_docs, params.explore, params.gamma) == (0.5, -1.0, 9, "none", 0.3)
    for bad in ({"alpha": -1.0}, {"tau": "median"}, {"pilot_docs": 1}, {"tau_percentile": 101}, {"max_rounds": -1}):
        with pytest.raises(ValueError):
            SelectConfig(**bad)
        with pytest.raises(ValueError):
            QuadParams(**bad)


@pytest.mark.parametrize("method", ["random", "cluster_balanced", "topk_influence", "perplexity"])
def test_each_baseline_returns_what_its_algorithm_selects(method: str) -> None:
    pool = _pool()
    budget, seed = int(pool["n_tokens"].sum() * 0.3), 5
    inputs = SelectionInputs(
        pool["n_tokens"],
        budget,
        seed,
        _options(method=method, perplexity_band="lowest"),
        cluster_ids=pool["cluster_ids"],
        n_clusters=6,
        pool_scores=pool["scores"],
        pool_losses=pool["losses"],
    )
    expected = {
        "random": lambda: random_selection(pool["n_tokens"], budget, seed),
        "cluster_balanced": lambda: cluster_balanced_selection(pool["cluster_ids"], pool["n_tokens"], budget, seed),
        "topk_influence": lambda: topk_selection(pool["scores"], pool["n_tokens"], budget),
        "perplexity": lambda: perplexity_band_selection(pool["losses"], pool["n_tokens"], budget, band="lowest"),
    }[method]()
    selection = get_method(method).select(inputs)
    np.testing.assert_array_equal(selection.selected, expected)
    assert selection.scores is None and selection.rounds is None and selection.docs_scored == 0
    if method == "perplexity":
        assert selection.summary == {"mean_loss_selected": float(np.mean(pool["losses"][expected]))}
        middle = get_method(method).select(replace(inputs, options=_options()))
        np.testing.assert_array_equal(
            middle.selected, perplexity_band_selection(pool["losses"], pool["n_tokens"], budget, band="middle")
        )
    else:
        assert selection.summary == {}


def test_each_method_declares_what_it_reads() -> None:
    assert METHODS["random"].needs == frozenset()
    assert METHODS["cluster_balanced"].needs == {Need.CLUSTERS}
    assert METHODS["topk_influence"].needs == {Need.POOL_SCORES}
    assert METHODS["perplexity"].needs == {Need.POOL_LOSSES}
    assert METHODS["dsir"].needs == {Need.TEXTS, Need.REFERENCE_TEXTS}
    assert METHODS["quad"].needs == {Need.CLUSTERS, Need.NEIGHBOURS, Need.SCORER, Need.CHECKPOINT, Need.PROGRESS}
    # Every field a need names exists on the inputs, and no two needs fill the same field.
    fields = [name for need in Need for name in need.value]
    assert len(fields) == len(set(fields)) and set(fields) <= set(SelectionInputs.__dataclass_fields__)


def _quad_inputs(pool: dict[str, np.ndarray], checkpoint: MemoryCheckpoint, progress: list[int]) -> SelectionInputs:
    return SelectionInputs(
        pool["n_tokens"],
        int(pool["n_tokens"].sum() * 0.3),
        3,
        _options(pilot_docs=16, docs_per_arm=4),
        cluster_ids=pool["cluster_ids"],
        n_clusters=7,  # the last cluster is empty
        neighbours=None,
        gamma=None,
        score=lambda positions: pool["scores"][positions],
        checkpoint=checkpoint,
        progress=progress.append,
    )


def test_quad_returns_the_selectors_result_by_position() -> None:
    pool = _pool()
    checkpoint, progress = MemoryCheckpoint(), []
    inputs = _quad_inputs(pool, checkpoint, progress)
    selection = get_method("quad").select(inputs)

    params = QuadParams(pilot_docs=16, docs_per_arm=4)
    direct = QuadSelector(
        pool["cluster_ids"], pool["n_tokens"], inputs.budget_tokens, inputs.score, params, seed=3, n_clusters=7
    ).run()
    np.testing.assert_array_equal(selection.selected, direct.selected)
    assert selection.trajectory == direct.trajectory
    assert selection.docs_scored == direct.docs_scored == np.unique(selection.scored).size == selection.scores.size
    by_doc = dict(zip(selection.scored.tolist(), selection.scores.tolist(), strict=True))
    assert by_doc == dict(zip([*direct.scored, *direct.pilot], [*direct.scores, *direct.pilot_scores], strict=True))
    assert selection.rounds.tolist() == direct.selected_round.tolist()
    assert selection.summary == {
        "rounds": direct.rounds,
        "stop_reason": direct.stop_reason,
        "tau": direct.params.tau,
        "alpha": direct.params.alpha,
        "arms_per_round": direct.params.arms_per_round,
        "docs_per_arm": 4,
        "chunk_tokens": direct.params.chunk_tokens,
        "gamma": 0.0,
    }
    # A checkpoint after every step (the pilot and each round), and progress that only grows, to what was selected.
    assert checkpoint.saves == len(direct.trajectory)
    assert progress[0] == 0 and progress == sorted(progress)
    assert progress[-1] == min(direct.selected_tokens, inputs.budget_tokens) > 0


def test_quad_resumes_from_its_checkpoint_to_the_same_selection() -> None:
    pool = _pool()
    uninterrupted = get_method("quad").select(_quad_inputs(pool, MemoryCheckpoint(), []))

    class Killed(Exception):
        pass

    checkpoint = MemoryCheckpoint()

    def dying(tokens: int) -> None:
        if checkpoint.saves == 3:
            raise Killed

    with pytest.raises(Killed):
        get_method("quad").select(replace(_quad_inputs(pool, checkpoint, []), progress=dying))
    assert checkpoint.state is not None
    saved_tokens = checkpoint.state["selected_tokens"]
    resumed_progress: list[int] = []
    resumed = get_method("quad").select(_quad_inputs(pool, checkpoint, resumed_progress))
    np.testing.assert_array_equal(resumed.selected, uninterrupted.selected)
    np.testing.assert_array_equal(resumed.scores, uninterrupted.scores)
    assert resumed.trajectory == uninterrupted.trajectory
    assert resumed_progress[0] == saved_tokens  # the bar starts where the checkpoint left off


def _texts() -> list[str]:
    return [f"{t} Note {i}." for i in range(30) for t in (COOKING + CODE)]


def _shards(directory: Path, texts: list[str], max_docs: int) -> ShardSet:
    writer = ShardWriter(directory, SHARD_SCHEMA, max_docs=max_docs, max_bytes=2**30)
    writer.write(
        {
            "doc_id": [f"d{i}" for i in range(len(texts))],
            "text": texts,
            "n_tokens": [20] * len(texts),
            "source": ["s"] * len(texts),
        }
    )
    write_index(directory, writer.close())
    return ShardSet(directory)


def test_shard_texts_streams_the_given_rows_in_order_on_every_pass(tmp_path: Path) -> None:
    texts = _texts()
    pool = _shards(tmp_path / "pool", texts, max_docs=37)
    assert len(pool.files) == 7
    rows = np.array([0, 1, 36, 37, 38, 100, 221, 222, 239])
    streamed = ShardTexts(pool, rows)
    assert len(streamed) == rows.size
    assert iter(streamed) is not streamed  # re-iterable, as DSIR's two passes need
    assert list(streamed) == list(streamed) == [texts[i] for i in rows]
    assert list(ShardTexts(pool, np.zeros(0, dtype=np.int64))) == []


@pytest.mark.parametrize("excluded", [[], [0, 5, 44, 45, 100, 199, 239]])
def test_streamed_dsir_equals_the_in_memory_computation(tmp_path: Path, excluded: list[int]) -> None:
    texts = _texts()
    pool = _shards(tmp_path / "pool", texts, max_docs=50)
    eligible = np.setdiff1d(np.arange(len(texts)), excluded)
    n_tokens = np.random.default_rng(0).integers(5, 40, eligible.size)
    budget = int(n_tokens.sum() * 0.25)

    # The stage before the registry: every pool text in memory, then the eligible ones.
    pool_texts = [t for table in pool.iter_tables(["text"]) for t in table["text"].to_pylist()]
    in_memory = [pool_texts[i] for i in eligible]
    old = dsir_selection(in_memory, REFERENCE, n_tokens, budget, seed=7)

    inputs = SelectionInputs(
        n_tokens, budget, 7, _options(method="dsir"), texts=ShardTexts(pool, eligible), reference_texts=REFERENCE
    )
    new = get_method("dsir").select(inputs)
    np.testing.assert_array_equal(new.selected, old)
    # And the weights themselves, computed over the stream, are bit-identical.
    log_ratio = fit_log_ratio(REFERENCE, in_memory)
    np.testing.assert_array_equal(fit_log_ratio(REFERENCE, inputs.texts), log_ratio)
    np.testing.assert_array_equal(
        log_importance_weights(inputs.texts, log_ratio), log_importance_weights(in_memory, log_ratio)
    )
