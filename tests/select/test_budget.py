"""The budget rule every selector shares (docs/method.md): documents are taken in order while the running total is
below the budget, so the one that reaches or crosses it is the last taken. Checked on hand-computed examples, and
against a plain loop written here rather than against the library's own helpers."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from quadselect.select import take_to_budget, within_budget

TOKENS = np.array([4, 7, 2, 9, 3])


def _loop_take(order: list[int], tokens: list[int], budget: int, used: int = 0) -> list[int]:
    """The rule as a reader states it: keep taking while the running total is below the budget."""
    taken, total = [], used
    for doc in order:
        if total >= budget:
            break
        taken.append(doc)
        total += tokens[doc]
    return taken


def test_take_to_budget_by_hand() -> None:
    # Running totals in pool order: 4, 11, 13, 22, 25.
    assert take_to_budget(np.arange(5), TOKENS, 1).tolist() == [0]  # the first document already crosses
    assert take_to_budget(np.arange(5), TOKENS, 4).tolist() == [0]  # reaching the budget exactly stops
    assert take_to_budget(np.arange(5), TOKENS, 5).tolist() == [0, 1]  # 4 < 5, so document 1 is taken (11)
    assert take_to_budget(np.arange(5), TOKENS, 11).tolist() == [0, 1]
    assert take_to_budget(np.arange(5), TOKENS, 12).tolist() == [0, 1, 2]
    assert take_to_budget(np.arange(5), TOKENS, 25).tolist() == [0, 1, 2, 3, 4]
    assert take_to_budget(np.arange(5), TOKENS, 26).tolist() == [0, 1, 2, 3, 4]  # the pool runs out
    # The selector's order, not pool order: running totals 9, 13, 16.
    assert take_to_budget(np.array([3, 0, 4]), TOKENS, 10).tolist() == [3, 0]
    assert take_to_budget(np.array([3, 0, 4]), TOKENS, 14).tolist() == [3, 0, 4]
    # Tokens already used count against the budget: 12 - 9 = 3 open, and document 0 (4 tokens) fills them.
    assert take_to_budget(np.arange(5), TOKENS, 12, used_tokens=9).tolist() == [0]
    assert take_to_budget(np.arange(5), TOKENS, 12, used_tokens=12).tolist() == []
    assert take_to_budget(np.arange(5), TOKENS, 12, used_tokens=20).tolist() == []
    assert take_to_budget(np.arange(5), TOKENS, 0).tolist() == []
    assert take_to_budget(np.array([], dtype=np.int64), TOKENS, 10).tolist() == []


def test_empty_documents_before_the_line_are_taken_and_after_it_are_not() -> None:
    tokens = np.array([0, 0, 5, 0, 1])
    assert take_to_budget(np.arange(5), tokens, 5).tolist() == [0, 1, 2]
    assert take_to_budget(np.arange(5), tokens, 6).tolist() == [0, 1, 2, 3, 4]


def test_within_budget_by_hand() -> None:
    # All documents but the last must total below the budget; the last may cross it by any amount.
    assert within_budget(np.array([], dtype=np.int64), TOKENS, 0)
    assert within_budget(np.array([], dtype=np.int64), TOKENS, 10)
    assert within_budget(np.array([3]), TOKENS, 1)  # one document, 8 over
    assert not within_budget(np.array([3]), TOKENS, 0)  # nothing may be taken for a zero budget
    assert within_budget(np.array([0, 1]), TOKENS, 5)  # 4 < 5: document 1 is the one that crossed
    assert not within_budget(np.array([0, 1]), TOKENS, 4)  # document 0 had already filled the budget
    assert not within_budget(np.array([1, 0]), TOKENS, 5)  # order matters: 7 ≥ 5 before document 0
    assert not within_budget(np.array([0, 1, 2]), TOKENS, 11)  # 4 + 7 = 11 ≥ 11
    assert within_budget(np.array([0, 1, 2]), TOKENS, 12)
    assert within_budget(np.array([0, 1, 2, 3, 4]), TOKENS, 23)  # 4 + 7 + 2 + 9 = 22 < 23, total 25
    assert not within_budget(np.array([0, 1, 2, 3, 4]), TOKENS, 22)


@settings(max_examples=200, deadline=None, derandomize=True)
@given(
    tokens=st.lists(st.integers(0, 50), max_size=30),
    budget=st.integers(0, 400),
    used=st.integers(0, 100),
    seed=st.integers(0, 2**16),
)
def test_take_to_budget_is_the_plain_loop(tokens: list[int], budget: int, used: int, seed: int) -> None:
    order = np.random.default_rng(seed).permutation(len(tokens))
    expected = _loop_take(order.tolist(), tokens, budget, used)
    got = take_to_budget(order, np.asarray(tokens, dtype=np.int64), budget, used_tokens=used)
    assert got.tolist() == expected


@settings(max_examples=200, deadline=None, derandomize=True)
@given(tokens=st.lists(st.integers(0, 50), max_size=30), budget=st.integers(0, 400), seed=st.integers(0, 2**16))
def test_within_budget_accepts_exactly_the_one_document_overshoots(tokens: list[int], budget: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    selected = rng.permutation(len(tokens))[: rng.integers(0, len(tokens) + 1)]
    docs = selected.tolist()
    expected = not docs or sum(tokens[d] for d in docs[:-1]) < budget
    assert within_budget(selected, np.asarray(tokens, dtype=np.int64), budget) == expected
