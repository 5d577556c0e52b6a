"""Token-budget accounting shared by Quad and every baseline, so that all selections are compared at equal tokens.

The rule: documents are taken in the selector's order while the running total is still below the budget, so the
document that crosses the budget is kept and the total never exceeds the budget by more than that one document
(formally: the total without the last document taken is below the budget). Filling up to the line rather than
stopping short keeps selections of different methods within one document of each other.
"""

from __future__ import annotations

import numpy as np


def as_token_counts(n_tokens: np.ndarray | list[int]) -> np.ndarray:
    """Validate per-document token counts (1-D, non-negative integers) and return them as int64."""
    counts = np.asarray(n_tokens)
    if counts.ndim != 1:
        raise ValueError(f"token counts must be a 1-D array, got shape {counts.shape}")
    if counts.size and not np.issubdtype(counts.dtype, np.integer):
        raise ValueError(f"token counts must be integers, got dtype {counts.dtype}")
    counts = counts.astype(np.int64, copy=False)
    if counts.size and counts.min() < 0:
        raise ValueError("token counts must be non-negative")
    return counts


def take_to_budget(order: np.ndarray, n_tokens: np.ndarray, budget_tokens: int, used_tokens: int = 0) -> np.ndarray:
    """The prefix of `order` (document indices) that fills the `budget_tokens - used_tokens` still open.

    Documents are taken while the running total is below the open budget; the one that reaches or crosses it is
    the last taken. Returns an empty array when nothing is open.
    """
    order = np.asarray(order, dtype=np.int64)
    open_tokens = int(budget_tokens) - int(used_tokens)
    if open_tokens <= 0 or order.size == 0:
        return order[:0]
    cumulative = np.cumsum(n_tokens[order], dtype=np.int64)
    # The first position whose running total reaches the open budget is included; searchsorted finds it.
    last = int(np.searchsorted(cumulative, open_tokens, side="left"))
    return order[: last + 1]


def within_budget(selected: np.ndarray, n_tokens: np.ndarray, budget_tokens: int) -> bool:
    """Whether a selection (in the order it was taken) obeys the one-document overshoot rule."""
    selected = np.asarray(selected, dtype=np.int64)
    if selected.size == 0:
        return True
    return int(n_tokens[selected[:-1]].sum()) < budget_tokens
