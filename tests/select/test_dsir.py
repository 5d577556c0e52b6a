"""DSIR baseline: hashed n-gram importance resampling toward a reference set."""

from __future__ import annotations

import numpy as np
import pytest

from quadselect.select import ranking
from quadselect.select.dsir import dsir_selection, fit_log_ratio, log_importance_weights

COOKING = [
    "Whisk the eggs with sugar, then fold in the flour and bake the cake for forty minutes.",
    "Simmer the onions in butter until golden, add garlic and tomatoes, and season the sauce with salt.",
    "Knead the dough, let it rise for an hour, then shape the loaves and bake them until crusty.",
    "Roast the vegetables with olive oil and rosemary, and serve them warm with the grilled fish.",
]
CODE = [
    "The compiler parses the source file into an abstract syntax tree before emitting bytecode.",
    "A mutex guards the shared queue so that only one thread pops an item at a time.",
    "The function returns a sorted list and raises an exception when the input is empty.",
    "Commit the change, push the branch, and open a pull request for the failing unit test.",
]


# The reference: the cooking domain, in sentences that are not in the pool but share its vocabulary.
REFERENCE = [
    "Whisk the butter and sugar, fold in the eggs, and bake the dough until golden.",
    "Simmer the tomatoes with garlic and onions, then season the sauce with salt and rosemary.",
    "Let the loaves rise for an hour, then bake them with olive oil until crusty and serve them warm.",
    "Roast the fish with vegetables and serve the cake for dessert after forty minutes.",
]


def pool() -> tuple[list[str], np.ndarray]:
    texts = [f"{t} Note {i}." for i in range(30) for t in (COOKING + CODE)]
    return texts, np.full(len(texts), 20, dtype=np.int64)


def test_weights_favour_documents_like_the_reference() -> None:
    texts, _ = pool()
    log_ratio = fit_log_ratio(REFERENCE, texts)
    weights = log_importance_weights(COOKING + CODE, log_ratio)
    assert weights[:4].min() > weights[4:].max()


def test_selection_resamples_toward_the_reference_within_budget() -> None:
    texts, tokens = pool()
    reference = REFERENCE
    selected = dsir_selection(texts, reference, tokens, budget_tokens=1200, seed=0)
    assert tokens[selected].sum() == 1200
    cooking_share = np.mean([texts[i].split(" Note")[0] in COOKING for i in selected])
    assert cooking_share > 0.8
    again = dsir_selection(texts, reference, tokens, budget_tokens=1200, seed=0)
    other = dsir_selection(texts, reference, tokens, budget_tokens=1200, seed=1)
    assert selected.tolist() == again.tolist() and selected.tolist() != other.tolist()
    top = dsir_selection(texts, reference, tokens, budget_tokens=1200, top_k=True)
    assert all(texts[i].split(" Note")[0] in COOKING for i in top)


def test_pool_must_be_re_iterable() -> None:
    texts, tokens = pool()
    with pytest.raises(TypeError, match="re-iterable"):
        dsir_selection(iter(texts), ["bake"], tokens, 100)


@pytest.mark.parametrize("top_k", [False, True])
def test_ranking_the_pool_in_chunks_selects_what_one_sorted_array_selects(monkeypatch, top_k: bool) -> None:
    """The pool's weights are ranked chunk by chunk (`select.ranking`); the selection is a full sort's."""
    texts, _ = pool()
    tokens = np.random.default_rng(3).integers(5, 60, size=len(texts))
    weights = log_importance_weights(texts, fit_log_ratio(REFERENCE, texts))
    keys = weights if top_k else weights + np.random.default_rng(4).gumbel(size=weights.size)
    order = np.argsort(-keys, kind="stable")
    expected = order[: int(np.searchsorted(np.cumsum(tokens[order]), 1500)) + 1]
    monkeypatch.setattr(ranking, "CHUNK_DOCS", 7)
    assert dsir_selection(texts, REFERENCE, tokens, 1500, seed=4, top_k=top_k).tolist() == expected.tolist()
