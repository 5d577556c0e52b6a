"""The mixture baseline `mix` (docs/selection-methods.md): a share λ of the budget from `select.mix.first`, the rest
from `select.mix.second` in its order, skipping what `first` took. Checked by hand on a small pool, then as
properties (budget rule, no document twice, λ·B from `first`, determinism) on random pools; the config's errors;
and that `select.mix` leaves every other method's select-stage arguments, hence fingerprints, as they were."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quadselect.config import RunConfig, SelectConfig, config_from_dict, load_config
from quadselect.demo import demo_config_dict
from quadselect.errors import ConfigError
from quadselect.select.baselines import random_selection
from quadselect.select.budget import within_budget
from quadselect.select.method import Method, Need, Selection, SelectionInputs
from quadselect.select.methods import METHODS, get_method
from quadselect.stages.select import select_args
from tests.select.test_methods import MemoryCheckpoint
from tests.support import make_config, write_jsonl

MIX = get_method("mix")


def _options(first: str = "random", second: str = "topk_influence", fraction: float = 0.5, **select: Any) -> dict:
    mix = {"first": first, "second": second, "fraction": fraction}
    return SelectConfig(method="mix", mix=mix, **select).model_dump()


def _inputs(n_tokens: np.ndarray, budget: int, seed: int = 0, **fields: Any) -> SelectionInputs:
    options = fields.pop("options", None) or _options()
    return SelectionInputs(np.asarray(n_tokens), budget, seed, options, **fields)


def _taken(order: list[int], tokens: np.ndarray, budget: int, used: int = 0) -> list[int]:
    """The budget rule as a reader states it: keep taking while the running total is below the budget."""
    taken, total = [], used
    for doc in order:
        if total >= budget:
            break
        taken.append(doc)
        total += int(tokens[doc])
    return taken


def test_a_mixture_by_hand() -> None:
    tokens = np.array([10, 20, 30, 40, 50, 60])
    scores = np.array([0.0, 5, 1, 4, 2, 3])  # top-k order: 1, 3, 5, 4, 2, 0
    losses = np.array([1.0, 0, 5, 2, 4, 3])  # lowest loss first: 1, 0, 3, 5, 4, 2
    options = _options("topk_influence", "perplexity", 0.3, perplexity_band="lowest")
    selection = MIX.select(_inputs(tokens, 100, options=options, pool_scores=scores, pool_losses=losses))
    # first: budget round(0.3 · 100) = 30 → 1 (20), 3 (60 ≥ 30): 60 tokens.
    # second alone at 100: 1 (20), 0 (30), 3 (70), 5 (130). Skipping 1 and 3 leaves 0, 5; 40 tokens are open:
    # 0 (10), 5 (70 ≥ 40). In all 1, 3, 0, 5: 130 tokens, 70 without the last document, below the budget.
    assert selection.selected.tolist() == [1, 3, 0, 5]
    assert selection.summary == {
        "mix_first": "topk_influence",
        "mix_second": "perplexity",
        "mix_fraction": 0.3,
        "mix_first_tokens": 60,
        "mix_second_tokens": 70,
        "mix_overlap_docs": 2,
        "mix_first_summary": {},
        "mix_second_summary": {"mean_loss_selected": float(np.mean(losses[[1, 0, 3, 5]]))},
    }
    assert selection.scores is None and selection.rounds is None and selection.trajectory is None
    assert selection.docs_scored == 0


def _pool(n_docs: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "n_tokens": rng.integers(1, 300, n_docs),
        "cluster_ids": rng.integers(0, 5, n_docs),
        "pool_scores": rng.normal(size=n_docs),
        "pool_losses": rng.gamma(2.0, 1.5, n_docs),
    }


PAIRS = [
    ("random", "topk_influence"),
    ("topk_influence", "random"),
    ("random", "cluster_balanced"),
    ("perplexity", "topk_influence"),
    ("cluster_balanced", "random"),
]


@settings(max_examples=60, deadline=None)
@given(
    n_docs=st.integers(2, 120),
    pool_seed=st.integers(0, 10_000),
    share=st.floats(0.02, 0.98),
    fraction=st.sampled_from([0.1, 0.25, 0.5, 0.75, 0.9]),
    pair=st.sampled_from(PAIRS),
    seed=st.integers(0, 100),
)
def test_every_mixture_fills_the_budget_once_per_document(
    n_docs: int, pool_seed: int, share: float, fraction: float, pair: tuple[str, str], seed: int
) -> None:
    pool = _pool(n_docs, pool_seed)
    tokens = pool.pop("n_tokens")
    budget = max(1, int(share * tokens.sum()))
    options = _options(*pair, fraction)
    selection = MIX.select(_inputs(tokens, budget, seed, options=options, n_clusters=5, **pool))
    selected = selection.selected

    assert np.unique(selected).size == selected.size  # no document twice
    assert within_budget(selected, tokens, budget)  # at most one document over
    assert tokens[selected].sum() >= budget  # and filled (the pool is larger than the budget)
    # The first part is exactly what `first` alone selects at round(λ·B), with the same seed.
    first_budget = round(fraction * budget)
    alone = get_method(pair[0]).select(_inputs(tokens, first_budget, seed, options=options, n_clusters=5, **pool))
    first_tokens = selection.summary["mix_first_tokens"]
    if first_budget > 0:
        assert selected[: alone.selected.size].tolist() == alone.selected.tolist()
        assert first_tokens == tokens[alone.selected].sum()
        # λ·B from `first`, give or take its last document.
        assert first_tokens - tokens[alone.selected[-1]] < first_budget <= first_tokens
    else:
        assert first_tokens == 0
    assert first_tokens + selection.summary["mix_second_tokens"] == tokens[selected].sum()


def test_deterministic_for_a_seed_and_another_seed_another_mixture() -> None:
    pool = _pool(300, 1)
    tokens, budget = pool["n_tokens"], int(pool["n_tokens"].sum() * 0.2)

    def run(seed: int) -> np.ndarray:
        return MIX.select(_inputs(tokens, budget, seed, pool_scores=pool["pool_scores"])).selected

    assert run(3).tolist() == run(3).tolist()
    assert run(3).tolist() != run(4).tolist()
    # The random part is the prefix of `random` alone with the same seed (both components get the mixture's seed).
    random_part = random_selection(tokens, round(0.5 * budget), 3)
    assert run(3)[: random_part.size].tolist() == random_part.tolist()


def test_the_needs_are_the_union_of_the_components() -> None:
    assert MIX.needs_for(_options("random", "topk_influence")) == {Need.POOL_SCORES}
    assert MIX.needs_for(_options("cluster_balanced", "dsir")) == {Need.CLUSTERS, Need.TEXTS, Need.REFERENCE_TEXTS}
    assert MIX.needs_for(_options("random", "quad")) == METHODS["quad"].needs
    assert MIX.needs_for(_options("perplexity", "random")) == {Need.POOL_LOSSES}


def _spy(
    name: str, needs: frozenset[Need], calls: list[SelectionInputs], make: Callable[[SelectionInputs], Selection]
) -> Method:
    """A method that records the inputs it is given and returns `make(inputs)`."""

    def select(inputs: SelectionInputs) -> Selection:
        calls.append(inputs)
        return make(inputs)

    return Method(name, needs=needs, select=select)


def test_each_component_gets_only_what_it_declares_and_its_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    tokens = np.full(10, 10)
    calls: dict[str, list[SelectionInputs]] = {"a": [], "b": []}
    scored_a, scored_b = np.arange(5), np.arange(3, 10)  # a scored documents 0-4, b documents 3-9
    a = _spy(
        "a",
        frozenset({Need.CLUSTERS}),
        calls["a"],
        lambda i: Selection(
            np.array([0, 1, 2]), scored=scored_a, scores=np.ones(5), rounds=np.array([0, 1, 2]), docs_scored=5
        ),
    )
    b = _spy(
        "b",
        frozenset({Need.POOL_LOSSES}),
        calls["b"],
        lambda i: Selection(np.array([2, 9, 8, 7, 6, 5]), scored=scored_b, scores=np.full(7, 2.0), docs_scored=7),
    )
    monkeypatch.setitem(METHODS, "a", a)
    monkeypatch.setitem(METHODS, "b", b)
    options = _options("a", "b", 0.25)
    assert MIX.needs_for(options) == {Need.CLUSTERS, Need.POOL_LOSSES}
    inputs = _inputs(
        tokens, 60, 7, options=options, cluster_ids=np.zeros(10, int), n_clusters=1, pool_losses=np.ones(10)
    )
    selection = MIX.select(inputs)

    (got_a,), (got_b,) = calls["a"], calls["b"]
    assert (got_a.budget_tokens, got_b.budget_tokens) == (15, 60)  # round(0.25 · 60), then the whole budget
    assert got_a.seed == got_b.seed == 7 and got_a.options is got_b.options is options
    assert got_a.cluster_ids is inputs.cluster_ids and got_a.n_clusters == 1 and got_a.pool_losses is None
    assert got_b.pool_losses is inputs.pool_losses and got_b.cluster_ids is None
    # a's 0, 1, 2 (30 tokens), then b's order without 2: 9, 8, 7 fill the 30 tokens left.
    assert selection.selected.tolist() == [0, 1, 2, 9, 8, 7]
    assert selection.summary["mix_overlap_docs"] == 1
    assert selection.docs_scored == 12
    # b's score where it has one, else a's; each selected document's round in the component that took it.
    by_doc = dict(zip(selection.scored.tolist(), selection.scores.tolist(), strict=True))
    assert by_doc == {0: 1, 1: 1, 2: 1, 3: 2, 4: 2, 5: 2, 6: 2, 7: 2, 8: 2, 9: 2}
    assert selection.rounds.tolist() == [0, 1, 2, -1, -1, -1]


def test_a_second_method_that_cannot_fill_the_budget_is_an_error() -> None:
    tokens = np.full(10, 10)
    scores = np.where(np.arange(10) < 4, 1.0, np.nan)  # top-k never takes a document without a score
    options = _options("random", "topk_influence", 0.2)
    with pytest.raises(ValueError, match=r"mix: topk_influence selected only 40 tokens of the 80-token budget"):
        MIX.select(_inputs(tokens, 80, options=options, pool_scores=scores))
    # With a budget beyond the pool every document is taken, once, as by any method.
    everything = MIX.select(
        _inputs(
            tokens, 500, options=_options("random", "cluster_balanced"), cluster_ids=np.arange(10) % 3, n_clusters=3
        )
    )
    assert sorted(everything.selected.tolist()) == list(range(10))


def _quad_pool() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    cluster_ids = rng.integers(0, 6, 400)
    return {
        "cluster_ids": cluster_ids,
        "n_tokens": rng.integers(10, 200, 400),
        "scores": rng.normal(0, 1, 6)[cluster_ids] + rng.normal(0, 0.5, 400),
    }


def test_quad_as_a_component_keeps_its_part_of_the_checkpoint_and_resumes() -> None:
    pool = _quad_pool()
    budget = int(pool["n_tokens"].sum() * 0.3)
    options = _options("quad", "random", 0.5, pilot_docs=16, docs_per_arm=4)

    def inputs(checkpoint: MemoryCheckpoint, progress: Callable[[int], None]) -> SelectionInputs:
        return _inputs(
            pool["n_tokens"],
            budget,
            3,
            options=options,
            cluster_ids=pool["cluster_ids"],
            n_clusters=6,
            neighbours=None,
            gamma=None,
            score=lambda p: pool["scores"][p],
            checkpoint=checkpoint,
            progress=progress,
        )

    shown: list[int] = []
    checkpoint = MemoryCheckpoint()
    clean = MIX.select(inputs(checkpoint, shown.append))
    assert set(checkpoint.state) == {"first"}  # Quad's state, under its part of the mixture
    assert shown == sorted(shown) and shown[-1] == budget  # one bar over the whole mixture
    assert clean.trajectory is not None and clean.docs_scored > 0
    assert clean.rounds.size == clean.selected.size and clean.rounds[0] >= 0
    assert clean.summary["mix_first_summary"]["rounds"] == len(clean.trajectory) - 1  # Quad's own fields, kept

    class Killed(Exception):
        pass

    dying = MemoryCheckpoint()

    def kill(tokens: int) -> None:
        if dying.saves == 3:
            raise Killed

    with pytest.raises(Killed):
        MIX.select(inputs(dying, kill))
    resumed = MIX.select(inputs(dying, lambda tokens: None))
    np.testing.assert_array_equal(resumed.selected, clean.selected)
    np.testing.assert_array_equal(resumed.scored, clean.scored)
    np.testing.assert_array_equal(resumed.scores, clean.scores)


# ------------------------------------------------------------------------------------------------- config


def test_the_mix_section_checks_its_methods() -> None:
    assert SelectConfig().mix.model_dump() == {"first": "random", "second": "topk_influence", "fraction": 0.5}
    with pytest.raises(
        ValueError,
        match=r"unknown method 'rnadom': a component is one of the registered methods "
        r"quad, random, topk_influence, cluster_balanced, perplexity, dsir, classifier \[",
    ):
        SelectConfig(mix={"first": "rnadom"})
    with pytest.raises(ValueError, match="'mix' is the mixture itself"):
        SelectConfig(mix={"second": "mix"})
    with pytest.raises(ValueError, match="first and second are both 'dsir'"):
        SelectConfig(mix={"first": "dsir", "second": "dsir"})
    with pytest.raises(ValueError, match="a method name is a string"):
        SelectConfig(mix={"first": 3})
    for fraction in (0, 1, -0.5, 1.5):
        with pytest.raises(ValueError, match="fraction"):
            SelectConfig(mix={"fraction": fraction})
    with pytest.raises(ValueError, match="lamda"):
        SelectConfig(mix={"lamda": 0.3})


def test_a_bad_component_is_a_config_error_naming_the_key(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "pool.jsonl", [{"text": "a document", "id": "a"}])
    write_jsonl(tmp_path / "ref.jsonl", [{"text": "a reference"}])
    for key, value in (("first", "qaud"), ("second", "mix")):
        with pytest.raises(ConfigError) as error:
            load_config(make_config(tmp_path, select={"method": "mix", "mix": {key: value}}))
        message = str(error.value)
        assert f"select.mix.{key}" in message and repr(value) in message
        for name in ("quad", "random", "topk_influence", "cluster_balanced", "perplexity", "dsir"):
            assert name in message


# ------------------------------------------------------------------------------- select args (fingerprint)

DEMO_SELECT_ARGS = {
    "select": {
        "method": "quad",
        "budget_tokens": None,
        "budget_fraction": 0.1,
        "scorer": "hook",
        "score_batch_size": 8,
        "alpha": "auto",
        "tau": "auto",
        "tau_percentile": 70.0,
        "alpha_sd": 0.25,
        "pilot_docs": 64,
        "arms_per_round": None,
        "chunk_tokens": None,
        "docs_per_arm": 4,
        "max_rounds": None,
        "explore": "round_robin",
        "neighbours": True,
        "perplexity_band": "middle",
        "decontaminate": "drop",
        "decontaminate_ngram": 13,
        "seed": None,
    },
    "seed": 0,
}
"""select's arguments for the demo config before `select.mix` existed (its fingerprint must not change)."""


