"""The order in which a score-ranked method takes documents: hard top-k, or sampling by score
(docs/selection-methods.md, "Sampled top-k").

Hard top-k keeps only the highest scores, and with them whatever the scorer over-rewards (one topic, one template).
MATES (Yu et al. 2024, "MATES: Model-Aware Data Selection for Efficient Pretraining with Data Influence Models") and
QuRating (Wettig et al. 2024, "QuRating: Selecting High-Quality Data for Training Language Models") found that
*sampling* documents with probability growing with their score keeps more diversity and trains better models.

Both samplers here draw documents **without replacement** with probability proportional to exp(s / τ) at each draw
(the Plackett–Luce model over the scores): the order is a random permutation whose first element is document i with
probability softmax(s / τ)_i, whose second is drawn the same way from the rest, and so on. Drawn with the Gumbel-top-k
trick (Kool, van Hoof and Welling 2019, "Stochastic Beams and Where to Find Them"): the order of s_i / τ + G_i, with
G_i independent standard Gumbel noise, has exactly that distribution, in one sort. The budget then takes this order's
prefix, as for every method (`quadselect.select.budget`).

- `gumbel` (MATES): τ applies to the raw scores, so it is in the scores' own units.
- `temperature` (QuRating): the scores are first standardized (zero mean, unit standard deviation over the documents
  that have a score), so τ is in standard deviations and one τ means the same for any scorer. QuRating samples with
  τ = 2 on ratings of about unit scale.

As τ → 0 both tend to hard top-k; as τ → ∞ to a uniformly random order.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

Sampling = Literal["hard", "gumbel", "temperature"]


def score_order(scores: np.ndarray, sampling: Sampling = "hard", temperature: float = 1.0, seed: int = 0) -> np.ndarray:
    """Documents with a finite score, in the order a budget takes them: by descending score (`hard`, ties in pool
    order), or sampled without replacement with probability ∝ exp(s / τ) (`gumbel`, `temperature`; see the module).
    Documents without a finite score are never taken."""
    scores = np.asarray(scores, dtype=np.float64)
    finite = np.flatnonzero(np.isfinite(scores))
    if sampling == "hard":
        return finite[np.argsort(-scores[finite], kind="stable")]
    if temperature <= 0:
        raise ValueError(f"the sampling temperature must be positive, got {temperature}")
    values = scores[finite]
    if sampling == "temperature":
        values = _standardized(values)
    elif sampling != "gumbel":
        raise ValueError(f"unknown sampling {sampling!r}: hard, gumbel or temperature")
    keys = values / temperature + np.random.default_rng(seed).gumbel(size=values.size)
    return finite[np.argsort(-keys, kind="stable")]


def _standardized(values: np.ndarray) -> np.ndarray:
    """Zero mean, unit standard deviation (all equal scores: all zero, so the order is uniformly random)."""
    spread = float(values.std()) if values.size else 0.0
    centred = values - (values.mean() if values.size else 0.0)
    return centred / spread if spread > 0 else np.zeros_like(values)
