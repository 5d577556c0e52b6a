"""Selection to a token budget: the Quad cluster bandit, the baselines, and decontamination.

Pure logic on arrays; a scorer is any callable ``score_fn(doc_indices) -> scores``. Typical use::

    result = quad_select(cluster_ids, n_tokens, budget_tokens, score_fn, QuadParams(), seed=0)
    result.selected            # document indices, in the order taken

All selectors obey the same budget rule (`budget.take_to_budget`): at most one document over the budget.

The selection methods `select.method` names (`quadselect.select.methods`, docs/selection-methods.md) wrap these
algorithms behind one call signature: each declares the inputs it needs (`method.Need`) and returns a `Selection`.
"""

from quadselect.select.bandit import ClusterBandit
from quadselect.select.baselines import (
    cluster_balanced_selection,
    perplexity_band_selection,
    random_selection,
    topk_selection,
)
from quadselect.select.budget import take_to_budget, within_budget
from quadselect.select.decontaminate import Contamination, NgramIndex, find_contamination, normalize_words
from quadselect.select.dsir import dsir_selection, fit_log_ratio, log_importance_weights
from quadselect.select.quad import QuadParams, QuadResult, QuadSelector, ResolvedParams, ScoreFn, quad_select

__all__ = [
    "ClusterBandit",
    "Contamination",
    "NgramIndex",
    "QuadParams",
    "QuadResult",
    "QuadSelector",
    "ResolvedParams",
    "ScoreFn",
    "cluster_balanced_selection",
    "dsir_selection",
    "find_contamination",
    "fit_log_ratio",
    "log_importance_weights",
    "normalize_words",
    "perplexity_band_selection",
    "quad_select",
    "random_selection",
    "take_to_budget",
    "topk_selection",
    "within_budget",
]