def _demo(tmp_path: Path, **select: Any) -> RunConfig:
    data = demo_config_dict(tmp_path / "run")
    data["select"] = {**data["select"], **select}
    return config_from_dict(data, base_dir=tmp_path)


def test_select_args_are_unchanged_for_every_method_but_mix(tmp_path: Path) -> None:
    args = select_args(_demo(tmp_path))
    assert args == DEMO_SELECT_ARGS
    assert json.dumps(args, sort_keys=True) == json.dumps(DEMO_SELECT_ARGS, sort_keys=True)
    for method in METHODS:
        if method in ("mix", "classifier"):  # their own sections count for them (below)
            continue
        config = _demo(tmp_path, method=method)
        assert select_args(config) == {**DEMO_SELECT_ARGS, "select": {**DEMO_SELECT_ARGS["select"], "method": method}}
        # A mix or classifier section in a config that does not use it changes nothing either; nor do the knobs of
        # steps that are off (hard top-k, no dedup) at any value.
        unused = {
            "mix": {"fraction": 0.25},
            "classifier": {"epoch": 9},
            "dedup_epsilon": 0.2,
            "sampling_temperature": 3,
        }
        assert select_args(_demo(tmp_path, method=method, **unused)) == select_args(config)


def test_select_args_of_the_classifier_and_of_steps_switched_on_hold_their_knobs(tmp_path: Path) -> None:
    classifier = select_args(_demo(tmp_path, method="classifier"))["select"]
    assert classifier["classifier"]["word_ngrams"] == 2 and "mix" not in classifier
    quad_on_classifier = select_args(_demo(tmp_path, scorer="classifier"))["select"]
    assert quad_on_classifier["classifier"]["label"] == "__label__hq"
    sampled = select_args(_demo(tmp_path, method="topk_influence", sampling="gumbel"))["select"]
    assert (sampled["sampling"], sampled["sampling_temperature"]) == ("gumbel", 1.0)
    deduped = select_args(_demo(tmp_path, dedup="semantic"))["select"]
    assert (deduped["dedup"], deduped["dedup_epsilon"], deduped["dedup_examples"]) == ("semantic", 0.05, 10)


def test_select_args_of_a_mixture_hold_its_section(tmp_path: Path) -> None:
    mix = {"first": "random", "second": "dsir", "fraction": 0.75}
    args = select_args(_demo(tmp_path, method="mix", mix=mix))
    assert args["select"] == {**DEMO_SELECT_ARGS["select"], "method": "mix", "mix": mix}
    other = select_args(_demo(tmp_path, method="mix", mix={**mix, "fraction": 0.25}))
    assert other != args  # another λ is another selection
