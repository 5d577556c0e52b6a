"""`quad`: the Quad cluster bandit (`quadselect.select.quad`, docs/method.md): influence scored only where the bandit
looks, a checkpoint after every round, and the trajectory of its rounds for the report."""

from __future__ import annotations

import logging

import numpy as np

from quadselect.select.method import Method, Need, Selection, SelectionInputs
from quadselect.select.quad import QuadKnobs, QuadParams, QuadSelector

log = logging.getLogger(__name__)


def select(inputs: SelectionInputs) -> Selection:
    assert inputs.cluster_ids is not None and inputs.score is not None
    assert inputs.checkpoint is not None and inputs.progress is not None
    # The knobs come from the `select` section, whose keys of these names are QuadKnobs' own fields; γ is the
    # cluster stage's (its graph was built with it), or derived when neighbour sharing is off.
    knobs = {name: inputs.options[name] for name in QuadKnobs.model_fields}
    params = QuadParams(**knobs, gamma="auto" if inputs.gamma is None else inputs.gamma)
    selector = QuadSelector(
        inputs.cluster_ids,
        inputs.n_tokens,
        inputs.budget_tokens,
        inputs.score,
        params,
        seed=inputs.seed,
        neighbours=inputs.neighbours,
        n_clusters=inputs.n_clusters,
        members=inputs.cluster_members,
    )
    state = inputs.checkpoint.load()
    if state is not None:
        selector.load_state_dict(state)
        log.info("select: resumed Quad at round %d", selector.round)
    # Progress is counted in tokens toward the budget (the number of rounds is not known ahead).
    inputs.progress(selector.result().selected_tokens)
    while (record := selector.step()) is not None:
        inputs.checkpoint.save(selector.state_dict())
        inputs.progress(min(record["tokens"], inputs.budget_tokens))

    result = selector.result()
    summary = {
        "rounds": result.rounds,
        "stop_reason": result.stop_reason,
        "tau": float(result.params.tau),
        "alpha": float(result.params.alpha),
        "arms_per_round": int(result.params.arms_per_round),
        "docs_per_arm": int(result.params.docs_per_arm),
        "chunk_tokens": int(result.params.chunk_tokens),
        "gamma": float(result.params.gamma),
    }
    return Selection(
        result.selected,
        summary=summary,
        # Pilot documents are never selected: they show in scored.parquet only.
        scored=np.concatenate([result.scored, result.pilot]),
        scores=np.concatenate([result.scores, result.pilot_scores]),
        rounds=result.selected_round,
        docs_scored=result.docs_scored,
        trajectory=result.trajectory,
    )


METHOD = Method(
    "quad",
    needs=frozenset({Need.CLUSTERS, Need.NEIGHBOURS, Need.SCORER, Need.CHECKPOINT, Need.PROGRESS}),
    select=select,
)
