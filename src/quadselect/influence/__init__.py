"""EK-FAC influence of documents on a reference set (docs/method.md).

Typical use::

    layers = find_tracked_layers(model)
    factors = fit_factors(model, pool_batches, layers)          # on a sample of the pool
    g_hat = reference_direction(model, reference_batches, layers, factors)
    result = InfluenceScorer(model, layers, g_hat).score(input_ids, attention_mask)
    scores, losses = TextScorer(model, tokenizer, layers, g_hat, max_length=512, max_windows=4).score_texts(texts)

Batches are dicts with right-padded ``input_ids`` and ``attention_mask``.
"""

from quadselect.influence.ekfac import EkfacFactors, LayerFactors, ihvp
from quadselect.influence.factors import (
    FactorMemory,
    estimate_factor_memory,
    fit_factors,
)
from quadselect.influence.hooks import per_example_gradients
from quadselect.influence.layers import DEFAULT_INCLUDE, LayerSpec, find_tracked_layers
from quadselect.influence.loss import document_losses, split_long_documents
from quadselect.influence.projection import ProjectedScorer
from quadselect.influence.reference import reference_direction
from quadselect.influence.scoring import InfluenceScorer, ScoreResult
from quadselect.influence.text_scorer import TextScorer

__all__ = [
    "DEFAULT_INCLUDE",
    "EkfacFactors",
    "FactorMemory",
    "InfluenceScorer",
    "LayerFactors",
    "LayerSpec",
    "ProjectedScorer",
    "ScoreResult",
    "TextScorer",
    "document_losses",
    "estimate_factor_memory",
    "find_tracked_layers",
    "fit_factors",
    "ihvp",
    "per_example_gradients",
    "reference_direction",
    "split_long_documents",
]
