"""`random`: uniformly random documents up to the budget, the baseline with neither quality nor diversity targeting
(`quadselect.select.baselines.random_selection`)."""

from __future__ import annotations

from quadselect.select.baselines import random_selection
from quadselect.select.method import Method, Selection, SelectionInputs


def select(inputs: SelectionInputs) -> Selection:
    return Selection(random_selection(inputs.n_tokens, inputs.budget_tokens, inputs.seed))


METHOD = Method("random", needs=frozenset(), select=select)
