"""`perplexity`: perplexity filtering under the proxy, the band `select.perplexity_band` names
(`quadselect.select.baselines.perplexity_band_selection`)."""

from __future__ import annotations

import numpy as np

from quadselect.select.baselines import perplexity_band_selection
from quadselect.select.method import Method, Need, Selection, SelectionInputs


def select(inputs: SelectionInputs) -> Selection:
    losses = inputs.pool_losses
    assert losses is not None
    picked = perplexity_band_selection(
        losses, inputs.n_tokens, inputs.budget_tokens, band=inputs.options["perplexity_band"]
    )
    return Selection(picked, summary={"mean_loss_selected": float(np.mean(losses[picked]))})


METHOD = Method("perplexity", needs=frozenset({Need.POOL_LOSSES}), select=select)
