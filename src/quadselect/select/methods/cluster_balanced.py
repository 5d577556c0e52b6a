"""`cluster_balanced`: random documents with an equal share of tokens per cluster, diversity without quality
(`quadselect.select.baselines.cluster_balanced_selection`)."""

from __future__ import annotations

from quadselect.select.baselines import cluster_balanced_selection
from quadselect.select.method import Method, Need, Selection, SelectionInputs


def select(inputs: SelectionInputs) -> Selection:
    assert inputs.cluster_ids is not None
    return Selection(cluster_balanced_selection(inputs.cluster_ids, inputs.n_tokens, inputs.budget_tokens, inputs.seed))


METHOD = Method("cluster_balanced", needs=frozenset({Need.CLUSTERS}), select=select)
