"""`classifier`: the DCLM-style quality-classifier baseline (`quadselect.select.classifier`): every pool document
scored by a classifier of reference-like text (a fastText model trained on the reference set against random pool
negatives, or a user's own fastText or transformers classifier), the highest-scored taken to the budget, or sampled
by score (`select.sampling`, `quadselect.select.sampling`). Classifying the whole pool costs a fraction of a second
per thousand documents with fastText: no proxy model is involved."""

from __future__ import annotations

import numpy as np

from quadselect.select.baselines import topk_selection
from quadselect.select.method import Method, Need, Selection, SelectionInputs
from quadselect.select.methods.topk_influence import sampling_summary


def select(inputs: SelectionInputs) -> Selection:
    assert inputs.classifier_scores is not None and inputs.classifier_report is not None
    scores = inputs.classifier_scores
    sampling, temperature = inputs.options["sampling"], float(inputs.options["sampling_temperature"])
    selected = topk_selection(scores, inputs.n_tokens, inputs.budget_tokens, sampling, temperature, inputs.seed)
    summary = {
        "classifier": dict(inputs.classifier_report),
        "docs_classified": int(scores.size),
        "classifier_mean_selected": float(np.mean(scores[selected])) if selected.size else None,
        "classifier_mean_pool": float(np.mean(scores)) if scores.size else None,
        **sampling_summary(sampling, temperature),
    }
    return Selection(selected, summary=summary)


METHOD = Method("classifier", needs=frozenset({Need.CLASSIFIER}), select=select)
