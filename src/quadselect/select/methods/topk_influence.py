"""`topk_influence`: the highest-influence documents up to the budget, quality without diversity
(`quadselect.select.baselines.topk_selection`). It needs the whole pool scored, the cost Quad avoids; the select
stage records those scores (every document's, in the manifest and `scored.parquet`) and counts them as scored."""

from __future__ import annotations

from quadselect.select.baselines import topk_selection
from quadselect.select.method import Method, Need, Selection, SelectionInputs


def select(inputs: SelectionInputs) -> Selection:
    assert inputs.pool_scores is not None
    return Selection(topk_selection(inputs.pool_scores, inputs.n_tokens, inputs.budget_tokens))


METHOD = Method("topk_influence", needs=frozenset({Need.POOL_SCORES}), select=select)
