"""`topk_influence`: the highest-influence documents up to the budget, quality without diversity
(`quadselect.select.baselines.topk_selection`), or documents sampled by influence (`select.sampling`: MATES'
Gumbel-top-k, QuRating's temperature sampling; `quadselect.select.sampling`). It needs the whole pool scored, the cost
Quad avoids; the select stage records those scores (every document's, in the manifest and `scored.parquet`) and counts
them as scored."""

from __future__ import annotations

from quadselect.select.baselines import topk_selection
from quadselect.select.method import Method, Need, Selection, SelectionInputs


def select(inputs: SelectionInputs) -> Selection:
    assert inputs.pool_scores is not None
    sampling, temperature = inputs.options["sampling"], float(inputs.options["sampling_temperature"])
    selected = topk_selection(
        inputs.pool_scores, inputs.n_tokens, inputs.budget_tokens, sampling, temperature, inputs.seed
    )
    return Selection(selected, summary=sampling_summary(sampling, temperature))


def sampling_summary(sampling: str, temperature: float) -> dict[str, object]:
    """What `selection.json` says of the order a score-ranked method took documents in (nothing for hard top-k, as
    before sampling existed)."""
    return {} if sampling == "hard" else {"sampling": sampling, "sampling_temperature": temperature}


METHOD = Method("topk_influence", needs=frozenset({Need.POOL_SCORES}), select=select)
