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

from collections.abc import Iterator
from typing import Literal

import numpy as np

from quadselect.select.ranking import finite_chunks, finite_count_and_moments

Sampling = Literal["hard", "gumbel", "temperature"]


def sampling_keys(
    scores: np.ndarray, sampling: Sampling, temperature: float, seed: int
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(positions, keys) of the documents with a finite score, chunk by chunk: the score itself (`hard`), or the
    Gumbel-perturbed s / τ whose descending order is the Plackett–Luce draw. The noise is drawn in position order
    from one generator, so the keys do not depend on the chunking."""
    if sampling == "hard":
        return finite_chunks(scores)
    if temperature <= 0:
        raise ValueError(f"the sampling temperature must be positive, got {temperature}")
    if sampling not in ("gumbel", "temperature"):
        raise ValueError(f"unknown sampling {sampling!r}: hard, gumbel or temperature")
    shift, scale = 0.0, 1.0
    if sampling == "temperature":  # standardized: zero mean, unit deviation (all equal: all zero, a uniform order)
        _, mean, spread = finite_count_and_moments(scores)
        shift, scale = mean, (spread if spread > 0 else np.inf)
    rng = np.random.default_rng(seed)
    return (
        (positions, (values - shift) / scale / temperature + rng.gumbel(size=values.size))
        for positions, values in finite_chunks(scores)
    )
